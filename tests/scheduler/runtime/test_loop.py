"""The live loop, tick by tick, over the real database source and sink (SQLite and
PostgreSQL), a clock the test moves and the in-process dispatcher.

Each tick: events -> snapshot -> plan -> record (assume) -> dispatch. What a dispatch does
comes back as events on the *next* tick's poll.
"""

from __future__ import annotations

import pytest
from sqlmodel import select

from scheduler.core import plan
from scheduler.runtime.fake import InProcessDispatcher
from scheduler.runtime.ports import (
    Deposed,
    DispatchError,
    EventKind,
    JobEvent,
    NodeSighting,
    StartOrder,
    StopOrder,
    StopWhy,
)
from web.db import read_session, write_session
from web.models import Change, Job, JobState, JobUsage, Node, Project, ProjectState, Quota
from web.services import jobs

from .conftest import (
    GRACE,
    HOUR,
    T0,
    Live,
    ManualClock,
    PoolRows,
    StatementLog,
    make_live,
    pieces_of,
)


class HeldStops(InProcessDispatcher):
    """Records the stop orders it is given; they reach the engine only when the test says
    (deliver_stops), so a stopping job takes its grace period."""

    def __init__(self, clock: ManualClock, hold: bool = True) -> None:
        super().__init__(clock)
        self.hold = hold
        self.stop_orders: list[StopOrder] = []
        self._held: list[StopOrder] = []

    def stop(self, order: StopOrder) -> None:
        self.stop_orders.append(order)
        if self.hold:
            self._held.append(order)
        else:
            super().stop(order)

    def deliver_stops(self) -> None:
        held, self._held = self._held, []
        for order in held:
            super().stop(order)


def set_limit(rows: PoolRows, project: str, limit: int, flavor: str = "H100") -> None:
    with write_session(rows.engine) as s:
        quota = s.get(Quota, (project, flavor))
        assert quota is not None
        quota.limit = limit


# --- 1. admission -----------------------------------------------------------------------


def test_jobs_that_fit_are_admitted_in_one_tick_and_run_on_the_next(
    rows: PoolRows, live: Live
) -> None:
    rows.pool(nodes=2)
    rows.project("a", guaranteed=16, limit=16)
    small = rows.job("a", gpus=4, runtime_env={"env_vars": {"SEED": "1"}})
    whole = rows.job("a", gpus=8)

    report = live.tick()

    assert report.admitted == 2 and report.dispatch_failures == 0 and report.pending == 0
    for job_id, gpus in ((small, 4), (whole, 8)):
        row = rows.get(job_id)
        assert row.state == JobState.ADMITTED
        assert row.attempt == 1
        assert row.admitted_at == T0 and row.started_at is None
        assert row.flavor_used == "H100" and row.borrowed is False
        assert (row.reason_code, row.reason) == ("", "")
        held = rows.open_allocations(job_id)
        assert held and all(a.attempt == 1 and a.start == T0 and a.end is None for a in held)
        assert sum(a.gpus for a in held) == gpus
        [attempt] = rows.attempts(job_id)
        assert (attempt.number, attempt.gpus, attempt.admitted_at) == (1, gpus, T0)
        assert attempt.started_at is None and attempt.ended_at is None
        # The dispatcher got the very pieces the rows hold.
        order = live.dispatcher.runs[f"{job_id}-1"].order
        assert set(order.pieces) == pieces_of(held)
        assert (order.project, order.user, order.flavor) == ("a", "a-user", "H100")
        assert order.max_runtime_s == HOUR
    assert set(live.dispatcher.starts) == {f"{small}-1", f"{whole}-1"}
    assert live.dispatcher.runs[f"{small}-1"].order.runtime_env == {"env_vars": {"SEED": "1"}}
    # No GPU is held twice: 12 GPUs on two 8-GPU nodes, no node over its size.
    by_node: dict[str, int] = {}
    for a in rows.open_allocations():
        by_node[a.node] = by_node.get(a.node, 0) + a.gpus
    assert sum(by_node.values()) == 12 and max(by_node.values()) <= 8

    live.clock.advance(5)
    report = live.tick()

    assert report.events == 2 and report.admitted == 0
    for job_id in (small, whole):
        row = rows.get(job_id)
        assert row.state == JobState.RUNNING
        assert row.started_at == T0  # when the dispatcher started it, not when it was told
        assert row.attempt == 1
        assert rows.attempts(job_id)[0].started_at == T0
        assert rows.open_allocations(job_id)  # still held
    assert len(live.dispatcher.starts) == 2  # nothing started twice


def test_a_multi_node_job_gets_one_start_order_with_all_its_pieces(
    rows: PoolRows, live: Live
) -> None:
    rows.pool(nodes=3)
    rows.project("a", guaranteed=24, limit=24)
    gang = rows.job("a", gpus=16, nodes=2)

    live.tick()

    held = rows.open_allocations(gang)
    assert len(held) == 2 and {a.gpus for a in held} == {8}
    assert len({a.node for a in held}) == 2
    [key] = live.dispatcher.starts
    assert set(live.dispatcher.runs[key].order.pieces) == pieces_of(held)


def test_a_job_too_big_for_what_is_free_waits_and_nothing_is_dispatched(
    rows: PoolRows, live: Live
) -> None:
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8)
    first = rows.job("a", gpus=6)
    second = rows.job("a", gpus=4, submitted=T0 + 1)

    live.tick()

    assert rows.get(first).state == JobState.ADMITTED
    assert rows.get(second).state == JobState.QUEUED
    assert rows.open_allocations(second) == []
    assert live.dispatcher.starts == [f"{first}-1"]


# --- 2. reasons ---------------------------------------------------------------------------


