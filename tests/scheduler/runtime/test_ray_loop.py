"""The whole path on a real Ray cluster: jobs submitted through the services, the scheduling loop
over the database (ticked by the test, on the wall clock: Ray needs real time), and the real
RayDispatcher on the session's cluster (tests/conftest.py: gpu-01 and gpu-02, 4 fake GPUs
each; the database's nodes have the same names). Jobs print where they ran and which GPUs
they got; the tests read that back through the API's log service.

SQLite only: the loop's PostgreSQL side is covered by test_loop.py, and Ray's time is what
these tests cost. Each test takes job ids of its own (Ray keeps every submission id of the
session) and leaves nothing running in Ray.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine

from scheduler.core import Policy
from scheduler.runtime.clock import SystemClock
from scheduler.runtime.loop import SchedulingLoop
from scheduler.runtime.ports import DispatchError
from scheduler.runtime.ray_dispatcher import RayDispatcher
from tests.scheduler.runtime.conftest import AlwaysLeader, ManualClock, PoolRows
from tests.scheduler.runtime.ray_cluster import LocalRayCluster, free_port
from web.db import write_session
from web.models import Flavor, Job, JobCreate, JobState, Sector
from web.services import jobs
from web.services.logs import read_logs
from web.services.scheduling import DbDecisionSink, DbSnapshotSource
from web.settings import Settings

GRACE = 2.0  # SIGTERM to SIGKILL, and until a stopped job's GPUs count as free
LIMITS = jobs.SubmitLimits(default_max_runtime_s=3600.0, max_array_size=10)
SHOW = 'echo "node=$GPUPOOL_TEST_NODE gpus=$CUDA_VISIBLE_DEVICES attempt=$GPUPOOL_ATTEMPT"'
FIRST_ID = 100_000  # this module's job ids start here (test_ray_dispatcher.py counts from 1)
_first_ids = itertools.count(FIRST_ID, 1_000)


class WallClock(ManualClock):
    """The real time, for the rows' timestamps as for the loop."""

    def now(self) -> float:
        return time.time()


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'data' / 'gpupool.db'}"


@pytest.fixture
def manual_clock() -> ManualClock:
    return WallClock()


@dataclass
class RayLive:
    engine: Engine
    rows: PoolRows
    cluster: LocalRayCluster
    settings: Settings
    loop: SchedulingLoop
    policy: Policy

    def dispatcher(self) -> RayDispatcher:
        return RayDispatcher(
            SystemClock(), self.cluster.address, self.cluster.token, 0.0, grace_s=GRACE
        )

    def new_loop(self) -> SchedulingLoop:
        """A control plane started afresh over the same database: new dispatcher, new loop
        (its first tick takes over)."""
        self.loop = SchedulingLoop(
            DbSnapshotSource(self.engine),
            DbDecisionSink(self.engine, GRACE, self.policy.half_life_s),
            self.dispatcher(),
            SystemClock(),
            self.policy,
            AlwaysLeader(),
        )
        return self.loop

    def submit(self, project: str, gpus: int, entrypoint: str, limit: str = "10m") -> int:
        spec = JobCreate(project=project, gpus=gpus, flavor="H100", entrypoint=entrypoint)
        spec.time = limit
        with write_session(self.engine) as session:
            done = jobs.submit(session, self.rows.principal(project), spec, time.time(), LIMITS)
        job_id = done.jobs[0].id
        assert job_id is not None
        return job_id

    def cancel(self, project: str, job_id: int) -> None:
        with write_session(self.engine) as session:
            jobs.cancel(session, self.rows.principal(project), job_id, time.time())

    def until(self, what: str, done: Callable[[], bool], timeout_s: float = 40.0) -> float:
        """Tick the loop until `done()`; the seconds it took."""
        began = time.monotonic()
        while True:
            self.loop.tick()
            if done():
                return time.monotonic() - began
            if time.monotonic() - began > timeout_s:
                raise AssertionError(f"not {what} within {timeout_s} s: {self.rows.states()}")
            time.sleep(0.1)

    def state(self, job_id: int) -> str:
        return self.rows.get(job_id).state

    def in_state(self, state: JobState, *job_ids: int) -> Callable[[], bool]:
        return lambda: all(self.state(j) == state.value for j in job_ids)

    def ray_status(self, job_id: int, attempt: int) -> str | None:
        found = {job.submission_id: job for job in self.ray().list_jobs()}
        job = found.get(f"{job_id}-{attempt}")
        return None if job is None else job.status.value

    def ray_submissions(self, job_id: int) -> list[str]:
        prefix = f"{job_id}-"
        return sorted(
            j.submission_id or ""
            for j in self.ray().list_jobs()
            if (j.submission_id or "").startswith(prefix)
        )

    def output(self, project: str, job_id: int, attempt: int | None = None) -> dict[str, str]:
        """The `SHOW` line the attempt printed, read as GET /jobs/{id}/logs reads it."""
        deadline = time.monotonic() + 20
        while True:
            text = read_logs(
                self.engine, self.settings, self.rows.principal(project), job_id, attempt
            ).text.decode()
            line = next((x for x in text.splitlines() if x.startswith("node=")), None)
            if line is not None:
                return dict(part.split("=", 1) for part in line.split())
            assert time.monotonic() < deadline, f"no output from job {job_id}: {text!r}"
            time.sleep(0.2)

    def ray(self) -> Any:
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.cluster.address, headers=self.cluster.headers)


