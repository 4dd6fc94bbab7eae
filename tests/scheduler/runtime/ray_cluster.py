"""A real Ray cluster on this machine for the Ray dispatcher's tests: a head node (the
dashboard and Jobs API, no GPUs) and worker "nodes" with fake GPUs, each declaring its
gpupool name the way a real GPU node does (`--resources '{"gpupool_node:NAME": 1}'`).

    cluster = LocalRayCluster.start(nodes={"gpu-01": 4, "gpu-02": 4})
    cluster.address, cluster.token        # the dashboard URL and the cluster's auth token
    cluster.add_node("gpu-03", gpus=2)    # one more node (about 2 s)
    cluster.kill_node("gpu-03")           # SIGKILL it: the node leaves Ray
    cluster.close()

Every node is a `ray start --block` process in a session of its own, so closing the cluster
kills exactly the processes it started (never `ray stop`, which ends every Ray on the
machine). Ports are picked free, the temp dir is private, and token auth is on (Ray 2.60's
default for new clusters) with a token made for the cluster. Each worker sees its own name
in GPUPOOL_TEST_NODE, which jobs print to show where they ran. The health checks are made
fast, so a killed node is declared dead in about a second.

All nodes share one host, one IP and the head's session dir, which real nodes do not: a job
with a working_dir whose driver calls ray.init() finds its working_dir unpacked again over
its cwd by another node's agent (its cwd is then deleted), and with a session dir per node
get_job_logs reads the wrong node's log. So the tests keep the shared session dir and do not
combine a working_dir with ray.init().
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

PIN_PREFIX = "gpupool_node:"


class RayUnavailable(Exception):
    """Ray could not be started here (the tests that need it are skipped)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class LocalRayCluster:
    root: Path
    token: str
    gcs_port: int
    dashboard_port: int
    env: dict[str, str]
    nodes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @classmethod
    def start(cls, nodes: dict[str, int], timeout_s: float = 90.0) -> LocalRayCluster:
        ray_cli = Path(sys.executable).parent / "ray"
        if not ray_cli.exists():
            raise RayUnavailable(f"no `ray` command beside {sys.executable}")
        token = secrets.token_hex(16)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "GPUPOOL_"))}
        env |= {
            # Jobs run `python`: the venv's, which has Ray (as on a real Ray node).
            "PATH": f"{ray_cli.parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": token,
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_health_check_initial_delay_ms": "0",
            "RAY_health_check_period_ms": "300",
            "RAY_health_check_timeout_ms": "300",
            "RAY_health_check_failure_threshold": "2",
        }
        root = Path(tempfile.mkdtemp(prefix="gp-ray-"))  # short: Ray's socket paths are limited
        cluster = cls(root, token, free_port(), free_port(), env)
        try:
            cluster._spawn(
                "head",
                [
                    "--head",
                    f"--port={cluster.gcs_port}",
                    "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={cluster.dashboard_port}",
                    f"--ray-client-server-port={free_port()}",
                    "--num-cpus=1",
                    "--num-gpus=0",
                ],
            )
            cluster._wait_dashboard(timeout_s)
            for name, gpus in nodes.items():  # one at a time: nodes starting together on
                cluster.add_node(name, gpus, timeout_s)  # one host can time out registering
        except BaseException:
            cluster.close()
            raise
        return cluster

    def add_node(self, name: str, gpus: int, timeout_s: float = 60.0) -> None:
        self._spawn_worker(name, gpus)
        self._wait_nodes({name}, timeout_s)

    def kill_node(self, name: str) -> None:
        """The node leaves Ray at once, as if its machine lost power."""
        self._kill(self.nodes.pop(name))

    def close(self) -> None:
        for name in list(self.nodes):
            self._kill(self.nodes.pop(name))
        shutil.rmtree(self.root, ignore_errors=True)

    # -- helpers ------------------------------------------------------------------------

    def _spawn_worker(self, name: str, gpus: int) -> None:
        self._spawn(
            name,
            [
                f"--address=127.0.0.1:{self.gcs_port}",
                "--num-cpus=8",
                f"--num-gpus={gpus}",
                f"--resources={json.dumps({PIN_PREFIX + name: 1})}",
            ],
            extra_env={"GPUPOOL_TEST_NODE": name},
        )

    def _spawn(self, name: str, args: list[str], extra_env: dict[str, str] | None = None) -> None:
        log = (self.root / f"{name}.log").open("wb")
        common = [
            "--block",
            "--disable-usage-stats",
            f"--dashboard-agent-listen-port={free_port()}",
            "--object-store-memory=100000000",
        ]
        if "--head" in args:  # the workers join the head's session dir
            common.append(f"--temp-dir={self.root / 'ray'}")
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "ray"), "start", *args, *common],
            env=self.env | (extra_env or {}),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.nodes[name] = proc

    def _wait_dashboard(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(requests.RequestException):
                r = requests.get(f"{self.address}/api/version", headers=self.headers, timeout=2)
                if r.ok:
                    return
            time.sleep(0.2)
        raise RayUnavailable(f"the Ray dashboard did not answer within {timeout_s:g} s")

    def _wait_nodes(self, names: set[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            if names <= self.alive_names():
                return
            time.sleep(0.2)
        raise RayUnavailable(f"Ray nodes {sorted(names)} did not join within {timeout_s:g} s")

    def alive_names(self) -> set[str]:
        """The gpupool names of the nodes Ray has alive."""
        with contextlib.suppress(requests.RequestException, ValueError, KeyError):
            r = requests.get(
                f"{self.address}/api/v0/nodes", headers=self.headers, params={"limit": 1000}
            )
            if r.ok:
                rows = r.json()["data"]["result"]["result"]
                return {
                    key.removeprefix(PIN_PREFIX)
                    for row in rows
                    if row["state"] == "ALIVE"
                    for key in row.get("resources_total", {})
                    if key.startswith(PIN_PREFIX)
                }
        return set()

    def _check_alive(self) -> None:
        for name, proc in self.nodes.items():
            if proc.poll() is not None:
                tail = (self.root / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RayUnavailable(f"`ray start` for {name} exited: {tail}")

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the node's process group and everything it spawned (workers and job
        drivers run in sessions of their own)."""
        family = _descendants(proc.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in family:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()


def _descendants(root: int) -> list[int]:
    """Every process below `root`, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            text = stat.read_text()
            ppid = int(text[text.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(text.split(" ", 1)[0]))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