def test_waiting_jobs_get_start_forecasts_from_their_users_history(
    rows: PoolRows, live: Live
) -> None:
    """Every waiting job gets an estimate with its range (not only the reserved one), from
    how long its user's jobs ran (their rows), not from the time limits."""
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=16)
    done = {rows.job("a", gpus=8): 600.0, rows.job("a", gpus=8): 1200.0}
    with write_session(rows.engine) as s:  # a-user's jobs ran 10 and 20 minutes
        for job_id, ran in done.items():
            row = s.get(Job, job_id)
            assert row is not None
            row.state, row.admitted_at = JobState.SUCCEEDED.value, T0 - 2 * HOUR
            row.started_at, row.ended_at = T0 - 2 * HOUR, T0 - 2 * HOUR + ran
    first = rows.job("a", gpus=8, runtime=4 * HOUR)
    live.tick()
    assert rows.get(first).state == JobState.ADMITTED
    second = rows.job("a", gpus=8, runtime=4 * HOUR, submitted=T0 + 1)
    third = rows.job("a", gpus=8, runtime=4 * HOUR, submitted=T0 + 2)
    live.clock.advance(60)
    live.tick()

    # first has run 60 s: its user's runs (600, 1200) say it ends at T0 + 600 (nearest-rank
    # median), between T0 + 600 and T0 + 1200; second follows it for as long again.
    ahead, behind = rows.get(second), rows.get(third)
    assert (ahead.est_start, ahead.est_start_earliest, ahead.est_start_latest) == (
        T0 + 600,
        T0 + 600,
        T0 + 1200,
    )
    assert (behind.est_start, behind.est_start_earliest, behind.est_start_latest) == (
        T0 + 1200,
        T0 + 1200,
        T0 + 2400,
    )
    assert ahead.est_unbounded == behind.est_unbounded == 0
    assert ahead.reason_code == "reserved" and behind.reason_code != "reserved"


def waiting_pool(rows: PoolRows, live: Live) -> dict[str, int]:
    """Two 8-GPU nodes, both taken after one tick (a: 8 in quota, b: 8 borrowed); then
    four jobs that cannot start, each for a different reason."""
    rows.pool(nodes=2)
    rows.project("a", guaranteed=8, limit=8)
    rows.project("b", guaranteed=0, limit=16)
    rows.project("c", guaranteed=8, limit=8, state=ProjectState.REQUESTED)
    rows.project("d", guaranteed=8, limit=8, credits=0.0)
    a1 = rows.job("a", gpus=8)
    b1 = rows.job("b", gpus=8, runtime=2 * HOUR)
    live.tick()
    assert {rows.get(a1).state, rows.get(b1).state} == {JobState.ADMITTED}
    return {
        "over_limit": rows.job("a", gpus=4),
        "reserved": rows.job("b", gpus=8),
        "capacity": rows.job("b", gpus=8, submitted=T0 + 1),
        "project": rows.job("c", gpus=1),
        "credits": rows.job("d", gpus=1),
    }


def test_every_waiting_job_carries_a_reason_after_a_tick(rows: PoolRows, live: Live) -> None:
    waiting = waiting_pool(rows, live)
    live.clock.advance(60)

    report = live.tick()

    assert report.admitted == 0 and report.pending == 5
    over = rows.get(waiting["over_limit"])
    assert over.state == JobState.QUEUED
    assert over.reason_code == "over_limit"
    assert "over limit" in over.reason and "project a" in over.reason
    assert over.est_start is None

    blocked = rows.get(waiting["reserved"])
    # The first blocked job of the flavor holds the backfill reservation: its est. start is
    # when the first running job must end (a's, admitted at T0 for an hour).
    assert blocked.reason_code == "reserved"
    assert blocked.est_start == round(T0 + HOUR)
    assert blocked.reserved_flavor == "H100"
    assert "est. start" in blocked.reason
    behind = rows.get(waiting["capacity"])  # the next one waits for GPUs, without an estimate
    assert behind.reason_code == "capacity" and "H100 GPUs" in behind.reason
    assert behind.reserved_flavor is None

    inactive = rows.get(waiting["project"])
    assert inactive.reason_code == "project"
    assert inactive.reason == "project c is not active"

    broke = rows.get(waiting["credits"])
    assert broke.reason_code == "credits"
    assert broke.reason == (
        "credits: 0.0 left after 0.0 committed to running jobs; "
        "this job needs up to 1.0 (1 GPU x 1.0 h x 1.0)"
    )

    for job_id in waiting.values():
        row = rows.get(job_id)
        assert row.state == JobState.QUEUED and row.reason_code and row.reason
        assert rows.allocations(job_id) == []


def test_reasons_are_written_only_when_they_change(
    rows: PoolRows, live: Live, statements: StatementLog
) -> None:
    waiting = waiting_pool(rows, live)
    live.tick()  # reasons written, and the reservation
    live.tick()  # the job behind the reserved one is told so (the reservation is kept now)

    statements.recording = True
    live.tick()  # same clock, nothing new: every reason stands
    live.tick()
    assert statements.job_updates("reason") == []

    # A change for one job rewrites that job's reason only.
    set_limit(rows, "a", 10)  # a's 4-GPU job is still over the limit, with another message
    statements.statements.clear()
    live.tick()
    assert len(statements.job_updates("reason")) == 1  # one row's parameters
    assert "limit of 10" in rows.get(waiting["over_limit"]).reason