@pytest.fixture
def live(
    engine: Engine, rows: PoolRows, ray_cluster: LocalRayCluster, tmp_path: Path
) -> Iterator[RayLive]:
    with write_session(engine) as s:
        s.add_all([Flavor(name="H100"), Sector(name="research")])
    rows.node("gpu-01", gpus=4)
    rows.node("gpu-02", gpus=4)
    settings = Settings(
        data_dir=tmp_path / "data",
        dispatcher="ray",
        ray_address=ray_cluster.address,
        ray_token=SecretStr(ray_cluster.token),
    )
    policy = Policy.gpupool(grace_period_s=GRACE)
    harness = RayLive(engine, rows, ray_cluster, settings, None, policy)  # type: ignore[arg-type]
    harness.new_loop()
    try:
        yield harness
    finally:
        stop_everything(ray_cluster)


def first_ids_of_this_test(rows: PoolRows, project: str) -> None:
    """The next job gets an id no other test of the session has given Ray (SQLite gives
    max(id) + 1: a placeholder row, ended)."""
    first = next(_first_ids)
    with write_session(rows.engine) as s:
        s.add(
            Job(
                id=first - 1,
                project=project,
                user=f"{project}-user",
                entrypoint="placeholder",
                gpus=1,
                flavor="H100",
                max_runtime_s=1,
                state=JobState.CANCELLED.value,
            )
        )


