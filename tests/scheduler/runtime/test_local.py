"""The local dispatcher with real processes: env and GPUs handed to the job, exits, stops
(SIGTERM, then SIGKILL after the grace period) and the starts it refuses."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scheduler.core.types import Piece
from scheduler.runtime.local import LocalProcessDispatcher
from scheduler.runtime.ports import (
    DispatchError,
    EventKind,
    JobEvent,
    StartOrder,
    StopOrder,
    StopWhy,
)

ENDED = {EventKind.SUCCEEDED, EventKind.FAILED, EventKind.STOPPED, EventKind.LOST}


class WallClock:
    def now(self) -> float:
        return time.time()


@pytest.fixture
def dispatcher(tmp_path: Path) -> Iterator[LocalProcessDispatcher]:
    d = LocalProcessDispatcher(WallClock(), tmp_path / "logs")
    yield d
    d.close(grace_s=0.5)


def order(
    job_id: str,
    entrypoint: str,
    pieces: tuple[Piece, ...] = (("n1", 2),),
    attempt: int = 0,
    **runtime_env: Any,
) -> StartOrder:
    return StartOrder(
        job_id, attempt, "proj", "alice", entrypoint, "H100", pieces, 3600.0, runtime_env
    )


def stop(job_id: str, grace_s: float = 5.0, attempt: int = 0) -> StopOrder:
    return StopOrder(job_id, attempt, grace_s, StopWhy.CANCELLED)


def wait_until_ended(
    d: LocalProcessDispatcher, job_id: str, timeout_s: float = 10.0
) -> list[JobEvent]:
    """Poll until `job_id` ends; every event seen meanwhile, in order."""
    seen: list[JobEvent] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen += d.poll()
        if any(e.job_id == job_id and e.kind in ENDED for e in seen):
            return seen
        time.sleep(0.01)
    raise AssertionError(f"{job_id} did not end within {timeout_s} s; saw {seen}")


def last(events: list[JobEvent], job_id: str) -> JobEvent:
    return [e for e in events if e.job_id == job_id][-1]


def wait_for_log(d: LocalProcessDispatcher, job_id: str, text: str, timeout_s: float = 5.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        path = d.log_path(job_id, 0)
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.01)
    raise AssertionError(f"{text!r} not in the log of {job_id}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie nobody has reaped yet counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def test_job_sees_its_gpus_and_identity_and_succeeds(dispatcher: LocalProcessDispatcher) -> None:
    dispatcher.start(
        order(
            "j1", 'echo "$CUDA_VISIBLE_DEVICES $GPUPOOL_JOB_ID $GPUPOOL_ATTEMPT $GPUPOOL_PROJECT"'
        )
    )
    events = wait_until_ended(dispatcher, "j1")
    assert [e.kind for e in events] == [EventKind.RUNNING, EventKind.SUCCEEDED]
    assert events[-1].message == "exit code 0"
    assert dispatcher.log_path("j1", 0).read_text() == "0,1 j1 0 proj\n"


def test_env_vars_and_working_dir_are_applied(
    dispatcher: LocalProcessDispatcher, tmp_path: Path
) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    dispatcher.start(
        order(
            "j1",
            'echo "$FOO $(pwd) $CUDA_VISIBLE_DEVICES"',
            env_vars={"FOO": "bar", "CUDA_VISIBLE_DEVICES": "7"},
            working_dir=str(workdir),
        )
    )
    wait_until_ended(dispatcher, "j1")
    # The job's own CUDA_VISIBLE_DEVICES cannot move it onto GPUs it was not given.
    assert dispatcher.log_path("j1", 0).read_text() == f"bar {workdir.resolve()} 0,1\n"


def test_concurrent_jobs_on_one_node_get_disjoint_gpus(
    dispatcher: LocalProcessDispatcher,
) -> None:
    dispatcher.start(order("a", "echo $CUDA_VISIBLE_DEVICES; sleep 60"))
    dispatcher.start(order("b", "echo $CUDA_VISIBLE_DEVICES; sleep 60", pieces=(("n1", 3),)))
    dispatcher.start(order("c", "echo $CUDA_VISIBLE_DEVICES; sleep 60", pieces=(("n2", 1),)))
    assert wait_for_log(dispatcher, "a", "\n") == "0,1\n"
    assert wait_for_log(dispatcher, "b", "\n") == "2,3,4\n"
    assert wait_for_log(dispatcher, "c", "\n") == "0\n"  # another node has its own indices

    dispatcher.stop(stop("a"))
    wait_until_ended(dispatcher, "a")
    dispatcher.start(order("d", "echo $CUDA_VISIBLE_DEVICES", pieces=(("n1", 1),)))
    wait_until_ended(dispatcher, "d")
    assert dispatcher.log_path("d", 0).read_text() == "0\n"  # freed by a: lowest first


def test_multi_node_order_runs_one_process_describing_all_pieces(
    dispatcher: LocalProcessDispatcher,
) -> None:
    dispatcher.start(
        order("j1", 'echo "$CUDA_VISIBLE_DEVICES $GPUPOOL_NODES"', pieces=(("a", 2), ("b", 4)))
    )
    wait_until_ended(dispatcher, "j1")
    assert dispatcher.log_path("j1", 0).read_text() == "0,1 a:2,b:4\n"


def test_nonzero_exit_fails_with_its_code(dispatcher: LocalProcessDispatcher) -> None:
    dispatcher.start(order("j1", "echo oops >&2; exit 3"))
    event = last(wait_until_ended(dispatcher, "j1"), "j1")
    assert (event.kind, event.message) == (EventKind.FAILED, "exit code 3")
    assert dispatcher.log_path("j1", 0).read_text() == "oops\n"  # stderr goes to the log


def test_death_by_signal_is_named(dispatcher: LocalProcessDispatcher) -> None:
    dispatcher.start(order("j1", "kill -KILL $$"))
    event = last(wait_until_ended(dispatcher, "j1"), "j1")
    assert (event.kind, event.message) == (EventKind.FAILED, "killed by signal SIGKILL")


def test_stop_ends_a_running_job_quickly(dispatcher: LocalProcessDispatcher) -> None:
    dispatcher.start(order("j1", "sleep 60"))
    assert [e.kind for e in dispatcher.poll()] == [EventKind.RUNNING]
    began = time.monotonic()
    dispatcher.stop(stop("j1"))
    dispatcher.stop(stop("j1"))  # idempotent
    event = last(wait_until_ended(dispatcher, "j1"), "j1")
    assert (event.kind, event.message) == (EventKind.STOPPED, "stopped: cancelled")
    assert time.monotonic() - began < 2.0


def test_a_job_ignoring_sigterm_is_killed_after_the_grace_period(
    dispatcher: LocalProcessDispatcher, tmp_path: Path
) -> None:
    pidfile = tmp_path / "child.pid"
    dispatcher.start(order("j1", f"trap '' TERM; sleep 60 & echo $! > {pidfile}; echo ready; wait"))
    wait_for_log(dispatcher, "j1", "ready")
    began = time.monotonic()
    dispatcher.stop(stop("j1", grace_s=0.5))
    time.sleep(0.2)
    assert not [e for e in dispatcher.poll() if e.kind in ENDED]  # SIGTERM was ignored
    event = last(wait_until_ended(dispatcher, "j1"), "j1")
    assert (event.kind, event.message) == (EventKind.STOPPED, "stopped: cancelled")
    assert time.monotonic() - began >= 0.5
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 2.0
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(child)  # the whole group was killed


def test_processes_left_behind_by_a_finished_job_are_killed(
    dispatcher: LocalProcessDispatcher, tmp_path: Path
) -> None:
    pidfile = tmp_path / "child.pid"
    dispatcher.start(order("j1", f"sleep 60 > /dev/null 2>&1 & echo $! > {pidfile}"))
    event = last(wait_until_ended(dispatcher, "j1"), "j1")
    assert event.kind is EventKind.SUCCEEDED
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 2.0
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(child)


def test_stopping_unknown_or_finished_jobs_does_nothing(
    dispatcher: LocalProcessDispatcher,
) -> None:
    dispatcher.stop(stop("nobody"))
    dispatcher.start(order("j1", "true"))
    wait_until_ended(dispatcher, "j1")
    dispatcher.stop(stop("j1"))
    assert dispatcher.poll() == []


def test_duplicate_start_runs_once(dispatcher: LocalProcessDispatcher, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    start = order("j1", f"echo run >> {counter}")
    dispatcher.start(start)
    dispatcher.start(start)
    events = wait_until_ended(dispatcher, "j1")
    dispatcher.start(start)  # even once it has finished
    events += dispatcher.poll()
    assert [e.kind for e in events] == [EventKind.RUNNING, EventKind.SUCCEEDED]
    assert counter.read_text() == "run\n"
    dispatcher.start(order("j1", f"echo run >> {counter}", attempt=1))  # a new attempt runs
    wait_until_ended(dispatcher, "j1")
    assert counter.read_text() == "run\nrun\n"


@pytest.mark.parametrize("env_vars", [{"N": 1}, ["A=b"], {"OK": "yes", "NONE": None}])
def test_env_vars_that_are_not_strings_are_refused_for_good(
    dispatcher: LocalProcessDispatcher, env_vars: object
) -> None:
    with pytest.raises(DispatchError, match=r"runtime_env\.env_vars") as refused:
        dispatcher.start(order("j1", "true", env_vars=env_vars))
    assert refused.value.permanent
    assert dispatcher.poll() == []


@pytest.mark.parametrize("kind", ["missing", "file", "not a string"])
def test_bad_working_dir_is_refused_for_good(
    dispatcher: LocalProcessDispatcher, tmp_path: Path, kind: str
) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    working_dir = {"missing": str(tmp_path / "nope"), "file": str(a_file), "not a string": 42}
    with pytest.raises(DispatchError, match=r"runtime_env\.working_dir") as refused:
        dispatcher.start(order("j1", "true", working_dir=working_dir[kind]))
    assert refused.value.permanent


def test_a_start_that_cannot_happen_is_retried_not_failed(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    d = LocalProcessDispatcher(WallClock(), blocker / "logs")  # no directory can go there
    with pytest.raises(DispatchError) as refused:
        d.start(order("j1", "true"))
    assert not refused.value.permanent
    assert d.poll() == []


def test_close_terminates_what_runs_and_refuses_later_starts(tmp_path: Path) -> None:
    d = LocalProcessDispatcher(WallClock(), tmp_path)
    d.start(order("a", "echo $$; sleep 60"))
    d.start(order("b", "trap '' TERM; echo $$; sleep 60"))
    pids = [int(wait_for_log(d, job_id, "\n")) for job_id in ("a", "b")]
    began = time.monotonic()
    d.close(grace_s=0.3)
    assert time.monotonic() - began < 2.0
    assert not any(alive(pid) for pid in pids)
    with pytest.raises(DispatchError) as refused:
        d.start(order("c", "true"))
    assert not refused.value.permanent