def test_a_reason_is_written_again_after_the_row_was_changed_by_another_leader(
    rows: PoolRows, live: Live
) -> None:
    """A sink remembers the reasons it wrote; another leader may have rewritten them since.
    (SchedulingLoop.run keeps its sink when it loses the lock and leads again later.)"""
    waiting = waiting_pool(rows, live)
    job_id = waiting["over_limit"]
    live.tick()
    first = rows.get(job_id).reason
    assert rows.get(job_id).reason_code == "over_limit"

    # Leadership moves to another loop, which sees a raised limit and a different reason.
    set_limit(rows, "a", 10)
    other = live.new_loop(InProcessDispatcher(live.clock))
    other.take_over()
    other.tick()
    assert rows.get(job_id).reason != first

    # ... and back: the limit is as before, the first loop leads again and its plan gives
    # the first reason once more. The row must say so.
    set_limit(rows, "a", 8)
    live.loop.take_over()
    live.tick()
    assert rows.get(job_id).reason == first


# --- 3. dispatch failures ------------------------------------------------------------------


def test_a_refused_start_releases_its_gpus_and_requeues_the_job(rows: PoolRows, live: Live) -> None:
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8)
    job_id = rows.job("a", gpus=8)
    live.refuse_with(
        lambda order: DispatchError("engine unreachable") if order.attempt == 1 else None
    )

    report = live.tick()

    assert report.dispatch_failures == 1 and report.admitted == 0
    assert [o.key for o in live.refusals] == [f"{job_id}-1"]
    row = rows.get(job_id)
    assert row.state == JobState.QUEUED
    assert row.attempt == 1
    assert row.reason_code == "dispatch"
    assert row.reason == "dispatch failed: engine unreachable; requeued"
    assert row.ended_at is None
    assert rows.open_allocations() == []
    [held] = rows.allocations(job_id)
    assert held.end == T0
    [attempt] = rows.attempts(job_id)
    assert attempt.outcome == "dispatch_failed" and attempt.ended_at == T0
    assert live.dispatcher.starts == []
    assert JobState.ADMITTED not in rows.states().values()

    live.clock.advance(1)
    live.tick()  # tried again: attempt 2, accepted this time

    row = rows.get(job_id)
    assert row.state == JobState.ADMITTED and row.attempt == 2
    assert live.dispatcher.starts == [f"{job_id}-2"]
    assert [a.attempt for a in rows.open_allocations(job_id)] == [2]
    assert [a.number for a in rows.attempts(job_id)] == [1, 2]


def test_a_permanently_refused_start_fails_the_job_and_frees_its_gpus(
    rows: PoolRows, live: Live
) -> None:
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8)
    bad = rows.job("a", gpus=8, runtime_env={"pip": ["no-such-package"]})
    good = rows.job("a", gpus=8, submitted=T0 + 1)
    live.refuse_with(
        lambda order: (
            DispatchError("runtime_env rejected", permanent=True) if order.runtime_env else None
        )
    )

    report = live.tick()

    assert report.dispatch_failures == 1
    row = rows.get(bad)
    assert row.state == JobState.FAILED
    assert row.ended_at == T0
    assert row.outcome == "dispatch failed: runtime_env rejected"
    assert rows.open_allocations(bad) == []
    assert rows.attempts(bad)[0].outcome == "dispatch_failed"
    assert JobState.ADMITTED not in rows.states().values()

    live.clock.advance(1)
    live.tick()  # the failed job's GPUs go to the next one

    assert rows.get(good).state == JobState.ADMITTED
    assert rows.get(bad).state == JobState.FAILED and rows.get(bad).attempt == 1
    assert live.dispatcher.starts == [f"{good}-1"]


# --- 4. finishing --------------------------------------------------------------------------


@pytest.mark.parametrize("ok", [True, False])
def test_a_finished_job_ends_charges_usage_and_frees_its_gpus(
    rows: PoolRows, live: Live, ok: bool
) -> None:
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8)
    first = rows.job("a", gpus=8)
    second = rows.job("a", gpus=8, submitted=T0 + 1)
    live.tick()
    live.clock.advance(1)
    live.tick()
    assert rows.get(first).state == JobState.RUNNING
    assert rows.get(second).state == JobState.QUEUED
    assert rows.project_row("a").usage_gpu_s == 0

    live.clock.advance(99)  # T0 + 100
    live.dispatcher.finish(str(first), 1, ok=ok, message="" if ok else "exit code 3")
    report = live.tick()

    row = rows.get(first)
    assert row.state == (JobState.SUCCEEDED if ok else JobState.FAILED)
    assert row.ended_at == T0 + 100
    assert row.outcome == ("succeeded" if ok else "exit code 3")
    assert [a.end for a in rows.allocations(first)] == [T0 + 100]
    [attempt] = rows.attempts(first)
    assert attempt.ended_at == T0 + 100
    assert attempt.outcome == ("succeeded" if ok else "failed")
    usage = rows.project_row("a")
    assert usage.usage_gpu_s == pytest.approx(8 * 100)
    assert usage.usage_at == T0 + 100
    # The freed GPUs went to the waiting job in the same tick that learnt of the end.
    assert report.events == 1 and report.admitted == 1
    assert rows.get(second).state == JobState.ADMITTED
    assert rows.get(second).admitted_at == T0 + 100
    assert live.dispatcher.starts == [f"{first}-1", f"{second}-1"]


def test_usage_accumulates_as_jobs_end(rows: PoolRows, live: Live) -> None:
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8)
    first = rows.job("a", gpus=4)
    second = rows.job("a", gpus=2)
    live.tick()
    live.clock.advance(10)
    live.dispatcher.finish(str(first), 1)
    live.tick()
    live.clock.advance(10)
    live.dispatcher.finish(str(second), 1)
    live.tick()

    # 4 GPUs for 10 s, then 2 GPUs for 20 s; the decay over 10 s of a week's half-life is
    # negligible at this precision.
    assert rows.project_row("a").usage_gpu_s == pytest.approx(40 + 40, rel=1e-4)
    assert rows.open_allocations() == []


