"""A dispatcher that runs each admitted attempt as a process on this machine: what
`gpupool up` and `gpupool serve --dispatcher local` use until the Ray dispatcher exists.

Each attempt's `entrypoint` runs as a shell command in its own process group (so a stop
reaches everything it spawned), with stdout and stderr in `log_path(job_id, attempt)`.

GPUs: the pool's node names are taken as labels on this one machine. Each node name has its
own GPU indices 0..N-1, handed out lowest first among those no running attempt on that name
holds (N is never needed: the scheduler already keeps each node within its size), and the
attempt sees them as CUDA_VISIBLE_DEVICES.

Multi-node attempts are NOT really run across nodes: one process starts, with the first
piece's GPUs in CUDA_VISIBLE_DEVICES and every piece in GPUPOOL_NODES ("n1:4,n2:4", the
first being the one it runs on). Real multi-node runs need the Ray dispatcher.

The wall-time limit is not enforced here: the control plane orders a TIMEOUT stop for it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler.runtime.ports import (
    Clock,
    DispatchError,
    EventKind,
    JobEvent,
    StartOrder,
    StopOrder,
)


@dataclass(slots=True)
class _Run:
    order: StartOrder
    proc: subprocess.Popen[bytes]
    node: str
    gpus: tuple[int, ...]  # indices on `node`, held until the process has exited
    stop: StopOrder | None = None
    kill_at: float | None = None  # time.monotonic() at which a stopped group gets SIGKILL


class LocalProcessDispatcher:
    """Runs attempts as local processes; see the module docstring. Thread-safe: the loop
    thread starts, stops and polls while shutdown may call `close()`."""

    def __init__(self, clock: Clock, log_dir: Path) -> None:
        self.clock = clock
        self.log_dir = log_dir
        self._runs: dict[str, _Run] = {}
        self._started: set[str] = set()  # every key ever started: a finished one stays done
        self._events: list[JobEvent] = []
        self._closed = False
        self._lock = threading.Lock()

    def known(self) -> set[str]:
        with self._lock:
            return set(self._runs)

    def _scratch(self, order: StartOrder) -> Path:
        """A job without a working_dir starts in a fresh directory of its own, away from
        the control plane's data directory."""
        path = Path(tempfile.gettempdir()) / f"gpupool-jobs-{os.getuid()}" / order.key
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def log_path(self, job_id: str, attempt: int) -> Path:
        return log_file(self.log_dir, job_id, attempt)

    def start(self, order: StartOrder) -> None:
        with self._lock:
            if order.key in self._started:
                return
            if self._closed:
                raise DispatchError("the local dispatcher is shut down")
            env_vars = _env_vars(order.runtime_env)
            cwd = _working_dir(order.runtime_env)
            node, count = order.pieces[0] if order.pieces else ("", 0)
            gpus = self._free_gpus(node, count)
            env = {
                # Not the control plane's own settings (a database URL may hold a password).
                **{k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")},
                **env_vars,
                # Set last: a job's env_vars must not move it onto GPUs it was not given.
                "GPUPOOL_JOB_ID": order.job_id,
                "GPUPOOL_PROJECT": order.project,
                "GPUPOOL_ATTEMPT": str(order.attempt),
                "GPUPOOL_NODES": ",".join(f"{name}:{n}" for name, n in order.pieces),
                "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus)),
            }
            try:
                # Owner-only, as everything in the data directory: a job's output is its
                # project's to read.
                self.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                # Append: if the control plane restarts and resends the start, the first
                # run's output is kept.
                path = self.log_path(order.job_id, order.attempt)
                flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
                with os.fdopen(os.open(path, flags, 0o600), "ab") as log:
                    proc = subprocess.Popen(
                        order.entrypoint,
                        shell=True,
                        start_new_session=True,
                        cwd=cwd if cwd is not None else self._scratch(order),
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
            except ValueError as err:  # a NUL byte in the command or the env: never runnable
                raise DispatchError(f"cannot start {order.key}: {err}", permanent=True) from err
            except OSError as err:
                raise DispatchError(f"cannot start {order.key}: {err}") from err
            self._runs[order.key] = _Run(order, proc, node, gpus)
            self._started.add(order.key)
            self._events.append(
                JobEvent(order.job_id, order.attempt, EventKind.RUNNING, self.clock.now())
            )

    def stop(self, order: StopOrder) -> None:
        with self._lock:
            run = self._runs.get(order.key)
            if run is None or run.stop is not None:
                return
            run.stop = order
            run.kill_at = time.monotonic() + order.grace_s
            _signal_group(run.proc, signal.SIGTERM)

    def poll(self) -> list[JobEvent]:
        with self._lock:
            for key, run in list(self._runs.items()):
                if _exited(run.proc):
                    # Whatever the entrypoint left running (`cmd &`) would hold GPUs the pool
                    # now counts as free.
                    _signal_group(run.proc, signal.SIGKILL)
                    del self._runs[key]
                    self._events.append(self._ended(run, run.proc.wait()))
                elif run.kill_at is not None and time.monotonic() >= run.kill_at:
                    _signal_group(run.proc, signal.SIGKILL)
                    run.kill_at = None
            events, self._events = self._events, []
            return events

    def close(self, grace_s: float = 5.0) -> None:
        """Terminate every attempt still running: SIGTERM, then SIGKILL after `grace_s`.
        The control plane calls this on shutdown; later starts are refused (not for good, so
        the next leader runs them) and the attempts ended here are not reported."""
        with self._lock:
            self._closed = True
            runs = list(self._runs.values())
            self._runs.clear()
            for run in runs:
                _signal_group(run.proc, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and not all(_exited(run.proc) for run in runs):
                time.sleep(0.05)
            for run in runs:
                _signal_group(run.proc, signal.SIGKILL)
                run.proc.wait()

    def _free_gpus(self, node: str, count: int) -> tuple[int, ...]:
        held = {i for run in self._runs.values() if run.node == node for i in run.gpus}
        free: list[int] = []
        index = 0
        while len(free) < count:
            if index not in held:
                free.append(index)
            index += 1
        return tuple(free)

    def _ended(self, run: _Run, code: int) -> JobEvent:
        order, now = run.order, self.clock.now()
        if run.stop is not None:
            kind, message = EventKind.STOPPED, f"stopped: {run.stop.why.value}"
        elif code == 0:
            kind, message = EventKind.SUCCEEDED, "exit code 0"
        elif code > 0:
            kind, message = EventKind.FAILED, f"exit code {code}"
        else:
            kind, message = EventKind.FAILED, f"killed by signal {_signal_name(-code)}"
        return JobEvent(order.job_id, order.attempt, kind, now, message)


def log_file(log_dir: Path, job_id: str, attempt: int) -> Path:
    """Where an attempt's output goes (the API reads it from there: web/services/logs.py)."""
    return log_dir / f"{job_id}-{attempt}.log"


def _env_vars(runtime_env: Mapping[str, Any]) -> dict[str, str]:
    env_vars = runtime_env.get("env_vars", {})
    if not isinstance(env_vars, dict):
        raise DispatchError(
            "runtime_env.env_vars must be a mapping of names to strings", permanent=True
        )
    for name, value in env_vars.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise DispatchError(
                f"runtime_env.env_vars: {name!r} must be a string set to a string, "
                f"not {type(value).__name__}",
                permanent=True,
            )
    return env_vars


def _working_dir(runtime_env: Mapping[str, Any]) -> Path | None:
    working_dir = runtime_env.get("working_dir")
    if working_dir is None:
        return None
    if not isinstance(working_dir, str) or not Path(working_dir).is_dir():
        raise DispatchError(
            f"runtime_env.working_dir: {working_dir!r} is not a directory on this machine",
            permanent=True,
        )
    return Path(working_dir)


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the group's leader has exited, without reaping it: while its zombie stays,
    its pid (the group id) cannot be reused, so signalling the group stays safe."""
    if proc.returncode is not None:
        return True
    try:
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        return os.waitid(os.P_PID, proc.pid, flags) is not None
    except ChildProcessError:  # reaped elsewhere; proc.wait() will say so
        return True


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if proc.returncode is not None:  # reaped: the group id may belong to someone else now
        return
    # Gone already: ProcessLookupError (macOS says PermissionError when only zombies are left).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
