"""Attribution of GPU processes to jobs through their environment in /proc."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.attribution import GONE, NO_JOB, Attributor, Owner, owner_from_environ
from agents.schema import GpuProcess, GpuSample
from tests.agents.conftest import REPO

Start = Callable[[dict[str, str]], int]


def sample(*pids: int) -> GpuSample:
    processes = [GpuProcess(pid=pid, used_memory_bytes=1) for pid in pids]
    return GpuSample(index=0, uuid="GPU-a", processes=processes)


def test_the_job_comes_from_the_environment() -> None:
    environ = b"PATH=/bin\0GPUPOOL_JOB_ID=123\0GPUPOOL_PROJECT=p\0GPUPOOL_ATTEMPT=4\0"
    assert owner_from_environ(environ) == Owner("123", 4)
    assert owner_from_environ(b"PATH=/bin\0HOME=/root\0") == NO_JOB
    assert owner_from_environ(b"") == NO_JOB
    assert owner_from_environ(b"GPUPOOL_JOB_ID=7") == Owner(
        "7", None, "no GPUPOOL_ATTEMPT in its environment"
    )
    assert owner_from_environ(b"GPUPOOL_JOB_ID=7\0GPUPOOL_ATTEMPT=x1\0") == Owner(
        "7", None, "GPUPOOL_ATTEMPT is not a number: 'x1'"
    )
    too_long = b"GPUPOOL_JOB_ID=" + b"9" * 40
    assert owner_from_environ(too_long).job_id is None
    assert owner_from_environ(too_long).note.startswith("GPUPOOL_JOB_ID is not a job id")
    # A variable that only ends like ours is not ours.
    assert owner_from_environ(b"MY_GPUPOOL_JOB_ID=5\0") == NO_JOB


@pytest.mark.parametrize(
    "environ",
    [
        b"GPUPOOL_JOB_ID=7\n\0GPUPOOL_ATTEMPT=1\0",  # "$" lets a trailing newline match
        b"GPUPOOL_JOB_ID=7\0GPUPOOL_ATTEMPT=1\n\0",
        b"GPUPOOL_JOB_ID=" + b"\x01" * 60,  # escaped, 240 characters: over the note's 200
        b"GPUPOOL_JOB_ID=7\0GPUPOOL_ATTEMPT=" + "\u2028".encode() * 60,
    ],
)
def test_what_any_process_sets_never_makes_a_report_the_server_refuses(environ: bytes) -> None:
    """A user's process sets its environment: whatever it holds, the process's entry must
    pass the schema, or the server refuses the node's whole report, every poll."""
    owner = owner_from_environ(environ)
    GpuProcess.model_validate(
        {"pid": 1, "job_id": owner.job_id, "attempt": owner.attempt, "note": owner.note}
    )


@settings(max_examples=100, deadline=None)
@given(job_id=st.binary(max_size=300), attempt=st.binary(max_size=300))
def test_any_environment_gives_an_entry_the_schema_takes(job_id: bytes, attempt: bytes) -> None:
    environ = b"PATH=/bin\0GPUPOOL_JOB_ID=" + job_id + b"\0GPUPOOL_ATTEMPT=" + attempt
    owner = owner_from_environ(environ)
    GpuProcess.model_validate(
        {"pid": 1, "job_id": owner.job_id, "attempt": owner.attempt, "note": owner.note}
    )


def test_real_processes_are_attributed(job_processes: Start) -> None:
    job = job_processes({"GPUPOOL_JOB_ID": "31", "GPUPOOL_ATTEMPT": "1"})
    other = job_processes({"SOMETHING": "else"})
    (attributed,) = Attributor().attribute([sample(job, other)])
    assert [(p.pid, p.job_id, p.attempt, p.note) for p in attributed.processes] == [
        (job, "31", 1, ""),
        (other, None, None, ""),
    ]
    assert attributed.processes[0].used_memory_bytes == 1  # the rest is kept


def test_a_process_gone_is_said_so() -> None:
    gone = int(Path("/proc/sys/kernel/pid_max").read_text())
    assert Attributor().owner_of(gone) == GONE
    assert GONE.job_id is None and "ended" in GONE.note


def fake_process(proc: Path, pid: int, started: int, environ: bytes) -> None:
    directory = proc / str(pid)
    directory.mkdir(parents=True, exist_ok=True)
    # The command name may hold spaces and parentheses: fields are counted after the last ")".
    fields = ["S", "1", "1", "1", "0", "-1", "4194560"] + ["0"] * 12 + [str(started), "0"]
    (directory / "stat").write_text(f"{pid} (a (b) c) " + " ".join(fields) + "\n")
    (directory / "environ").write_bytes(environ)


def test_an_environment_is_read_once_per_process(tmp_path: Path) -> None:
    fake_process(tmp_path, 500, started=1_000, environ=b"GPUPOOL_JOB_ID=1\0GPUPOOL_ATTEMPT=1\0")
    attributor = Attributor(tmp_path)
    assert attributor.attribute([sample(500)])[0].processes[0].job_id == "1"
    # The same process (same start time): its environment is not read again.
    (tmp_path / "500" / "environ").write_bytes(b"GPUPOOL_JOB_ID=changed\0")
    assert attributor.attribute([sample(500)])[0].processes[0].job_id == "1"
    # Another process with the same pid (a later start): read again.
    fake_process(tmp_path, 500, started=2_000, environ=b"GPUPOOL_JOB_ID=2\0GPUPOOL_ATTEMPT=3\0")
    (process,) = attributor.attribute([sample(500)])[0].processes
    assert (process.job_id, process.attempt) == ("2", 3)


def test_processes_no_longer_seen_are_forgotten(tmp_path: Path) -> None:
    fake_process(tmp_path, 600, started=1, environ=b"GPUPOOL_JOB_ID=6\0GPUPOOL_ATTEMPT=1\0")
    attributor = Attributor(tmp_path)
    attributor.attribute([sample(600)])
    attributor.attribute([sample()])
    (tmp_path / "600" / "environ").write_bytes(b"GPUPOOL_JOB_ID=other\0GPUPOOL_ATTEMPT=1\0")
    assert attributor.attribute([sample(600)])[0].processes[0].job_id == "other"


PROBE_AS_NOBODY = """
import json, os, sys
from agents.attribution import Attributor
attributor = Attributor()
os.setgid(65534)
os.setuid(65534)
owner = attributor.owner_of(int(sys.argv[1]))
print(json.dumps([owner.job_id, owner.attempt, owner.note]))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a probe as another user")
def test_an_environment_the_agent_may_not_read_is_said_so(job_processes: Start) -> None:
    job = job_processes({"GPUPOOL_JOB_ID": "8", "GPUPOOL_ATTEMPT": "1"})
    done = subprocess.run(
        [sys.executable, "-c", PROBE_AS_NOBODY, str(job)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    job_id, attempt, note = json.loads(done.stdout)
    assert (job_id, attempt) == (None, None)
    assert note == "cannot read its environment: run the agent as root or with CAP_SYS_PTRACE"