def test_a_job_the_dispatcher_lost_is_requeued_and_runs_again(rows: PoolRows, live: Live) -> None:
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8)
    job_id = rows.job("a", gpus=8)
    live.tick()
    live.clock.advance(1)
    live.tick()
    live.clock.advance(1)
    live.dispatcher.lose(str(job_id), 1, "node h1 went away")

    live.tick()

    row = rows.get(job_id)
    # Lost, requeued, and (the GPUs being free again) admitted once more in the same tick.
    assert row.outcome == "lost (node h1 went away); requeued"
    assert row.state == JobState.ADMITTED and row.attempt == 2
    assert [(a.number, a.outcome) for a in rows.attempts(job_id)] == [(1, "lost"), (2, "")]
    assert live.dispatcher.starts == [f"{job_id}-1", f"{job_id}-2"]


# --- 5. preemption -------------------------------------------------------------------------


def borrowing_pool(rows: PoolRows, live: Live) -> tuple[int, int]:
    """Two 8-GPU nodes; project a (guarantee 8, limit 16) fills both: a1 at T0, a2 (its
    borrowed, newer job) at T0 + 10, both running."""
    rows.pool(nodes=2)
    rows.project("a", guaranteed=8, limit=16)
    rows.project("b", guaranteed=8, limit=16)
    a1 = rows.job("a", gpus=8)
    live.tick()
    live.clock.advance(10)
    a2 = rows.job("a", gpus=8)
    live.tick()
    live.clock.advance(10)
    live.tick()
    assert rows.get(a1).state == rows.get(a2).state == JobState.RUNNING
    assert rows.get(a1).borrowed is False and rows.get(a2).borrowed is True
    return a1, a2


def test_an_in_quota_job_preempts_the_newest_borrower(rows: PoolRows, live: Live) -> None:
    a1, a2 = borrowing_pool(rows, live)
    b1 = rows.job("b", gpus=8)
    preempt_at = live.clock.advance(10)

    report = live.tick()

    assert report.preempted_or_stopped == 1 and report.admitted == 0
    victim = rows.get(a2)
    assert victim.stopping_at == preempt_at + GRACE
    assert victim.preempted_for == b1
    assert victim.state == JobState.RUNNING  # until the engine says it stopped
    assert rows.get(a1).stopping_at is None
    waiting = rows.get(b1)
    assert waiting.state == JobState.QUEUED and waiting.reason_code == "reclaiming"
    assert waiting.est_start == round(preempt_at + GRACE)

    # The fake stops at once; the next tick learns it and gives b the freed GPUs.
    live.clock.advance(1)
    events = live.dispatcher.poll()
    assert [(e.job_id, e.kind) for e in events] == [(str(a2), EventKind.STOPPED)]
    live.sink.apply(events, live.clock.now())
    requeued = rows.get(a2)
    assert requeued.state == JobState.QUEUED
    assert requeued.attempt == 1
    assert requeued.stopping_at is None
    assert requeued.reason_code == "preempted" and "preempted" in requeued.reason
    assert rows.open_allocations(a2) == []
    assert rows.attempts(a2)[0].outcome == "preempted"

    report = live.tick()

    assert rows.get(b1).state == JobState.ADMITTED
    assert rows.get(b1).admitted_at <= preempt_at + GRACE  # type: ignore[operator]
    assert rows.get(b1).borrowed is False
    assert rows.get(a2).state == JobState.QUEUED and rows.get(a2).attempt == 1
    assert "preempted" in rows.get(a2).outcome
    assert rows.get(a2).reason  # it waits, with a reason

    # When b's job ends, a's preempted job runs again, as attempt 2.
    live.clock.advance(1)
    live.tick()
    live.clock.advance(1)
    live.dispatcher.finish(str(b1), 1)
    live.tick()
    again = rows.get(a2)
    assert again.state == JobState.ADMITTED and again.attempt == 2
    assert f"{a2}-2" in live.dispatcher.starts
    assert [a.number for a in rows.attempts(a2)] == [1, 2]


def test_a_preempted_job_gets_its_grace_period_and_one_stop_order(
    rows: PoolRows, manual_clock: ManualClock
) -> None:
    live = make_live(rows.engine, manual_clock, HeldStops(manual_clock))
    dispatcher = live.dispatcher
    assert isinstance(dispatcher, HeldStops)
    _, a2 = borrowing_pool(rows, live)
    b1 = rows.job("b", gpus=8)
    preempt_at = live.clock.advance(10)

    live.tick()

    [order] = dispatcher.stop_orders
    assert order == StopOrder(str(a2), 1, GRACE, StopWhy.PREEMPTED)

    # Half the grace period later the borrower still runs: no second order, b still waits
    # for the GPUs with the time they are due.
    live.clock.advance(GRACE / 2)
    report = live.tick()
    assert report.preempted_or_stopped == 0
    assert len(dispatcher.stop_orders) == 1
    assert rows.get(a2).state == JobState.RUNNING
    assert rows.get(a2).stopping_at == preempt_at + GRACE
    waiting = rows.get(b1)
    assert waiting.state == JobState.QUEUED and waiting.reason_code == "reclaiming"
    assert waiting.est_start == round(preempt_at + GRACE)

    # It stops within its grace period; b starts on the next tick, before the grace is up.
    live.clock.advance(GRACE / 2 - 5)
    dispatcher.deliver_stops()
    live.tick()
    row = rows.get(b1)
    assert row.state == JobState.ADMITTED
    assert row.admitted_at is not None and row.admitted_at < preempt_at + GRACE
    assert set(pieces_of(rows.open_allocations(b1))) <= {("h1", 8), ("h2", 8)}
    assert rows.get(a2).state == JobState.QUEUED


