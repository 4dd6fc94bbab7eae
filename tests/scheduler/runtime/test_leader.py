"""Leader election: exactly one scheduling loop acts on a database.

FileLeadership (SQLite, one machine): an flock on a file, freed by the kernel when its
holder dies. PostgresLeadership: a session advisory lock, freed when its connection goes.
Then two real SchedulingLoop.run() threads on one database: one ticks, the other stands by
and takes over when the first stops.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from scheduler.runtime.fake import InProcessDispatcher
from scheduler.runtime.loop import SchedulingLoop
from web.db import make_engine
from web.models import JobState
from web.services.leader import FileLeadership, PostgresLeadership, leadership_for
from web.services.scheduling import DbDecisionSink, DbSnapshotSource
from web.settings import Settings

from .conftest import GRACE, ManualClock, PoolRows

REPO = Path(__file__).resolve().parents[3]
DEADLINE_S = 10.0


def eventually(condition: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
    """Poll `condition` until it holds; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for: {what}")
        time.sleep(0.01)


# --- FileLeadership ------------------------------------------------------------------------


def test_file_lock_admits_one_holder_until_it_releases(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "gpupool.leader"  # the directory is made on demand
    first, second = FileLeadership(path), FileLeadership(path)

    assert first.try_acquire() is True
    assert first.try_acquire() is True  # asking again while leading: still leading
    assert second.try_acquire() is False
    assert (first.held(), second.held()) == (True, False)
    assert path.read_text() == f"{os.getpid()}\n"

    first.release()
    assert first.held() is False
    assert second.try_acquire() is True
    assert first.try_acquire() is False
    second.release()
    second.release()  # harmless


CHILD = """
import sys, time
from pathlib import Path
from web.services.leader import FileLeadership
lead = FileLeadership(Path(sys.argv[1]))
print(lead.try_acquire(), flush=True)
time.sleep(60)
"""


@pytest.fixture
def child_leader(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """A separate process that takes the file lock and keeps it until killed."""
    path = tmp_path / "gpupool.leader"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], DEADLINE_S)
        assert ready, "the child did not report in time"
        assert proc.stdout.readline().strip() == "True"
        yield proc, path
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=DEADLINE_S)
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_file_lock_held_by_a_killed_process_is_freed(
    child_leader: tuple[subprocess.Popen[str], Path],
) -> None:
    proc, path = child_leader
    mine = FileLeadership(path)
    assert path.read_text() == f"{proc.pid}\n"
    assert mine.try_acquire() is False

    os.kill(proc.pid, signal.SIGKILL)  # no release, no clean-up: the kernel frees the lock
    proc.wait(timeout=DEADLINE_S)

    eventually(mine.try_acquire, "the dead process's lock to be free")
    assert mine.held()
    assert path.read_text() == f"{os.getpid()}\n"
    mine.release()


# --- PostgresLeadership --------------------------------------------------------------------

only_postgresql = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


def advisory_holders(engine: Engine) -> list[int]:
    with engine.connect() as c:
        return list(
            c.execute(
                text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND database = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database())"
                )
            ).scalars()
        )


@only_postgresql
def test_advisory_lock_admits_one_holder_until_it_releases(engine: Engine) -> None:
    first, second = PostgresLeadership(engine), PostgresLeadership(engine)

    assert first.try_acquire() is True
    assert first.try_acquire() is True
    assert second.try_acquire() is False
    assert (first.held(), second.held()) == (True, False)
    assert len(advisory_holders(engine)) == 1

    first.release()
    assert first.held() is False
    assert second.try_acquire() is True
    assert first.try_acquire() is False
    second.release()
    assert advisory_holders(engine) == []


@only_postgresql
def test_a_leader_whose_connection_is_killed_loses_the_lock(engine: Engine) -> None:
    first, second = PostgresLeadership(engine), PostgresLeadership(engine)
    assert first.try_acquire() is True
    assert second.try_acquire() is False
    [pid] = advisory_holders(engine)

    with engine.connect() as admin:  # say, the leader's host vanished and the server noticed
        assert admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()

    eventually(second.try_acquire, "the standby to take the lock")
    assert second.held() is True
    assert first.held() is False  # the old leader learns it no longer leads
    assert first.try_acquire() is False
    second.release()
    first.release()  # harmless after the loss


# --- two loops, one database ---------------------------------------------------------------


