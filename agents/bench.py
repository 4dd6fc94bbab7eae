"""`gpupool bench agent`: the agent's own CPU cost per poll of an 8-GPU node.

The real NvmlReader, through pynvml, reads the fake libnvidia-ml.so.1 of the tests (built
with gcc in a temporary directory): the figure is the agent's side (pynvml, ctypes, our
code), not a real driver's, whose calls add their own time, mostly in the kernel. Four real
processes are on the GPUs (three of jobs, one not) and are attributed through /proc; each
report is built and POSTed to a loopback stand-in server, which runs in this process, so
its CPU is not counted.

The agent runs in a child process (pynvml only finds the fake library when LD_LIBRARY_PATH
is set at the start), which measures its own CPU time (user + system) over --polls polls,
after WARMUP polls. Keys: cpu_ms_per_poll (read + attribute + report + POST),
cpu_ms_per_poll_reading (read + attribute + report, without the POST), gpus (per report),
processes and processes_of_jobs (per report), polls, lost (reports the server did not get).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WARMUP = 20


class BenchUnavailable(Exception):
    """The benchmark cannot run here (no source tree with the tests' fake NVML, no gcc)."""


def bench_agent(polls: int) -> dict[str, Any]:
    if not (REPO / "tests" / "agents" / "fake_nvml.c").exists():
        raise BenchUnavailable("the agent bench needs gpupool's source tree (tests/agents)")
    if str(REPO) not in sys.path:  # the `gpupool` script's path does not hold the tree
        sys.path.append(str(REPO))
    from tests.agents.fake_nvml import build_fake_nvml, eight_gpus, fake_nvml_env, write_state
    from tests.agents.stub_server import StubServer, free_port

    reserved = free_port()
    port = reserved.getsockname()[1]
    reserved.close()
    server = StubServer(port).listen()
    base = {k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")}
    sleepers = [
        subprocess.Popen(["sleep", "3600"], env={**base, **extra})
        for extra in (
            {"GPUPOOL_JOB_ID": "101", "GPUPOOL_ATTEMPT": "1"},
            {"GPUPOOL_JOB_ID": "102", "GPUPOOL_ATTEMPT": "1"},
            {"GPUPOOL_JOB_ID": "103", "GPUPOOL_ATTEMPT": "2"},
            {},
        )
    ]
    try:
        with tempfile.TemporaryDirectory(prefix="gpupool-bench-agent-") as directory:
            try:
                library = build_fake_nvml(Path(directory))
            except (RuntimeError, subprocess.CalledProcessError) as error:
                raise BenchUnavailable(f"cannot build the fake NVML: {error}") from error
            state = Path(directory) / "nvml.state"
            write_state(state, eight_gpus([p.pid for p in sleepers]))
            child = subprocess.run(
                [sys.executable, "-m", "agents.bench", str(polls), server.url],
                cwd=REPO,
                env=fake_nvml_env(library, state),
                capture_output=True,
                text=True,
                check=False,
            )
        if child.returncode != 0:
            raise BenchUnavailable(f"the measuring process failed:\n{child.stderr}")
        result: dict[str, Any] = json.loads(child.stdout)
        result["lost"] = (polls + WARMUP) - len(server.taken)
        return result
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()
        server.close()


def measure(polls: int, server: str) -> dict[str, Any]:
    """In the child: the agent's CPU time per poll, with and without the POST."""
    from agents.attribution import Attributor
    from agents.main import Agent
    from agents.nvml import NvmlReader
    from agents.reporter import Reporter

    reader = NvmlReader()
    agent = Agent(reader, Attributor())
    reporter = Reporter(server, "bench-token", "bench-node")
    for _ in range(WARMUP):
        reporter.add(agent.poll())
        reporter.send_pending()
    started = time.process_time()
    for _ in range(polls):
        reporter.add(agent.poll())
        reporter.send_pending()
    with_send = time.process_time() - started
    started = time.process_time()
    for _ in range(polls):
        report = agent.poll()
    reading = time.process_time() - started
    reporter.close()
    reader.close()
    return {
        "cpu_ms_per_poll": round(with_send / polls * 1000, 3),
        "cpu_ms_per_poll_reading": round(reading / polls * 1000, 3),
        "gpus": len(report.gpus),
        "processes": sum(len(gpu.processes) for gpu in report.gpus),
        "processes_of_jobs": sum(1 for gpu in report.gpus for p in gpu.processes if p.job_id),
        "polls": polls,
    }


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]), sys.argv[2])))