# --- 6. cancelling -------------------------------------------------------------------------


def test_cancelling_a_running_job_stops_it_and_frees_its_gpus(rows: PoolRows, live: Live) -> None:
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8)
    job_id = rows.job("a", gpus=8)
    waiting = rows.job("a", gpus=8, submitted=T0 + 1)
    live.tick()
    live.clock.advance(1)
    live.tick()
    assert rows.get(job_id).state == JobState.RUNNING

    asked_at = live.clock.advance(5)
    with write_session(rows.engine) as s:
        jobs.cancel(s, rows.principal("a"), job_id, asked_at)
    assert rows.get(job_id).cancel_requested_at == asked_at
    assert rows.get(job_id).state == JobState.RUNNING  # the loop stops it

    live.clock.advance(1)
    report = live.tick()

    assert report.preempted_or_stopped == 1
    row = rows.get(job_id)
    assert row.stopping_at == live.clock.now() + GRACE
    stopped = [e for e in live.dispatcher.poll() if e.kind is EventKind.STOPPED]
    assert [(e.job_id, e.message) for e in stopped] == [(str(job_id), "stopped: cancelled")]
    live.sink.apply(stopped, live.clock.now())

    row = rows.get(job_id)
    assert row.state == JobState.CANCELLED
    assert row.ended_at == live.clock.now()
    assert row.stopping_at is None
    assert rows.open_allocations(job_id) == []
    assert rows.attempts(job_id)[0].outcome == "cancelled"

    live.clock.advance(1)
    live.tick()  # the GPUs are free: the waiting job starts
    assert rows.get(waiting).state == JobState.ADMITTED
    assert rows.get(job_id).state == JobState.CANCELLED


def test_cancel_sends_one_stop_order_with_the_cancel_grace(
    rows: PoolRows, manual_clock: ManualClock
) -> None:
    live = make_live(rows.engine, manual_clock, HeldStops(manual_clock))
    dispatcher = live.dispatcher
    assert isinstance(dispatcher, HeldStops)
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8)
    job_id = rows.job("a", gpus=8)
    live.tick()
    with write_session(rows.engine) as s:
        jobs.cancel(s, rows.principal("a"), job_id, live.clock.now())

    live.tick()
    live.tick()
    live.clock.advance(GRACE / 2)
    live.tick()

    assert dispatcher.stop_orders == [StopOrder(str(job_id), 1, GRACE, StopWhy.CANCELLED)]
    assert rows.get(job_id).state == JobState.RUNNING
    dispatcher.deliver_stops()
    live.tick()
    assert rows.get(job_id).state == JobState.CANCELLED
    assert rows.open_allocations() == []


def test_a_preempted_job_cancelled_during_its_grace_ends_cancelled(
    rows: PoolRows, manual_clock: ManualClock
) -> None:
    live_stops = HeldStops(manual_clock)
    live = make_live(rows.engine, manual_clock, live_stops)
    _, a2 = borrowing_pool(rows, live)
    rows.job("b", gpus=8)
    live.clock.advance(10)
    live.tick()  # a2 is told to stop (preempted); the stop is in flight
    with write_session(rows.engine) as s:
        jobs.cancel(s, rows.principal("a"), a2, live.clock.now())

    live.tick()
    assert len(live_stops.stop_orders) == 1  # no second order: it is stopping already
    live_stops.deliver_stops()
    live.tick()

    row = rows.get(a2)
    assert row.state == JobState.CANCELLED and row.attempt == 1
    assert rows.open_allocations(a2) == []


# --- 7. a cancel racing the cycle ----------------------------------------------------------


def test_a_job_cancelled_between_snapshot_and_record_stays_cancelled(
    rows: PoolRows, live: Live
) -> None:
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8)
    doomed = rows.job("a", gpus=4)
    kept = rows.job("a", gpus=4)
    now = live.clock.now()

    snapshot = live.source.snapshot(now)
    decided = plan(snapshot, live.policy, now)
    assert {a.job_id for a in decided.admissions} == {str(doomed), str(kept)}
    with write_session(rows.engine) as s:  # the user cancels while the plan is made
        jobs.cancel(s, rows.principal("a"), doomed, now)
    recorded = live.sink.record(snapshot, decided, now)

    assert [o.job_id for o in recorded.starts] == [str(kept)]
    row = rows.get(doomed)
    assert row.state == JobState.CANCELLED and row.attempt == 0
    assert rows.allocations(doomed) == [] and rows.attempts(doomed) == []
    assert rows.get(kept).state == JobState.ADMITTED

    live.tick()  # a whole tick later, nothing brings it back
    assert rows.get(doomed).state == JobState.CANCELLED
    assert rows.allocations(doomed) == []
    assert f"{doomed}-1" not in live.dispatcher.starts


# --- 8. a new leader -----------------------------------------------------------------------


