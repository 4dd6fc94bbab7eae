"""A Ray head on this machine for `gpupool up --dispatcher ray`, when no Ray answers here.

What it declares (HeadPlan):
- a machine with GPUs (nvidia-smi lists them): those GPUs, as one gpupool node named after
  the machine (seeded in the database with the pool's first flavor when it is missing);
- a machine without: simulated GPUs, one `gpupool_node:<name>` for every node of the
  database that is not down (or down only because a Ray of before lacked it) and as many
  GPUs as they have together. The pool's nodes are
  then labels on this one machine, as the local dispatcher takes them: a job lands on "its"
  node and Ray hands it GPU indices of the head (a job of 4 GPUs sees 4 in
  CUDA_VISIBLE_DEVICES). One Ray node cannot hold a multi-node job's placement group
  (STRICT_SPREAD): those need real nodes.

The head runs `ray start --head --block` (GCS on 6379, dashboard on 127.0.0.1:8265, as a
plain `ray start --head` would, so `ray status` and `ray job` find it) in a session of its
own, with token auth on (RAY_AUTH_MODE=token) and a token kept in the data directory
(ray.token, owner-only) that gpupool uses too. `stop()` ends it as `ray start --block`
expects (SIGTERM to it: it drains and stops the processes it started, about 2 s), so what
`up` started, `up` stops; jobs still running then are lost and requeued at the next start.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import col, or_, select

from scheduler.runtime.ray_dispatcher import ABSENT_REASON, DEFAULT_ADDRESS, pin_resource
from web.data_dir import make_private_dir, open_private, write_private
from web.db import read_session, write_session
from web.enums import NodeStateName
from web.models import Flavor, Node

GCS_PORT = 6379
DASHBOARD_PORT = 8265


@dataclass(frozen=True, slots=True)
class HeadPlan:
    nodes: dict[str, int]  # the gpupool nodes the head declares, with their GPUs
    gpus: int  # what the head tells Ray it has
    simulated: bool
    seeded: str | None = None  # a node added to the database for this machine


def gpus_here() -> int:
    """How many NVIDIA GPUs this machine has (0 without nvidia-smi or a driver)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        done = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return 0
    if done.returncode != 0:
        return 0
    return sum(1 for line in done.stdout.splitlines() if line.startswith("GPU "))


def machine_node_name(hostname: str | None = None) -> str:
    """This machine's name as a gpupool node name (a-z, 0-9, '.', '_', '-')."""
    raw = (hostname or socket.gethostname()).split(".")[0].lower()
    name = re.sub(r"[^a-z0-9._-]+", "-", raw).strip("-._")[:63]
    return name or "localhost"


def plan_head(engine: Engine, gpus: int, now: float, hostname: str | None = None) -> HeadPlan:
    """What the head declares for a machine with `gpus` GPUs (see the module docstring);
    seeds this machine's node when it has GPUs and the database lacks it."""
    if gpus <= 0:
        with read_session(engine) as session:
            rows = session.exec(
                select(Node.name, Node.gpus).where(
                    # Down only because Ray lacked it (a Ray of before): it is back now.
                    or_(
                        col(Node.state) != NodeStateName.DOWN.value,
                        col(Node.state_reason) == ABSENT_REASON,
                    )
                )
            ).all()
        nodes = {name: count for name, count in rows}
        return HeadPlan(nodes, sum(nodes.values()), simulated=True)
    name = machine_node_name(hostname)
    seeded = None
    with write_session(engine) as session:
        node = session.get(Node, name)
        if node is None:
            flavor = session.exec(select(Flavor.name).order_by(Flavor.name)).first()
            if flavor is None:
                raise ValueError("the pool has no flavor to give this machine's node")
            session.add(Node(name=name, flavor=flavor, gpus=gpus, registered_at=now))
            seeded = name
        else:
            gpus = min(gpus, node.gpus)
    return HeadPlan({name: gpus}, gpus, simulated=False, seeded=seeded)


