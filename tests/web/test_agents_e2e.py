"""End to end, real processes: `gpupool serve` running jobs as processes (the local
dispatcher), a real `gpupool agent` reading the GPUs through the real pynvml from the fake
libnvidia-ml.so.1 (tests/agents/fake_nvml.c) and reporting with its node's token. The job's
process shows up on its GPU, attributed to its job; its usage grows; a critical Xid drains
the node; the agent SIGKILLed, the node goes down and the job is requeued; the agent back,
the node returns to what it was (draining). Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agents.conftest import agent_env
from tests.agents.fake_nvml import (
    FakeXid,
    build_fake_nvml,
    eight_gpus,
    fake_nvml_env,
    write_state,
)
from tests.web.test_serve import Server
from web.bench import bench_pool
from web.db import make_engine, migrate, write_session
from web.models import Role
from web.services.auth import Principal, issue_token
from web.services.seed import seed_pool
from web.settings import Settings


@pytest.fixture(scope="module")
def fake_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fake_nvml(tmp_path_factory.mktemp("fake-nvml"))


@pytest.fixture
def pool(settings: Settings, tmp_path: Path) -> Iterator[tuple[Server, dict[str, str]]]:
    """A real server over the bench pool (nodes n-0 and n-1, 8 GPUs each); admin and u0
    tokens."""
    pool_file = tmp_path / "pool.toml"
    pool_file.write_text(bench_pool(2))
    engine = make_engine(settings)
    migrate(engine)
    with write_session(engine) as session:
        seed_pool(session, pool_file, time.time())
        tokens = {
            user: issue_token(session, Principal(user, role), user, time.time()).token
            for user, role in (("admin", Role.ADMIN), ("u0", Role.RESEARCHER))
        }
    engine.dispose()
    server = Server(
        settings,
        tmp_path / "server.log",
        args=("--dispatcher", "local"),
        env={
            "GPUPOOL_AGENT_HEARTBEAT_TIMEOUT_S": "3",
            "GPUPOOL_AGENT_INTERVAL_S": "0.3",
            "GPUPOOL_LOOP_INTERVAL_S": "0.2",
            "GPUPOOL_GRACE_PERIOD_S": "2",
        },
    )
    try:
        server.wait(leader=True)
        yield server, tokens
    finally:
        server.stop()


def until(what: str, check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def pid_of_job(job_id: int, server: Server) -> int | None:
    """The job's own process: the one whose environment names it, under this server (tests
    running beside this one have jobs of the same ids under servers of their own)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"GPUPOOL_JOB_ID={job_id}".encode() in environ and _descends_from(
            int(entry.name), server.process.pid
        ):
            return int(entry.name)
    return None


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rpartition(")")[2].split()[1])  # the field after the state: ppid
        if pid == ancestor:
            return True
    return False


class Agent:
    def __init__(self, server: Server, token: str, node: str, library: Path, state: Path) -> None:
        env = fake_nvml_env(library, state, agent_env(state.parent))
        self.log = state.parent / f"agent-{time.monotonic_ns()}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "web.cli",
                    "agent",
                    "--server",
                    server.url,
                    "--token",
                    token,
                    "--node",
                    node,
                    "--interval",
                    "0.3",
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


def test_a_real_agent_reports_a_real_jobs_gpu_and_the_server_follows_the_node(
    pool: tuple[Server, dict[str, str]], fake_library: Path, tmp_path: Path
) -> None:
    server, tokens = pool
    api = httpx.Client(base_url=f"{server.url}/api/v1", timeout=10)
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    researcher = {"Authorization": f"Bearer {tokens['u0']}"}

    submitted = api.post(
        "/jobs",
        headers=researcher,
        json={"project": "p0", "entrypoint": "sleep 600", "gpus": 8, "time": "1h"},
    )
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json()["jobs"][0]["id"]

    def job() -> dict[str, Any]:
        answer: dict[str, Any] = api.get(f"/jobs/{job_id}", headers=researcher).json()
        return answer

    running = until("the job runs", lambda: job() if job()["state"] == "running" else None)
    node = running["allocations"][0]["node"]
    pid = until("the job's process", lambda: pid_of_job(job_id, server))

    state_file = tmp_path / "nvml-state"
    state = eight_gpus(pids=[pid])
    write_state(state_file, state)
    made = api.post(f"/nodes/{node}/tokens", headers=admin, json={"label": "e2e"})
    assert made.status_code == 201, made.text
    agent = Agent(server, made.json()["token"], node, fake_library, state_file)
    try:

        def gpus() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = api.get(f"/nodes/{node}/gpus", headers=admin).json()[
                "gpus"
            ]
            return found

        first = until("the job's GPU, attributed", lambda: [g for g in gpus() if g["jobs"]])
        assert first[0]["jobs"] == [[job_id, 1]] and first[0]["index"] == 0
        assert first[0]["processes"][0]["pid"] == pid
        assert len(gpus()) == 8

        state.gpus[0].energy_mj += 3_600_000  # 1 Wh more
        write_state(state_file, state)

        def usage() -> dict[str, Any] | None:
            rows = api.get(f"/jobs/{job_id}/usage", headers=researcher).json()
            return rows[0] if rows and rows[0]["energy_kwh"] > 0 else None

        used = until("the job's usage", usage)
        # One GPU busy at 50 %, the seven others it holds unused: counted idle.
        assert used["gpu_s"] > 0 and used["mean_util_pct"] == pytest.approx(50.0 / 8)
        assert used["energy_kwh"] == pytest.approx(0.001, rel=1e-6)

        state.xids.append(FakeXid(gpu=2, xid=79))
        write_state(state_file, state)

        def node_row() -> dict[str, Any]:
            rows = api.get("/nodes", headers=admin).json()
            found: dict[str, Any] = next(n for n in rows if n["name"] == node)
            return found

        drained = until("the Xid drains the node", lambda: node_row()["state"] == "draining")
        assert drained
        assert node_row()["state_reason"].startswith("Xid 79 (GPU has fallen off the bus)")

        agent.kill()
        until("the silent node goes down", lambda: node_row()["state"] == "down", 20)
        assert node_row()["state_reason"].startswith("missed heartbeats")
        requeued = until(
            "the job requeued",
            lambda: (
                job()
                if job()["attempt"] >= 2
                or (job()["state"] == "queued" and job()["reason_code"] == "lost")
                else None
            ),
        )
        assert requeued["state"] in ("queued", "admitted", "running")
        until("its process stopped", lambda: pid_of_job(job_id, server) != pid or None, 20)

        agent = Agent(server, made.json()["token"], node, fake_library, state_file)
        until("the node drains again", lambda: node_row()["state"] == "draining", 20)
        assert node_row()["state_reason"].startswith("Xid 79")
    finally:
        agent.stop()
        api.post(f"/jobs/{job_id}/cancel", headers=researcher)
        if (leftover := pid_of_job(job_id, server)) is not None:
            os.kill(leftover, signal.SIGKILL)