def test_take_over_starts_what_was_assumed_but_never_dispatched_exactly_once(
    rows: PoolRows, live: Live
) -> None:
    rows.pool(nodes=3)
    rows.project("a", guaranteed=24, limit=24)
    single = rows.job("a", gpus=4, runtime_env={"env_vars": {"X": "1"}})
    gang = rows.job("a", gpus=16, nodes=2)
    now = live.clock.now()

    # The old leader assumed the plan and died before dispatching it.
    snapshot = live.source.snapshot(now)
    recorded = live.sink.record(snapshot, plan(snapshot, live.policy, now), now)
    assert len(recorded.starts) == 2
    assert rows.get(single).state == rows.get(gang).state == JobState.ADMITTED
    assert live.dispatcher.starts == []

    engine_side = InProcessDispatcher(live.clock)
    fresh = live.new_loop(engine_side)
    live.clock.advance(3)
    resent = fresh.take_over()
    again = fresh.take_over()  # say, leadership flapped before a tick

    assert {o.key for o in resent.starts} == {f"{single}-1", f"{gang}-1"}
    assert sorted(engine_side.starts) == sorted({f"{single}-1", f"{gang}-1"})
    assert len(engine_side.starts) == 2  # no duplicates

    def same(a: StartOrder, b: StartOrder) -> bool:
        return (a.key, a.project, a.user, a.entrypoint, a.flavor, set(a.pieces)) == (
            b.key,
            b.project,
            b.user,
            b.entrypoint,
            b.flavor,
            set(b.pieces),
        ) and (a.max_runtime_s, a.runtime_env) == (b.max_runtime_s, b.runtime_env)

    for original in recorded.starts:
        [twin] = [o for o in resent.starts if o.key == original.key]
        assert same(twin, original)
    assert {o.key for o in again.starts} == {o.key for o in resent.starts}

    fresh.tick()  # the running events land; nothing is outstanding any more
    assert rows.get(single).state == rows.get(gang).state == JobState.RUNNING
    assert fresh.take_over().starts == []
    assert len(engine_side.starts) == 2


def test_take_over_resends_unconfirmed_stops(rows: PoolRows, live: Live) -> None:
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8)
    job_id = rows.job("a", gpus=8)
    live.tick()
    with write_session(rows.engine) as s:
        jobs.cancel(s, rows.principal("a"), job_id, live.clock.now())
    stop_at = live.clock.now() + GRACE
    # The old leader records the cancel's stop and dies before sending it.
    now = live.clock.now()
    snapshot = live.source.snapshot(now)
    recorded = live.sink.record(snapshot, plan(snapshot, live.policy, now), now)
    assert [s.why for s in recorded.stops] == [StopWhy.CANCELLED]

    live.clock.advance(30)
    fresh = live.new_loop()  # the same engine, where the job still runs
    resent = fresh.take_over()

    assert resent.stops == [
        StopOrder(str(job_id), 1, stop_at - live.clock.now(), StopWhy.CANCELLED)
    ]
    fresh.tick()
    assert rows.get(job_id).state == JobState.CANCELLED
    assert rows.open_allocations() == []


# --- events ----------------------------------------------------------------------------------


def test_a_job_that_starts_and_ends_between_two_ticks_is_recorded_in_full(
    rows: PoolRows, manual_clock: ManualClock
) -> None:
    quick = InProcessDispatcher(manual_clock, run_for=lambda order: 30.0)
    live = make_live(rows.engine, manual_clock, quick)
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8)
    rows.project("b", guaranteed=0, limit=8)
    a1 = rows.job("a", gpus=4)
    b1 = rows.job("b", gpus=4)
    live.tick()
    # Both ran their 30 s and ended: running and succeeded come in one poll. (The fake
    # reports an end when polled, so the poll comes right at the end.)
    live.clock.advance(30)

    report = live.tick()

    assert report.events == 4
    for job_id, project in ((a1, "a"), (b1, "b")):
        row = rows.get(job_id)
        assert row.state == JobState.SUCCEEDED
        assert (row.started_at, row.ended_at) == (T0, T0 + 30)
        [attempt] = rows.attempts(job_id)
        assert (attempt.started_at, attempt.ended_at, attempt.outcome) == (
            T0,
            T0 + 30,
            "succeeded",
        )
        assert [a.end for a in rows.allocations(job_id)] == [T0 + 30]
        assert rows.project_row(project).usage_gpu_s == pytest.approx(4 * 30)


def test_news_of_an_earlier_attempt_changes_nothing(rows: PoolRows, live: Live) -> None:
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8)
    job_id = rows.job("a", gpus=8)
    live.tick()
    live.clock.advance(1)
    live.dispatcher.lose(str(job_id), 1, "node h1 went away")
    live.tick()  # requeued and admitted again: attempt 2
    assert rows.get(job_id).attempt == 2

    late = [
        JobEvent(str(job_id), 1, EventKind.SUCCEEDED, live.clock.now(), "exit code 0"),
        JobEvent(str(job_id), 1, EventKind.RUNNING, live.clock.now()),
    ]
    live.sink.apply(late, live.clock.now())

    row = rows.get(job_id)
    assert row.state == JobState.ADMITTED and row.attempt == 2 and row.started_at is None
    assert [a.attempt for a in rows.open_allocations(job_id)] == [2]
    assert rows.project_row("a").usage_gpu_s == pytest.approx(8 * 1)  # attempt 1 only


def test_an_expired_project_admits_nothing_and_says_so(rows: PoolRows, live: Live) -> None:
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8)
    with write_session(rows.engine) as s:
        project = s.get(Project, "a")
        assert project is not None
        project.expires_at = T0 - 1
    job_id = rows.job("a", gpus=1)

    live.tick()

    assert rows.project_row("a").state == ProjectState.EXPIRED
    row = rows.get(job_id)
    assert row.state == JobState.QUEUED and row.reason_code == "project"
    assert live.dispatcher.starts == []


# --- known gaps -------------------------------------------------------------------------------


