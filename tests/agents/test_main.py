"""The agent's run: numbered reports, the poll cadence, and `gpupool agent` as a real process
(stopped by SIGTERM, reporting to a stand-in server)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agents.attribution import Attributor
from agents.main import Agent, poll_loop
from agents.reader import ReaderKind
from agents.reporter import Reporter
from agents.schema import GpuSample
from tests.agents.conftest import REPO, agent_env
from tests.agents.fake_nvml import eight_gpus, fake_nvml_env, write_state
from tests.agents.stub_server import StubServer, wait_until


class CountingReader:
    kind: ReaderKind = "simulated"

    def __init__(self) -> None:
        self.reads = 0

    def read(self) -> list[GpuSample]:
        self.reads += 1
        return [GpuSample(index=0, uuid="GPU-a", util_gpu_pct=float(self.reads))]

    def driver_version(self) -> str:
        return "test"

    def close(self) -> None:
        pass


def test_reports_are_numbered_within_a_run() -> None:
    agent = Agent(CountingReader(), Attributor(), clock=lambda: 1_700_000_000.0)
    reports = [agent.poll() for _ in range(3)]
    assert [r.seq for r in reports] == [1, 2, 3]
    assert re.fullmatch(r"[0-9a-f]{16}", agent.boot)
    assert {r.boot for r in reports} == {agent.boot}
    assert (reports[0].reader, reports[0].driver_version, reports[0].at) == (
        "simulated",
        "test",
        1_700_000_000.0,
    )
    assert [r.gpus[0].util_gpu_pct for r in reports] == [1.0, 2.0, 3.0]
    assert Agent(CountingReader(), Attributor()).boot != agent.boot  # a new run, a new boot


class Timeline:
    """A monotonic clock that each poll moves by `poll_s`, and a wait that records."""

    def __init__(self, poll_s: list[float], stop_after: int) -> None:
        self.now = 0.0
        self.poll_s = poll_s
        self.waits: list[float] = []
        self.poll_times: list[float] = []
        self.stop_after = stop_after

    def monotonic(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(round(seconds, 6))
        self.now += seconds
        return len(self.waits) >= self.stop_after


def test_polls_keep_their_cadence(monkeypatch: pytest.MonkeyPatch) -> None:
    timeline = Timeline([0.5, 0.2, 7.0, 0.1, 0.1], stop_after=5)
    reader = CountingReader()
    durations = iter(timeline.poll_s)

    def read() -> list[GpuSample]:
        timeline.poll_times.append(timeline.now)
        timeline.now += next(durations)
        return CountingReader.read(reader)

    monkeypatch.setattr(reader, "read", read)
    reporter = Reporter("http://127.0.0.1:9", "t", "n")
    poll_loop(Agent(reader, Attributor()), reporter, 5.0, timeline.wait, timeline.monotonic)
    # Polls start at 0, 5, 10; the one at 10 takes 7 s, so 15 is skipped: 20, 25.
    assert timeline.poll_times == [0.0, 5.0, 10.0, 20.0, 25.0]
    assert reporter.pending() == 5
    reporter.close()


def test_the_servers_interval_is_followed() -> None:
    timeline = Timeline([], stop_after=3)
    reporter = Reporter("http://127.0.0.1:9", "t", "n")
    reporter.server_interval_s = 2.0
    poll_loop(
        Agent(CountingReader(), Attributor()), reporter, 5.0, timeline.wait, timeline.monotonic
    )
    assert timeline.waits == [2.0, 2.0, 2.0]
    reporter.close()


# --- gpupool agent, a real process ---------------------------------------------------------


@pytest.fixture
def agents() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "web.cli", "agent", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()


def stop(agent: subprocess.Popen[str]) -> tuple[int, str]:
    agent.send_signal(signal.SIGTERM)
    _, stderr = agent.communicate(timeout=30)
    return agent.returncode, stderr


def test_sigterm_stops_the_agent_after_a_last_flush(
    agents: Callable[..., subprocess.Popen[str]], stub_server: StubServer, tmp_path: Path
) -> None:
    env = agent_env(tmp_path)
    env["GPUPOOL_AGENT_RETRY_MIN_S"] = env["GPUPOOL_AGENT_RETRY_MAX_S"] = "3600"
    stub_server.fixed_status = 503  # away: what the agent reads waits in its buffer
    agent = agents(
        "--simulated-gpus=2",
        f"--server={stub_server.url}",
        "--token=node-secret",
        "--node=gpu-07",
        "--interval=0.05",
        env=env,
    )
    wait_until(lambda: len(stub_server.posts) == 1)  # the first attempt, then an hour's backoff
    first_batch = stub_server.posts[0].body["reports"]
    stub_server.fixed_status = None
    code, stderr = stop(agent)
    assert code == 0, stderr
    assert "SIGTERM: stopping" in stderr
    assert "Traceback" not in stderr
    final = stub_server.posts[-1]
    assert final.status == 200 and final.authorization == "Bearer node-secret"
    seqs = stub_server.seqs()
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= len(first_batch)
    assert {report["reader"] for report in stub_server.taken} == {"simulated"}
    assert final.body["node"] == "gpu-07"


def test_an_agent_on_nvml_reports_its_jobs(
    agents: Callable[..., subprocess.Popen[str]],
    stub_server: StubServer,
    fake_nvml: Path,
    state_path: Path,
    tmp_path: Path,
    job_processes: Callable[[dict[str, str]], int],
) -> None:
    job = job_processes({"GPUPOOL_JOB_ID": "501", "GPUPOOL_ATTEMPT": "3"})
    stray = job_processes({})
    write_state(state_path, eight_gpus([job, stray]))
    stub_server.interval_s = 0.1
    agent = agents(
        f"--server={stub_server.url}",
        "--token=t",
        "--node=gpu-01",
        "--interval=0.3",
        env=agent_env(tmp_path, fake_nvml_env(fake_nvml, state_path)),
    )
    wait_until(lambda: len(stub_server.taken) >= 3)
    code, stderr = stop(agent)
    assert code == 0, stderr
    report = stub_server.taken[-1]
    assert (report["reader"], len(report["gpus"])) == ("nvml", 8)
    processes = {
        p["pid"]: (gpu["index"], p["job_id"], p["attempt"])
        for gpu in report["gpus"]
        for p in gpu["processes"]
    }
    assert processes == {job: (0, "501", 3), stray: (1, None, None)}
    assert "the server asks for a report every 0.1 s" in stderr


def test_a_refused_token_keeps_the_agent_running(
    agents: Callable[..., subprocess.Popen[str]], stub_server: StubServer, tmp_path: Path
) -> None:
    stub_server.fixed_status = 401
    agent = agents(
        "--simulated-gpus=1",
        f"--server={stub_server.url}",
        "--token=wrong",
        "--node=gpu-02",
        env=agent_env(tmp_path),
    )
    wait_until(lambda: len(stub_server.posts) >= 1)
    assert agent.poll() is None  # still running
    code, stderr = stop(agent)
    assert code == 0
    assert "the server refused this node's token (HTTP 401: scripted 401)" in stderr


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    env = agent_env(tmp_path)
    for args, message in [
        (["--simulated-gpus=1"], "error: no server to report to: give --server,"),
        (["--simulated-gpus=1", "--server=http://x"], "error: no token: give this node's"),
        (["--interval=0", "--once"], "error: invalid agent settings: interval_s: Input should"),
        (["--config", str(tmp_path / "nope.toml")], "error: config file "),
        (["--server=ftp://x", "--once"], "error: invalid agent settings: server: Value error"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "web.cli", "agent", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, args
        assert done.stderr.startswith(message), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_once_prints_one_report_and_sends_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "web.cli", "agent", "--once", "--simulated-gpus=2", "--node=demo"],
        cwd=REPO,
        env=agent_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["seq"], report["reader"], len(report["gpus"])) == (1, "simulated", 2)
