"""Which job a GPU process belongs to: GPUPOOL_JOB_ID and GPUPOOL_ATTEMPT in its environment,
as both dispatchers set them (scheduler/runtime/local.py, ray_dispatcher.py), read from
/proc/PID/environ.

A process without GPUPOOL_JOB_ID belongs to no job of the pool (someone using a GPU outside
the scheduler: worth an alert on the server); it is reported with job_id None and no note.
When the environment cannot be read, job_id is None too and `note` says why: permission
denied (the agent must run as root or with CAP_SYS_PTRACE to read other users' processes),
the process ended before it could be read, or a value that is not a valid job id or attempt.

An environment is read once per process: results are kept per (pid, start time), the start
time (field 22 of /proc/PID/stat) telling a new process from an old one with the same pid;
what a process was told at exec is what /proc shows, and the pool starts each attempt with
its variables already set. Entries of processes no longer seen are dropped at each call.
NVML reports host pids, so the agent runs in the host's pid namespace.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from agents.schema import JOB_ID_PATTERN, GpuProcess, GpuSample

JOB_ID_VARIABLE = b"GPUPOOL_JOB_ID="
ATTEMPT_VARIABLE = b"GPUPOOL_ATTEMPT="
JOB_ID = re.compile(JOB_ID_PATTERN)
PRIVILEGE_HINT = "run the agent as root or with CAP_SYS_PTRACE"


@dataclass(frozen=True, slots=True)
class Owner:
    job_id: str | None
    attempt: int | None
    note: str = ""


NO_JOB = Owner(None, None)
GONE = Owner(None, None, "the process ended before its job could be read")
ATTEMPT = re.compile(r"[0-9]{1,9}")  # fullmatch: "$" would let a trailing newline in


class Attributor:
    def __init__(self, proc: Path = Path("/proc")) -> None:
        self._proc = proc
        self._known: dict[tuple[int, int], Owner] = {}

    def attribute(self, samples: Iterable[GpuSample]) -> list[GpuSample]:
        """The samples with each process's job filled in."""
        seen: set[tuple[int, int]] = set()
        result: list[GpuSample] = []
        for sample in samples:
            if not sample.processes:
                result.append(sample)
                continue
            processes = [self._attributed(process, seen) for process in sample.processes]
            result.append(sample.model_copy(update={"processes": processes}))
        self._known = {key: owner for key, owner in self._known.items() if key in seen}
        return result

    def owner_of(self, pid: int) -> Owner:
        """The job of the process `pid`, from its environment (cached per start time)."""
        return self._owner(pid, set())

    def _attributed(self, process: GpuProcess, seen: set[tuple[int, int]]) -> GpuProcess:
        owner = self._owner(process.pid, seen)
        return process.model_copy(
            update={"job_id": owner.job_id, "attempt": owner.attempt, "note": owner.note}
        )

    def _owner(self, pid: int, seen: set[tuple[int, int]]) -> Owner:
        try:
            started = start_time(self._proc, pid)
        except (FileNotFoundError, ProcessLookupError):
            return GONE
        except PermissionError:
            return Owner(None, None, f"cannot read /proc/{pid}/stat: {PRIVILEGE_HINT}")
        key = (pid, started)
        seen.add(key)
        owner = self._known.get(key)
        if owner is None:
            owner = read_owner(self._proc, pid)
            if owner is not GONE:
                self._known[key] = owner
        return owner


def start_time(proc: Path, pid: int) -> int:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    stat = (proc / str(pid) / "stat").read_bytes()
    # The command name (field 2) is in parentheses and may hold anything, ")" included.
    after_name = stat[stat.rindex(b")") + 2 :]
    return int(after_name.split()[19])


def read_owner(proc: Path, pid: int) -> Owner:
    try:
        environ = (proc / str(pid) / "environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return GONE
    except PermissionError:
        return Owner(None, None, f"cannot read its environment: {PRIVILEGE_HINT}")
    return owner_from_environ(environ)


def owner_from_environ(environ: bytes) -> Owner:
    """The job named in a NUL-separated environment block."""
    job_raw: bytes | None = None
    attempt_raw: bytes | None = None
    for entry in environ.split(b"\0"):
        if entry.startswith(JOB_ID_VARIABLE):
            job_raw = entry[len(JOB_ID_VARIABLE) :]
        elif entry.startswith(ATTEMPT_VARIABLE):
            attempt_raw = entry[len(ATTEMPT_VARIABLE) :]
    if job_raw is None:
        return NO_JOB
    job_id = job_raw.decode("utf-8", "replace")
    if not JOB_ID.fullmatch(job_id):
        return Owner(None, None, f"GPUPOOL_JOB_ID is not a job id: {quoted(job_id)}")
    if attempt_raw is None:
        return Owner(job_id, None, "no GPUPOOL_ATTEMPT in its environment")
    text = attempt_raw.decode("utf-8", "replace")
    if not ATTEMPT.fullmatch(text):
        return Owner(job_id, None, f"GPUPOOL_ATTEMPT is not a number: {quoted(text)}")
    return Owner(job_id, int(text))


def quoted(value: str) -> str:
    """A value any process may have set, quoted with its odd characters escaped and cut to
    60 characters: a note longer than the schema allows would make the server refuse the
    whole report (and a user could keep a node from reporting)."""
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."