def test_a_job_lost_after_its_cancel_was_requested_ends_cancelled(
    rows: PoolRows, manual_clock: ManualClock
) -> None:
    held = HeldStops(manual_clock)
    live = make_live(rows.engine, manual_clock, held)
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8)
    job_id = rows.job("a", gpus=8)
    live.tick()
    live.clock.advance(1)
    live.tick()
    with write_session(rows.engine) as s:
        jobs.cancel(s, rows.principal("a"), job_id, live.clock.now())
    live.tick()  # the cancel's stop order is in flight ...
    assert [o.why for o in held.stop_orders] == [StopWhy.CANCELLED]
    held.lose(str(job_id), 1, "node h1 went away")  # ... when the node dies

    live.clock.advance(1)
    live.tick()

    row = rows.get(job_id)
    assert f"{job_id}-2" not in held.starts
    assert row.state == JobState.CANCELLED and row.attempt == 1
    assert rows.open_allocations() == []


def test_a_job_past_its_max_runtime_is_stopped_and_ends_timeout(
    rows: PoolRows, manual_clock: ManualClock
) -> None:
    recording = HeldStops(manual_clock, hold=False)
    live = make_live(rows.engine, manual_clock, recording)
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8)
    job_id = rows.job("a", gpus=8, runtime=100)
    live.tick()
    live.clock.advance(1)
    live.tick()

    for _ in range(4):  # well past the limit (and any grace): a few ticks
        live.clock.advance(100)
        live.tick()

    assert [(o.job_id, o.why) for o in recording.stop_orders] == [(str(job_id), StopWhy.TIMEOUT)]
    row = rows.get(job_id)
    assert row.state == JobState.TIMEOUT
    assert rows.open_allocations() == []


# --- a new leader: fencing and what the engine no longer runs ---------------------------------


def test_a_deposed_leader_records_nothing(rows: PoolRows, live: Live) -> None:
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8)
    first = rows.job("a", gpus=8)
    now = live.clock.now()
    snapshot = live.source.snapshot(now)
    stale = plan(snapshot, live.policy, now)  # the old leader plans ...

    successor = live.new_loop()
    successor.tick()  # ... a new one claims the records and admits the job itself
    assert rows.get(first).state == JobState.ADMITTED

    with pytest.raises(Deposed):
        live.sink.record(snapshot, stale, now)  # ... and the old leader's plan is refused
    with pytest.raises(Deposed):
        live.sink.apply([JobEvent(str(first), 1, EventKind.SUCCEEDED, now)], now)
    assert rows.get(first).state == JobState.ADMITTED
    assert len(rows.open_allocations()) == 1  # the GPUs are held once


def test_a_deposed_loop_stands_by_instead_of_ticking_on(rows: PoolRows, live: Live) -> None:
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8)
    leadership = CountingLeadership()
    loop = live.new_loop()
    loop.leadership = leadership
    loop.leading = True
    loop.tick()  # claims epoch n
    live.new_loop().tick()  # another claims n + 1

    loop._guarded(loop.tick)

    assert loop.leading is False and leadership.released == 1


def test_take_over_requeues_attempts_the_engine_no_longer_runs(rows: PoolRows, live: Live) -> None:
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8)
    job_id = rows.job("a", gpus=8)
    live.tick()
    live.clock.advance(5)
    live.tick()
    assert rows.get(job_id).state == JobState.RUNNING

    # The control plane restarts; its dispatcher's processes died with it.
    live.clock.advance(60)
    fresh = live.new_loop(InProcessDispatcher(live.clock))
    fresh.take_over()

    row = rows.get(job_id)
    assert row.state == JobState.QUEUED and row.reason_code == "lost"
    assert "control plane restarted" in row.reason
    assert rows.open_allocations() == []
    assert rows.attempts(job_id)[0].outcome == "lost"
    fresh.tick()  # and it runs again, as attempt 2
    assert rows.get(job_id).state == JobState.ADMITTED and rows.get(job_id).attempt == 2


def test_events_are_kept_when_recording_them_fails(rows: PoolRows, live: Live) -> None:
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8)
    job_id = rows.job("a", gpus=8)
    live.tick()
    live.dispatcher.finish(str(job_id), 1)
    apply = live.sink.apply
    calls = []

    def failing_once(events: list[JobEvent], now: float) -> None:
        calls.append(len(events))
        if len(calls) == 1:
            raise RuntimeError("database is locked")
        apply(events, now)

    live.sink.apply = failing_once  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        live.tick()
    live.tick()

    assert calls == [2, 2]  # running and succeeded, both kept for the second try
    assert rows.get(job_id).state == JobState.SUCCEEDED
    assert rows.open_allocations() == []


def test_a_failed_start_that_cannot_be_recorded_is_recorded_next_tick(
    rows: PoolRows, live: Live
) -> None:
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8)
    job_id = rows.job("a", gpus=8)
    live.refuse_with(lambda order: DispatchError("ray is down"))
    record_failure = live.sink.dispatch_failed
    tries = []

    def failing_once(order: StartOrder, error: DispatchError, now: float) -> None:
        tries.append(order.key)
        if len(tries) == 1:
            raise RuntimeError("database is locked")
        record_failure(order, error, now)

    live.sink.dispatch_failed = failing_once  # type: ignore[method-assign]
    live.tick()
    assert rows.get(job_id).state == JobState.ADMITTED  # held until the failure is recorded
    live.refuse_with(lambda order: None)
    live.tick()

    assert tries == [f"{job_id}-1", f"{job_id}-1"]
    assert rows.get(job_id).attempt == 2  # released, requeued and admitted again
    assert rows.attempts(job_id)[0].outcome == "dispatch_failed"


class CountingLeadership:
    def __init__(self) -> None:
        self.released = 0

    def try_acquire(self) -> bool:
        return True

    def held(self) -> bool:
        return True

    def release(self) -> None:
        self.released += 1


class PolledBetweenTicks(InProcessDispatcher):
    """A dispatcher that asks to be polled often (as the Ray dispatcher does while it
    follows jobs: Ray does not call back)."""

    poll_every_s: float | None = 0.05