class LoopThread:
    """One scheduling loop as a server runs it, in a thread, with its own engine."""

    def __init__(
        self, settings: Settings, clock: ManualClock, name: str, engine: InProcessDispatcher
    ) -> None:
        self.engine = make_engine(settings)
        # The execution engine outlives either control plane (as a Ray cluster does).
        self.dispatcher = engine
        from scheduler.core import Policy

        policy = Policy.gpupool(grace_period_s=GRACE)
        self.loop = SchedulingLoop(
            DbSnapshotSource(self.engine),
            DbDecisionSink(self.engine, GRACE, policy.half_life_s),
            self.dispatcher,
            clock,
            policy,
            leadership_for(settings, self.engine),
            interval_s=0.02,
            standby_poll_s=0.02,
        )
        self.thread = threading.Thread(target=self.loop.run, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.loop.stop()
        self.thread.join(timeout=DEADLINE_S)
        assert not self.thread.is_alive(), "the loop did not stop"

    def close(self) -> None:
        if self.thread.is_alive():
            self.stop()
        self.engine.dispose()


@pytest.fixture
def two_loops(settings: Settings, engine: Engine) -> Iterator[tuple[LoopThread, LoopThread]]:
    clock = ManualClock()
    engine = InProcessDispatcher(clock)
    loops = (
        LoopThread(settings, clock, "loop-1", engine),
        LoopThread(settings, clock, "loop-2", engine),
    )
    try:
        yield loops
    finally:
        for loop in loops:
            loop.close()


def test_of_two_loops_only_the_leader_ticks_and_the_other_takes_over(
    two_loops: tuple[LoopThread, LoopThread], rows: PoolRows, caplog: pytest.LogCaptureFixture
) -> None:
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8)
    first_job = rows.job("a", gpus=4)
    for loop in two_loops:
        loop.start()

    eventually(lambda: any(t.loop.leading for t in two_loops), "one loop to lead")
    [leader] = [t for t in two_loops if t.loop.leading]
    [standby] = [t for t in two_loops if t is not leader]
    eventually(lambda: rows.get(first_job).state == JobState.RUNNING, "the first job to run")
    ticked = leader.loop.ticks
    eventually(lambda: leader.loop.ticks >= ticked + 5, "the leader to tick on")

    assert standby.loop.leading is False and standby.loop.ticks == 0
    assert leader.dispatcher.starts == [f"{first_job}-1"]

    leader.stop()  # a clean shutdown releases the lock
    assert leader.loop.leading is False

    eventually(lambda: standby.loop.leading, "the standby to lead")
    eventually(lambda: standby.loop.ticks > 0, "the new leader to tick")
    second_job = rows.job("a", gpus=4)
    standby.loop.wake()
    eventually(lambda: rows.get(second_job).state == JobState.RUNNING, "the second job to run")
    # The first job, still running on the engine, was neither resent nor requeued.
    assert standby.dispatcher.starts == [f"{first_job}-1", f"{second_job}-1"]
    assert rows.get(first_job).state == JobState.RUNNING and rows.get(first_job).attempt == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


@only_postgresql
def test_when_the_leaders_connection_is_killed_one_loop_leads_on(
    two_loops: tuple[LoopThread, LoopThread], rows: PoolRows, caplog: pytest.LogCaptureFixture
) -> None:
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8)
    for loop in two_loops:
        loop.start()
    eventually(lambda: any(t.loop.leading for t in two_loops), "one loop to lead")
    [leader] = [t for t in two_loops if t.loop.leading]
    eventually(lambda: leader.loop.ticks > 0, "the leader to tick")
    [pid] = advisory_holders(rows.engine)

    with rows.engine.connect() as admin:
        assert admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()

    def one_new_leader() -> bool:
        holders = advisory_holders(rows.engine)
        leading = [t for t in two_loops if t.loop.leading]
        return len(holders) == 1 and holders != [pid] and len(leading) == 1

    eventually(one_new_leader, "one loop to hold a new lock")
    [now_leading] = [t for t in two_loops if t.loop.leading]
    job_id = rows.job("a", gpus=4)
    now_leading.loop.wake()
    eventually(lambda: rows.get(job_id).state == JobState.RUNNING, "the job to run")
    # Both loops drive the one engine: it started the job once.
    assert now_leading.dispatcher.starts == [f"{job_id}-1"]
    assert "lost the leader lock" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