def stop_everything(cluster: LocalRayCluster, timeout_s: float = 30.0) -> None:
    """Stop every job of these tests still running in Ray and wait for their ends (GPUs free
    for the next test). Other modules' jobs are theirs (some wait in Ray for good, for a
    node that is not there)."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(cluster.address, headers=cluster.headers)
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [
            key
            for j in client.list_jobs()
            if (key := j.submission_id or "").partition("-")[0].isdigit()
            and int(key.partition("-")[0]) >= FIRST_ID
            and not j.status.is_terminal()
        ]
        if not alive:
            return
        for key in alive:
            client.stop_job(key)
        assert time.monotonic() < deadline, f"still running in Ray: {alive}"
        time.sleep(0.3)


# --- the tests -----------------------------------------------------------------------------


def test_a_job_runs_in_ray_on_its_node_with_its_gpus_and_cancel_and_timeout_stop_it(
    live: RayLive,
) -> None:
    live.rows.project("a", guaranteed=8, limit=8)
    first_ids_of_this_test(live.rows, "a")
    long = live.submit("a", 3, f"{SHOW}; sleep 600")
    short = live.submit("a", 1, f"{SHOW}; sleep 600", limit="4s")

    live.until("running", live.in_state(JobState.RUNNING, long, short))

    for job_id, gpus in ((long, 3), (short, 1)):
        (piece,) = live.rows.allocations(job_id)
        assert piece.gpus == gpus
        assert live.ray_status(job_id, 1) == "RUNNING"
        shown = live.output("a", job_id)
        assert shown["node"] == piece.node  # exactly where the scheduler put it
        assert len(shown["gpus"].split(",")) == gpus
        assert shown["attempt"] == "1"

    live.cancel("a", long)
    live.until("ended", live.in_state(JobState.CANCELLED, long))
    live.until("timed out", live.in_state(JobState.TIMEOUT, short), timeout_s=20)

    assert live.rows.open_allocations() == []  # every GPU free
    assert live.ray_status(long, 1) == live.ray_status(short, 1) == "STOPPED"
    assert live.rows.get(long).outcome == "stopped: cancelled"
    (attempt,) = live.rows.attempts(short)
    assert attempt.ended_at is not None and attempt.started_at is not None
    assert 4 <= attempt.ended_at - attempt.started_at < 4 + GRACE + 8
    assert live.ray_submissions(long) == [f"{long}-1"]


def test_an_in_quota_job_reclaims_a_borrowers_gpus_and_the_borrower_runs_again(
    live: RayLive,
) -> None:
    live.rows.project("a", guaranteed=0, limit=8)  # borrows everything it runs
    live.rows.project("b", guaranteed=8, limit=8)
    first_ids_of_this_test(live.rows, "a")
    borrowers = [live.submit("a", 4, f"{SHOW}; sleep 600") for _ in range(2)]
    live.until("running", live.in_state(JobState.RUNNING, *borrowers))
    assert all(live.rows.get(j).borrowed for j in borrowers)

    owner = live.submit("b", 4, f"{SHOW}; sleep 1")
    live.until(
        "preempted",
        lambda: (
            any(live.rows.get(j).stop_reason == "preempted" for j in borrowers)
            or any(len(live.rows.attempts(j)) > 1 for j in borrowers)
        ),
    )
    (preempted,) = [j for j in borrowers if live.rows.get(j).preempted_for == owner]
    live.until("run and done", live.in_state(JobState.SUCCEEDED, owner))
    live.until(
        "back", lambda: live.rows.get(preempted).attempt == 2 and live.state(preempted) == "running"
    )

    first, second = live.rows.attempts(preempted)
    assert first.outcome == "preempted"
    assert second.ended_at is None
    assert live.ray_status(preempted, 1) == "STOPPED"
    assert live.ray_status(preempted, 2) == "RUNNING"
    assert live.ray_submissions(preempted) == [f"{preempted}-1", f"{preempted}-2"]
    assert live.output("a", preempted)["attempt"] == "2"
    (owners,) = live.rows.allocations(owner)
    (took_over,) = live.rows.allocations(preempted, attempt=1)
    assert owners.node == took_over.node  # b ran on the GPUs a gave back
    other = next(j for j in borrowers if j != preempted)
    assert live.state(other) == "running" and live.rows.get(other).attempt == 1


def test_a_control_plane_restart_keeps_running_jobs_and_records_what_ended_meanwhile(
    live: RayLive,
) -> None:
    live.rows.project("a", guaranteed=8, limit=8)
    first_ids_of_this_test(live.rows, "a")
    long = live.submit("a", 2, f"{SHOW}; sleep 600")
    brief = live.submit("a", 2, f"{SHOW}; sleep 2; exit 4")
    live.until("running", live.in_state(JobState.RUNNING, long, brief))
    before = {j: live.rows.allocations(j) for j in (long, brief)}

    # The control plane dies (no goodbye to Ray); the brief job ends while it is down.
    deadline = time.monotonic() + 30
    while live.ray_status(brief, 1) != "FAILED":
        assert time.monotonic() < deadline
        time.sleep(0.2)

    live.new_loop()  # a new process: a new dispatcher, a new loop over the same database
    live.until("ended", live.in_state(JobState.FAILED, brief), timeout_s=20)
    for _ in range(5):  # a few more ticks: nothing is started again, nothing lost
        live.loop.tick()
        time.sleep(0.1)

    assert live.state(long) == "running"
    assert live.rows.get(long).attempt == 1
    assert live.rows.allocations(long) == before[long]
    assert live.ray_status(long, 1) == "RUNNING"
    assert live.ray_submissions(long) == [f"{long}-1"]  # not run twice
    assert live.ray_submissions(brief) == [f"{brief}-1"]
    assert live.rows.get(brief).outcome.startswith("exit code 4")
    assert [a.end is not None for a in live.rows.allocations(brief)] == [True]


class Relay:
    """A TCP relay to the Ray dashboard on a port of its own: Ray "comes back" when the relay
    starts listening (until then nothing listens there: connections are refused)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.address = f"http://127.0.0.1:{self.port}"
        self._server: socket.socket | None = None

    def open(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port))
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def test_while_ray_is_away_jobs_wait_and_they_start_when_it_is_back(live: RayLive) -> None:
    live.rows.project("a", guaranteed=8, limit=8)
    first_ids_of_this_test(live.rows, "a")
    relay = Relay(live.cluster.dashboard_port)
    live.loop.dispatcher = RayDispatcher(
        SystemClock(), relay.address, live.cluster.token, 0.0, grace_s=GRACE, retry_s=0.5
    )
    job = live.submit("a", 2, f"{SHOW}; sleep 600")
    try:
        for _ in range(5):  # Ray cannot be reached: the ticks fail quietly, the job waits
            with pytest.raises(DispatchError, match="is unreachable"):
                live.loop.tick()
            time.sleep(0.1)
        assert live.state(job) == "queued" and live.rows.open_allocations() == []

        relay.open()
        live.until("running", live.in_state(JobState.RUNNING, job))
        assert live.ray_submissions(job) == [f"{job}-1"]
    finally:
        relay.close()