@pytest.mark.parametrize("asks", [True, False])
def test_a_dispatcher_that_asks_is_polled_between_ticks_and_its_news_ticks_at_once(
    live: Live, rows: PoolRows, manual_clock: ManualClock, asks: bool
) -> None:
    import threading
    import time

    from scheduler.core import Policy
    from scheduler.runtime.loop import SchedulingLoop
    from web.services.scheduling import DbDecisionSink, DbSnapshotSource

    from .conftest import AlwaysLeader

    rows.pool(nodes=1)
    rows.project("a")
    job = rows.job("a", gpus=1)
    dispatcher = (PolledBetweenTicks if asks else InProcessDispatcher)(manual_clock)
    policy = Policy.gpupool(grace_period_s=GRACE)
    loop = SchedulingLoop(  # a tick every 30 s unless something happens
        DbSnapshotSource(live.engine),
        DbDecisionSink(live.engine, GRACE, policy.half_life_s),
        dispatcher,
        manual_clock,
        policy,
        AlwaysLeader(),
        interval_s=30.0,
    )
    runner = threading.Thread(target=loop.run)
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while rows.get(job).state != JobState.RUNNING.value:  # a start is news too
            loop.wake()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.2)  # the loop waits for its next tick now
        dispatcher.finish(str(job), 1)  # the job ends in the engine; no one wakes the loop
        deadline = time.monotonic() + 1.0
        while rows.get(job).state != JobState.SUCCEEDED.value and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (rows.get(job).state == JobState.SUCCEEDED.value) is asks
    finally:
        loop.stop()
        runner.join(timeout=10)


# --- nodes the engine has ----------------------------------------------------------------------

GONE = "not in the engine"


class SightingDispatcher(InProcessDispatcher):
    """Says which nodes the engine has when the test sets `present` (once per setting)."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock)
        self.present: set[str] | None = None

    def sight_nodes(self) -> NodeSighting | None:
        present, self.present = self.present, None
        return None if present is None else NodeSighting(frozenset(present), GONE)


def test_a_node_the_engine_lacks_goes_down_and_comes_back_when_it_returns(
    rows: PoolRows, manual_clock: ManualClock
) -> None:
    rows.pool(nodes=2)
    rows.project("a", guaranteed=16, limit=16)
    engine = SightingDispatcher(manual_clock)
    live = make_live(rows.engine, manual_clock, engine)
    engine.present = {"h1"}
    live.tick()
    assert rows.node_state("h2") == ("down", GONE)
    assert rows.node_state("h1") == ("up", "")
    job = rows.job("a", gpus=8)
    live.tick()
    assert pieces_of(rows.allocations(job)) == {("h1", 8)}
    second = rows.job("a", gpus=8)
    live.tick()
    assert rows.get(second).state == JobState.QUEUED  # h2 is down: nothing planned there

    engine.present = {"h1", "h2"}
    live.tick()
    assert rows.node_state("h2") == ("up", "")
    live.tick()
    assert pieces_of(rows.allocations(second)) == {("h2", 8)}
    with read_session(rows.engine) as s:
        changes = s.exec(select(Change).where(Change.subject == "node:h2")).all()
        seen = [(c.actor, c.old, c.new) for c in changes]
    assert seen == [
        ("scheduler", "up", "down"),
        ("scheduler", "down", "up"),
    ]


def test_nodes_drained_or_down_for_another_reason_are_left_as_they_are(
    rows: PoolRows, manual_clock: ManualClock
) -> None:
    rows.pool(nodes=3)
    with write_session(rows.engine) as s:
        for name, state, reason in (("h1", "draining", "maintenance"), ("h2", "down", "agent")):
            node = s.get(Node, name)
            assert node is not None
            node.state, node.state_reason = state, reason
    engine = SightingDispatcher(manual_clock)
    live = make_live(rows.engine, manual_clock, engine)
    engine.present = set()
    live.tick()
    engine.present = {"h1", "h2", "h3"}
    live.tick()
    assert rows.node_state("h1") == ("draining", "maintenance")
    assert rows.node_state("h2") == ("down", "agent")
    assert rows.node_state("h3") == ("up", "")


def test_a_deposed_leader_takes_no_node_out(rows: PoolRows, manual_clock: ManualClock) -> None:
    rows.pool(nodes=2)
    engine = SightingDispatcher(manual_clock)
    live = make_live(rows.engine, manual_clock, engine)
    live.tick()
    live.new_loop().take_over()  # a newer leader claims the records
    engine.present = {"h1"}
    with pytest.raises(Deposed):
        live.tick()
    assert rows.node_state("h2") == ("up", "")


# --- idle GPUs ---------------------------------------------------------------------------------


def test_a_job_idle_longer_than_its_project_allows_is_stopped_and_ends_cancelled(
    rows: PoolRows, live: Live
) -> None:
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8)
    job_id = rows.job("a", gpus=2)
    live.tick()
    live.tick()
    with write_session(rows.engine) as s:
        project = s.get(Project, "a")
        assert project is not None
        project.idle_stop_after_s = 1800.0
        s.add(JobUsage(job_id=job_id, attempt=1, idle_since=live.clock.now()))
    live.clock.advance(1700)
    live.tick()
    assert rows.get(job_id).state == JobState.RUNNING  # flagged, not stopped yet
    live.clock.advance(200)
    live.tick()  # the stop is ordered; the in-process engine stops it at once
    live.tick()
    job = rows.get(job_id)
    assert (job.state, job.outcome) == (JobState.CANCELLED, "stopped: idle")
    [attempt] = rows.attempts(job_id)
    assert attempt.outcome == "idle"