def head_token(data_dir: Path) -> str:
    """The token of the head gpupool starts: kept in data_dir/ray.token (0600)."""
    path = data_dir / "ray.token"
    with contextlib.suppress(OSError):
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_hex(32)
    make_private_dir(data_dir)
    write_private(path, token + "\n")
    return token


def probe(address: str, token: str | None, timeout_s: float = 1.0) -> str | None:
    """What answers at `address`: "ray" (a Ray dashboard that takes this token), "refused"
    (one that wants another token), "other" (something else), None (nothing)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"{address}/api/version", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            body = answer.read(65536)
    except urllib.error.HTTPError as err:
        return "refused" if err.code in (401, 403) else "other"
    except (OSError, ValueError):  # nothing listens, or no answer in time
        return None
    try:
        is_ray = "ray_version" in json.loads(body)
    except (ValueError, TypeError):
        is_ray = False
    return "ray" if is_ray else "other"


def head_command(
    plan: HeadPlan,
    ray: str,
    gcs_port: int = GCS_PORT,
    dashboard_port: int = DASHBOARD_PORT,
    extra: tuple[str, ...] = (),
) -> list[str]:
    resources = {pin_resource(name): 1 for name in plan.nodes}
    return [
        ray,
        "start",
        "--head",
        "--block",
        f"--port={gcs_port}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        f"--num-gpus={plan.gpus}",
        f"--resources={json.dumps(resources, separators=(',', ':'))}",
        "--disable-usage-stats",
        *extra,
    ]


def head_env(token: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The head's environment: token auth on with gpupool's token; none of gpupool's own
    settings (a database URL may hold a password), which Ray jobs would inherit."""
    env = {k: v for k, v in (base or os.environ).items() if not k.startswith("GPUPOOL_")}
    ray_bin = str(Path(sys.executable).parent)  # jobs run `python`: this one, which has Ray
    env["PATH"] = ray_bin + os.pathsep + env.get("PATH", "")
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0"}
    return env


class LocalRayHead:
    """A `ray start --head --block` process this gpupool started (and stops)."""

    def __init__(
        self,
        plan: HeadPlan,
        token: str,
        log: Path,
        gcs_port: int = GCS_PORT,
        dashboard_port: int = DASHBOARD_PORT,
        extra: tuple[str, ...] = (),
    ) -> None:
        """`extra`: more `ray start` options (a private --temp-dir, ports of its own: the
        benchmark's head beside any other Ray of the machine)."""
        self.plan, self.token, self.log = plan, token, log
        self.ports, self.extra = (gcs_port, dashboard_port), extra
        self.address = (
            DEFAULT_ADDRESS
            if dashboard_port == DASHBOARD_PORT
            else f"http://127.0.0.1:{dashboard_port}"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        ray = Path(sys.executable).parent / "ray"
        if not ray.exists():
            raise OSError(f"no `ray` command beside {sys.executable}")
        make_private_dir(self.log.parent)
        with os.fdopen(open_private(self.log, os.O_WRONLY | os.O_APPEND), "ab") as out:
            self.process = subprocess.Popen(
                head_command(self.plan, str(ray), *self.ports, extra=self.extra),
                env=head_env(self.token),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout_s: float = 60.0) -> str | None:
        """None once the dashboard answers; else why not (the end of ray's output)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return f"`ray start --head` exited: {self._tail()}"
            if probe(self.address, self.token) == "ray":
                return None
            time.sleep(0.2)
        return f"the Ray dashboard did not answer within {timeout_s:g} s: {self._tail()}"

    def stop(self, timeout_s: float = 40.0) -> None:
        """SIGTERM to `ray start --block`, which drains and stops what it started; the
        whole session is killed if it is still there after `timeout_s`."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def _tail(self, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            text = self.log.read_text(errors="replace").strip().splitlines()
            return " | ".join(line.strip() for line in text[-lines:])
        return "(no output)"
