"""Fixtures of the agent's tests: the fake NVML library (built once per session), NVML
readers in processes of their own, real processes carrying a job's environment, and the
stand-in report endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agents.fake_nvml import FakeNvmlState, build_fake_nvml, fake_nvml_env, write_state
from tests.agents.stub_server import StubServer, free_port

REPO = Path(__file__).resolve().parents[2]


def agent_env(directory: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment for a `gpupool agent` process: no GPUPOOL_AGENT_* of ours, and an empty
    config file in `directory` instead of /etc/gpupool/agent.toml."""
    env = {k: v for k, v in (base or os.environ).items() if not k.startswith("GPUPOOL_AGENT_")}
    config = directory / "agent.toml"
    config.touch()
    env["GPUPOOL_AGENT_CONFIG"] = str(config)
    return env


@pytest.fixture(scope="session")
def fake_nvml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake libnvidia-ml.so.1, compiled for this session."""
    return build_fake_nvml(tmp_path_factory.mktemp("fake-nvml"))


class NvmlProbe:
    """An NvmlReader (with attribution) in a subprocess that sees the fake NVML."""

    def __init__(self, library: Path, state: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.agents.nvml_probe"],
            cwd=REPO,
            env=fake_nvml_env(library, state),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.started: dict[str, Any] = self._line()

    def _line(self) -> Any:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the probe ended (exit {self.process.wait()})"
        return json.loads(line)

    def poll(self) -> list[dict[str, Any]]:
        assert self.process.stdin is not None
        self.process.stdin.write("poll\n")
        self.process.stdin.flush()
        samples: list[dict[str, Any]] = self._line()
        return samples

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            if self.process.stdout is not None:
                self.process.stdout.close()


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "nvml.state"


@pytest.fixture
def nvml_probe(fake_nvml: Path, state_path: Path) -> Iterator[Callable[[FakeNvmlState], NvmlProbe]]:
    """start(state): write the fake's state and start a reader on it."""
    probes: list[NvmlProbe] = []

    def start(state: FakeNvmlState) -> NvmlProbe:
        write_state(state_path, state)
        probe = NvmlProbe(fake_nvml, state_path)
        probes.append(probe)
        return probe

    yield start
    for probe in probes:
        probe.close()


@pytest.fixture
def job_processes() -> Iterator[Callable[[dict[str, str]], int]]:
    """start(env): a real sleeping process with env added to ours; its pid. Ended after."""
    started: list[subprocess.Popen[bytes]] = []

    def start(extra: dict[str, str]) -> int:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")}
        process = subprocess.Popen(["sleep", "300"], env={**env, **extra})
        started.append(process)
        return process.pid

    yield start
    for process in started:
        process.kill()
        process.wait()


@pytest.fixture
def stub_server() -> Iterator[StubServer]:
    reserved = free_port()
    port = reserved.getsockname()[1]
    reserved.close()
    server = StubServer(port).listen()
    yield server
    server.close()
