"""The database side of the scheduling loop, and the one place that maps rows to the
core's types and the core's decisions back to rows.

DbSnapshotSource  rows -> core.Snapshot (read-only, a few set-based queries)
DbDecisionSink    core.Plan -> rows, in one transaction per call; dispatcher events -> rows
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Engine, and_, bindparam, func, or_, select, update
from sqlmodel import Session, col

from scheduler import core
from scheduler.core.estimates import RecentRuntimes, RunForecast
from scheduler.core.fairshare import decay
from scheduler.core.forecast import UNFORECAST, RunModel
from scheduler.runtime.ports import (
    Deposed,
    DispatchError,
    EventKind,
    JobEvent,
    NodeSighting,
    Recorded,
    StartOrder,
    StopOrder,
    StopWhy,
)
from web.db import read_session, write_session
from web.models import (
    ACTIVE_JOB_STATES,
    Allocation,
    Attempt,
    Flavor,
    Job,
    JobState,
    JobUsage,
    Leadership,
    Node,
    NodeStateName,
    NodeTelemetry,
    Project,
    ProjectState,
    Quota,
    Sector,
)
from web.services.changes import record_change
from web.services.ledger import append
from web.services.metering import Ended, MeteringPolicy, meter
from web.services.projects import credits_left, expire_projects
from web.services.telemetry import silent_reason
from web.services.utilization import sample_minute

ACTIVE = [s.value for s in ACTIVE_JOB_STATES]
J = Job.__table__  # type: ignore[attr-defined]
A = Allocation.__table__  # type: ignore[attr-defined]
F = Flavor.__table__  # type: ignore[attr-defined]
T = Attempt.__table__  # type: ignore[attr-defined]
N = Node.__table__  # type: ignore[attr-defined]
P = Project.__table__  # type: ignore[attr-defined]
Q = Quota.__table__  # type: ignore[attr-defined]
S = Sector.__table__  # type: ignore[attr-defined]
L = Leadership.__table__  # type: ignore[attr-defined]
NT = NodeTelemetry.__table__  # type: ignore[attr-defined]
JU = JobUsage.__table__  # type: ignore[attr-defined]


# Start forecasts learn run times from this many of the latest jobs that ran to the end.
HISTORY_JOBS = 5000


class DbSnapshotSource:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def run_times(self, now: float) -> RunModel:
        """How long jobs run, from the history of their user (the pool's, for a user with
        none): the latest HISTORY_JOBS that succeeded, for start forecasts."""
        history = RecentRuntimes()
        with read_session(self.engine) as s:
            finished = s.execute(
                select(J.c.user, J.c.started_at, J.c.admitted_at, J.c.ended_at)
                .where(J.c.state == JobState.SUCCEEDED.value)
                .where(J.c.ended_at.is_not(None))
                .order_by(J.c.ended_at.desc(), J.c.id.desc())
                .limit(HISTORY_JOBS)
            ).all()
            users = dict(
                s.execute(
                    select(J.c.id, J.c.user).where(J.c.state.in_([JobState.QUEUED.value, *ACTIVE]))
                ).all()
            )
        for r in reversed(finished):  # oldest first: the deques keep the latest
            began = r.started_at if r.started_at is not None else r.admitted_at
            if began is not None and r.ended_at >= began:
                history.observe(f"user:{r.user}", r.ended_at - began)
        keys = {str(job_id): f"user:{user}" for job_id, user in users.items()}

        def model(job_id: str, elapsed: float, limit: float) -> RunForecast:
            return history.forecast(keys.get(job_id, ""), elapsed, limit)

        return model

    def snapshot(self, now: float) -> core.Snapshot:
        with read_session(self.engine) as s:
            nodes = tuple(
                core.Node(r.name, r.flavor, r.gpus, r.group, core.NodeState(r.state))
                for r in s.execute(
                    select(N.c.name, N.c.flavor, N.c.gpus, N.c.group, N.c.state).order_by(N.c.name)
                )
            )
            sectors = tuple(
                core.Sector(r.name, r.weight) for r in s.execute(select(S.c.name, S.c.weight))
            )
            # The rate a project pays per GPU-hour: its quota's, else the flavor's (as
            # metering charges); the core commits it for each job's whole limit.
            rates = {r.name: r.credit_rate for r in s.execute(select(F.c.name, F.c.credit_rate))}
            quotas: dict[str, dict[str, core.FlavorQuota]] = defaultdict(dict)
            for r in s.execute(
                select(Q.c.project, Q.c.flavor, Q.c.guaranteed, Q.c.limit, Q.c.credit_rate)
            ):
                rate = r.credit_rate if r.credit_rate is not None else rates.get(r.flavor, 1.0)
                quotas[r.project][r.flavor] = core.FlavorQuota(r.guaranteed, r.limit, rate)
            projects = tuple(
                core.Project(
                    name=p.name,
                    sector=p.sector,
                    quotas=quotas.get(p.name, {}),
                    credits_left=credits_left(p),
                    share=p.share,
                    usage_gpu_s=p.usage_gpu_s,
                    usage_at=p.usage_at,
                )
                for p in s.execute(
                    select(
                        P.c.name,
                        P.c.sector,
                        P.c.credits,
                        P.c.credits_used,
                        P.c.credits_earned,
                        P.c.share,
                        P.c.usage_gpu_s,
                        P.c.usage_at,
                    )
                    .where(P.c.state == ProjectState.ACTIVE.value)
                    # Past its end: planned as expired now, recorded so by this tick.
                    .where(or_(P.c.expires_at.is_(None), P.c.expires_at > now))
                )
            )
            pending_rows = s.execute(
                select(
                    J.c.id,
                    J.c.project,
                    J.c.gpus,
                    J.c.flavor,
                    J.c.submitted_at,
                    J.c.max_runtime_s,
                    J.c.priority,
                    J.c.nodes,
                    J.c.user,
                    J.c.reserved_flavor,
                )
                .where(J.c.state == JobState.QUEUED.value)
                .order_by(J.c.id)
            ).all()
            pending = tuple(
                core.Job(
                    str(r.id),
                    r.project,
                    r.gpus,
                    r.flavor,
                    r.submitted_at,
                    r.max_runtime_s,
                    r.priority,
                    r.nodes,
                    r.user,
                )
                for r in pending_rows
            )
            reserved = tuple(
                (r.reserved_flavor, str(r.id)) for r in pending_rows if r.reserved_flavor
            )
            running = self._running(s)
        return core.Snapshot(nodes, sectors, projects, pending, running, reserved)

    def _running(self, s: Session) -> tuple[core.Running, ...]:
        rows = s.execute(
            select(
                J.c.id,
                J.c.project,
                J.c.max_runtime_s,
                J.c.priority,
                J.c.admitted_at,
                J.c.stopping_at,
                J.c.preempted_for,
                A.c.node,
                A.c.gpus,
                A.c.flavor,
            )
            .join(A, and_(A.c.job_id == J.c.id, A.c.attempt == J.c.attempt))
            .where(J.c.state.in_(ACTIVE))
            .where(A.c.end.is_(None))
            .order_by(J.c.id, A.c.id)
        ).all()
        pieces: dict[int, list[tuple[str, int]]] = defaultdict(list)
        first: dict[int, Any] = {}
        for r in rows:
            pieces[r.id].append((r.node, r.gpus))
            first.setdefault(r.id, r)
        return tuple(
            core.Running(
                job_id=str(job_id),
                project=r.project,
                flavor=r.flavor,
                pieces=tuple(pieces[job_id]),
                start=r.admitted_at,
                max_runtime=r.max_runtime_s,
                priority=r.priority,
                stopping_at=r.stopping_at,
                preempted_for=None if r.preempted_for is None else str(r.preempted_for),
            )
            for job_id, r in first.items()
        )


class DbDecisionSink:
    def __init__(
        self,
        engine: Engine,
        cancel_grace_s: float,
        half_life_s: float,
        heartbeat_timeout_s: float | None = None,
        heartbeat_check_s: float = 5.0,
        metering: MeteringPolicy | None = None,
    ) -> None:
        """`heartbeat_timeout_s`: a node whose agent has reported before and then is
        silent this long goes down (None: never); checked every `heartbeat_check_s`."""
        self.engine = engine
        self.metering = metering or MeteringPolicy()
        self.heartbeat_timeout_s, self.heartbeat_check_s = heartbeat_timeout_s, heartbeat_check_s
        self._claimed_at: float | None = None
        self._next_heartbeat_check = 0.0
        self.epoch: int | None = None  # this leadership's fencing token (see claim)
        self.cancel_grace_s = cancel_grace_s
        self.half_life_s = half_life_s
        # What each waiting job's row says now, so a cycle writes only reasons that changed.
        self._written: dict[
            int, tuple[str, str, float | None, float | None, float | None, int | None]
        ] = {}
        self._forecasts: dict[str, core.StartForecast] = {}  # the latest the loop made
        self._sampled_minute: int | None = None  # the last minute of utilization recorded

    # --- fencing ---------------------------------------------------------------------------

    def claim(self, holder: str, now: float) -> None:
        with write_session(self.engine) as s:
            row = s.execute(select(L.c.epoch).where(L.c.id == 1).with_for_update()).first()
            epoch = 1 if row is None else row.epoch + 1
            if row is None:
                s.execute(L.insert().values(id=1, epoch=epoch, holder=holder, since=now))
            else:
                s.execute(
                    update(L).where(L.c.id == 1).values(epoch=epoch, holder=holder, since=now)
                )
        self.epoch = epoch
        self._claimed_at = now
        # Another leader may have written reasons since this one last did: write all anew.
        self._written.clear()

    def _fence(self, s: Session) -> None:
        """First in every write transaction: the row lock orders it against a newer
        leader's claim, and a claim made since this leadership's own fails it."""
        epoch = s.execute(select(L.c.epoch).where(L.c.id == 1).with_for_update()).scalar()
        if self.epoch is None or epoch != self.epoch:
            raise Deposed(f"leadership epoch {self.epoch} is over; the records are at {epoch}")

    # --- 4. assume -----------------------------------------------------------------------

    def record(self, snapshot: core.Snapshot, plan: core.Plan, now: float) -> Recorded:
        recorded = Recorded()
        with write_session(self.engine) as s:
            self._fence(s)
            expire_projects(s, now)
            self._admit(s, plan, now, recorded)
            self._preempt(s, plan, now, recorded)
            self._cancel(s, now, recorded)
            self._reserve(s, snapshot, plan)
            self._reasons(s, snapshot, plan)
            minute = int(now // 60)
            if minute != self._sampled_minute:
                sample_minute(s, minute)  # the GPUs allocated and in service, once a minute
        self._sampled_minute = minute
        return recorded

    def _admit(self, s: Session, plan: core.Plan, now: float, recorded: Recorded) -> None:
        if not plan.admissions:
            return
        by_id = {int(a.job_id): a for a in plan.admissions}
        # Only jobs still queued are admitted: one cancelled since the snapshot stays so.
        s.execute(
            update(J)
            .where(J.c.id == bindparam("b_id"))
            .where(J.c.state == JobState.QUEUED.value)
            .values(
                state=JobState.ADMITTED.value,
                attempt=J.c.attempt + 1,
                admitted_at=now,
                started_at=None,
                borrowed=bindparam("b_borrowed"),
                flavor_used=bindparam("b_flavor"),
                reason_code="",
                reason="",
                est_start=None,
                est_start_earliest=None,
                est_start_latest=None,
                est_unbounded=None,
                reserved_flavor=None,
                stopping_at=None,
                stop_reason=None,
                preempted_for=None,
            ),
            [{"b_id": i, "b_borrowed": a.borrowed, "b_flavor": a.flavor} for i, a in by_id.items()],
        )
        admitted = s.execute(
            select(
                J.c.id,
                J.c.attempt,
                J.c.project,
                J.c.user,
                J.c.entrypoint,
                J.c.runtime_env,
                J.c.max_runtime_s,
            )
            .where(J.c.id.in_(list(by_id)))
            .where(J.c.state == JobState.ADMITTED.value)
            .where(J.c.admitted_at == now)
        ).all()
        attempts, allocations = [], []
        for r in admitted:
            a = by_id[r.id]
            self._written.pop(r.id, None)
            attempts.append(
                {
                    "job_id": r.id,
                    "number": r.attempt,
                    "flavor": a.flavor,
                    "gpus": sum(n for _, n in a.pieces),
                    "borrowed": a.borrowed,
                    "admitted_at": now,
                    "outcome": "",
                    "message": "",
                }
            )
            allocations += [
                {
                    "job_id": r.id,
                    "attempt": r.attempt,
                    "node": node,
                    "flavor": a.flavor,
                    "gpus": gpus,
                    "start": now,
                    "end": None,
                    "borrowed": a.borrowed,
                }
                for node, gpus in a.pieces
            ]
            recorded.starts.append(
                StartOrder(
                    str(r.id),
                    r.attempt,
                    r.project,
                    r.user,
                    r.entrypoint,
                    a.flavor,
                    a.pieces,
                    r.max_runtime_s,
                    dict(r.runtime_env or {}),
                )
            )
        if attempts:
            s.execute(T.insert(), attempts)
            s.execute(A.insert(), allocations)

    def _preempt(self, s: Session, plan: core.Plan, now: float, recorded: Recorded) -> None:
        for p in plan.preemptions:
            row = s.execute(
                update(J)
                .where(J.c.id == int(p.job_id))
                .where(J.c.state.in_(ACTIVE))
                .where(J.c.stopping_at.is_(None))
                .values(
                    stopping_at=p.stop_at,
                    stop_reason=StopWhy.PREEMPTED.value,
                    preempted_for=int(p.for_job),
                    outcome=p.reason,
                )
                .returning(J.c.attempt)
            ).first()
            if row is not None:
                recorded.stops.append(
                    StopOrder(p.job_id, row.attempt, max(p.stop_at - now, 0.0), StopWhy.PREEMPTED)
                )

    def _cancel(self, s: Session, now: float, recorded: Recorded) -> None:
        """Stop what was cancelled, what ran past its max_runtime (wall time counts from
        its start, or from its admission while it is being started), and what kept all its
        GPUs idle longer than its project allows (idle_stop_after_s; flagged until then)."""
        started = func.coalesce(J.c.started_at, J.c.admitted_at)
        idle_too_long = (
            select(JU.c.job_id)
            .join(P, P.c.name == J.c.project)
            .where(JU.c.job_id == J.c.id, JU.c.attempt == J.c.attempt)
            .where(P.c.idle_stop_after_s.is_not(None))
            .where(JU.c.idle_since + P.c.idle_stop_after_s <= now)
            .exists()
        )
        for why, condition in (
            (StopWhy.CANCELLED, J.c.cancel_requested_at.is_not(None)),
            (StopWhy.TIMEOUT, started + J.c.max_runtime_s <= now),
            (StopWhy.IDLE, idle_too_long),
        ):
            rows = s.execute(
                update(J)
                .where(J.c.state.in_(ACTIVE))
                .where(condition)
                .where(J.c.stopping_at.is_(None))
                .values(stopping_at=now + self.cancel_grace_s, stop_reason=why.value)
                .returning(J.c.id, J.c.attempt)
            ).all()
            recorded.stops += [
                StopOrder(str(r.id), r.attempt, self.cancel_grace_s, why) for r in rows
            ]

    def _reserve(self, s: Session, snapshot: core.Snapshot, plan: core.Plan) -> None:
        now_reserved = {(r.flavor, r.job_id) for r in plan.reservations}
        if now_reserved == set(snapshot.reserved):
            return
        s.execute(update(J).where(J.c.reserved_flavor.is_not(None)).values(reserved_flavor=None))
        for flavor, job_id in now_reserved:
            s.execute(update(J).where(J.c.id == int(job_id)).values(reserved_flavor=flavor))

    def _reasons(self, s: Session, snapshot: core.Snapshot, plan: core.Plan) -> None:
        """Each waiting job's reason and start estimate: the latest forecast's (kept until
        the next), else the reason's own (a reservation's start, a reclaim's end of grace)."""
        if plan.forecasts is not None:
            self._forecasts = plan.forecasts
        changed = []
        for job in snapshot.pending:
            reason = plan.reason_for(job)
            if reason is None:
                continue
            forecast = self._forecasts.get(job.id)
            if forecast is None and reason.est_start is not None:
                forecast = core.StartForecast(reason.est_start, reason.est_start, reason.est_start)
            if reason.code in UNFORECAST or forecast is None:
                est = earliest = latest = unbounded = None
            else:
                est, earliest, latest = (
                    round(forecast.start),
                    round(forecast.earliest),
                    round(forecast.latest),
                )
                unbounded = forecast.unbounded
            value = (reason.code.value, reason.message, est, earliest, latest, unbounded)
            job_id = int(job.id)
            if self._written.get(job_id) != value:
                self._written[job_id] = value
                changed.append(
                    {
                        "b_id": job_id,
                        "b_code": value[0],
                        "b_reason": value[1],
                        "b_est": est,
                        "b_earliest": earliest,
                        "b_latest": latest,
                        "b_unbounded": unbounded,
                    }
                )
        if changed:
            s.execute(
                update(J)
                .where(J.c.id == bindparam("b_id"))
                .where(J.c.state == JobState.QUEUED.value)
                .values(
                    reason_code=bindparam("b_code"),
                    reason=bindparam("b_reason"),
                    est_start=bindparam("b_est"),
                    est_start_earliest=bindparam("b_earliest"),
                    est_start_latest=bindparam("b_latest"),
                    est_unbounded=bindparam("b_unbounded"),
                ),
                changed,
            )

    # --- 5. dispatch failed ----------------------------------------------------------------

    def dispatch_failed(self, order: StartOrder, error: DispatchError, now: float) -> None:
        job_id = int(order.job_id)
        with write_session(self.engine) as s:
            self._fence(s)
            cancelled = s.execute(
                select(J.c.cancel_requested_at.is_not(None)).where(J.c.id == job_id)
            ).scalar()
            if cancelled:
                outcome, message = JobState.CANCELLED, f"cancelled (dispatch failed: {error})"
            elif error.permanent:
                outcome, message = JobState.FAILED, f"dispatch failed: {error}"
            else:
                outcome, message = JobState.QUEUED, f"dispatch failed: {error}; requeued"
            self._end_attempt(s, job_id, order.attempt, now, "dispatch_failed", message)
            values: dict[str, Any] = {
                "state": outcome.value,
                "outcome": message,
                "stopping_at": None,
                "stop_reason": None,
            }
            if outcome is JobState.QUEUED:
                values |= {"reason_code": "dispatch", "reason": message}
            else:
                values["ended_at"] = now
            s.execute(
                update(J)
                .where(J.c.id == job_id)
                .where(J.c.attempt == order.attempt)
                .where(J.c.state.in_(ACTIVE))
                .values(**values)
            )

    # --- 1. events ---------------------------------------------------------------------------

    def apply(self, events: list[JobEvent], now: float) -> None:
        """In one transaction, set-based: a busy pool reports hundreds of events a tick.
        What the ended attempts' ledger entries need is read before it (SQLite has one
        write lock, and submissions wait for it): only this loop changes those attempts,
        and the transaction checks that it metered the same attempts with the same ends."""
        ends = [e for e in events if e.kind is not EventKind.RUNNING]
        prepared = None
        if ends:
            with read_session(self.engine) as r:
                ended = [end for _, end, _ in self._closing(r, ends)]
                prepared = (set(ended), meter(r, ended, self.metering))
        with write_session(self.engine) as s:
            self._fence(s)
            self._started(s, [e for e in events if e.kind is EventKind.RUNNING])
            self._ended(s, ends, prepared)

    def _closing(
        self, s: Session, events: list[JobEvent]
    ) -> list[tuple[JobEvent, Ended, JobState | None]]:
        """For each event that ends an attempt (not an old attempt's news, not a closed
        job's): (event, the attempt it ends, the job's final state or None: requeued)."""
        rows = {
            r.id: r
            for r in s.execute(
                select(
                    J.c.id, J.c.attempt, J.c.state, J.c.cancel_requested_at, J.c.stop_reason
                ).where(J.c.id.in_({int(e.job_id) for e in events}))
            )
        }
        found = []
        for event in events:
            row = rows.get(int(event.job_id))
            if row is None or row.attempt != event.attempt or row.state not in ACTIVE:
                continue  # an old attempt's news, or a job already closed
            final, outcome = _outcome(event, row.cancel_requested_at is not None, row.stop_reason)
            found.append((event, Ended(row.id, row.attempt, event.at, outcome), final))
        return found

    def _started(self, s: Session, events: list[JobEvent]) -> None:
        if not events:
            return
        params = [{"b_id": int(e.job_id), "b_attempt": e.attempt, "b_at": e.at} for e in events]
        s.execute(
            update(J)
            .where(J.c.id == bindparam("b_id"))
            .where(J.c.attempt == bindparam("b_attempt"))
            .where(J.c.state == JobState.ADMITTED.value)
            .values(state=JobState.RUNNING.value, started_at=bindparam("b_at")),
            params,
        )
        s.execute(
            update(T)
            .where(T.c.job_id == bindparam("b_id"))
            .where(T.c.number == bindparam("b_attempt"))
            .values(started_at=bindparam("b_at")),
            params,
        )

    def _ended(
        self,
        s: Session,
        events: list[JobEvent],
        prepared: tuple[set[Ended], list[dict[str, Any]]] | None = None,
    ) -> None:
        """Close the attempts the events end; append their ledger entries (`prepared`
        before the transaction, when they are still exactly these attempts' entries)."""
        if not events:
            return
        requeued, closed, attempts = [], [], []
        closing = self._closing(s, events)
        for event, end, final in closing:
            outcome = end.outcome
            attempts.append(
                {
                    "b_id": end.job_id,
                    "b_attempt": end.attempt,
                    "b_at": event.at,
                    "b_outcome": outcome,
                    "b_message": event.message,
                }
            )
            if final is None:
                reason = f"{outcome} ({event.message}); requeued" if event.message else outcome
                requeued.append({"b_id": end.job_id, "b_code": outcome, "b_reason": reason})
            else:
                closed.append(
                    {
                        "b_id": end.job_id,
                        "b_state": final.value,
                        "b_at": event.at,
                        "b_outcome": event.message or final.value,
                    }
                )
        if not attempts:
            return
        self._charge_usage(s, attempts)
        ended = [end for _, end, _ in closing]
        if prepared is not None and prepared[0] == set(ended):
            append(s, prepared[1])
        else:  # a cancel came in between, or no preparation: metered here
            append(s, meter(s, ended, self.metering))
        s.execute(
            update(A)
            .where(A.c.job_id == bindparam("b_id"))
            .where(A.c.attempt == bindparam("b_attempt"))
            .where(A.c.end.is_(None))
            .values(end=bindparam("b_at")),
            attempts,
        )
        s.execute(
            update(T)
            .where(T.c.job_id == bindparam("b_id"))
            .where(T.c.number == bindparam("b_attempt"))
            .values(
                ended_at=bindparam("b_at"),
                outcome=bindparam("b_outcome"),
                message=bindparam("b_message"),
            ),
            attempts,
        )
        if requeued:
            s.execute(
                update(J)
                .where(J.c.id == bindparam("b_id"))
                .values(
                    state=JobState.QUEUED.value,
                    stopping_at=None,
                    stop_reason=None,
                    reason_code=bindparam("b_code"),
                    reason=bindparam("b_reason"),
                    outcome=bindparam("b_reason"),
                ),
                requeued,
            )
        if closed:
            s.execute(
                update(J)
                .where(J.c.id == bindparam("b_id"))
                .values(
                    state=bindparam("b_state"),
                    stopping_at=None,
                    ended_at=bindparam("b_at"),
                    outcome=bindparam("b_outcome"),
                ),
                closed,
            )

    def _end_attempt(
        self, s: Session, job_id: int, attempt: int, at: float, outcome: str, message: str
    ) -> None:
        s.execute(
            update(A)
            .where(A.c.job_id == job_id)
            .where(A.c.attempt == attempt)
            .where(A.c.end.is_(None))
            .values(end=at)
        )
        s.execute(
            update(T)
            .where(T.c.job_id == job_id)
            .where(T.c.number == attempt)
            .values(ended_at=at, outcome=outcome, message=message)
        )

    def _charge_usage(self, s: Session, ended: list[dict[str, Any]]) -> None:
        """Fair share remembers what ended attempts used (decayed, as the core counts it)."""
        at = {(e["b_id"], e["b_attempt"]): e["b_at"] for e in ended}
        pieces = s.execute(
            select(A.c.job_id, A.c.attempt, A.c.gpus, A.c.start, J.c.project)
            .join(J, J.c.id == A.c.job_id)
            .where(A.c.job_id.in_({job for job, _ in at}))
            .where(A.c.end.is_(None))
        ).all()
        used: dict[str, tuple[float, float]] = {}
        for p in pieces:
            end = at.get((p.job_id, p.attempt))
            if end is not None:
                gpu_s, latest = used.get(p.project, (0.0, 0.0))
                used[p.project] = (gpu_s + p.gpus * max(end - p.start, 0.0), max(latest, end))
        for project, (gpu_s, latest) in used.items():
            row = s.get(Project, project)
            if row is not None and gpu_s > 0:
                row.usage_gpu_s = (
                    decay(row.usage_gpu_s, row.usage_at, latest, self.half_life_s) + gpu_s
                )
                row.usage_at = max(row.usage_at, latest)
                s.add(row)

    # --- 1. nodes the engine has ------------------------------------------------------------

    def sight_nodes(self, sighting: NodeSighting, now: float) -> list[str]:
        """Nodes in service the engine lacks go down with the sighting's reason (their jobs
        are the dispatcher's to report lost); nodes down for that very reason that it has
        again come back up. Draining nodes, and nodes down for another reason (an agent's
        missed heartbeats), are left as they are."""
        up, down = NodeStateName.UP.value, NodeStateName.DOWN.value
        with read_session(self.engine) as s:
            rows = s.execute(select(N.c.name, N.c.state, N.c.state_reason)).all()
        leaving = [r.name for r in rows if r.state == up and r.name not in sighting.present]
        back = [
            r.name
            for r in rows
            if r.state == down
            and r.state_reason == sighting.absent_reason
            and r.name in sighting.present
        ]
        if not leaving and not back:
            return []
        changed = []
        with write_session(self.engine) as s:
            self._fence(s)
            for names, old, new, reason in (
                (leaving, up, down, sighting.absent_reason),
                (back, down, up, ""),
            ):
                for name in names:
                    query = update(N).where(N.c.name == name).where(N.c.state == old)
                    if old == down:
                        query = query.where(N.c.state_reason == sighting.absent_reason)
                    result = s.execute(query.values(state=new, state_reason=reason))
                    if result.rowcount:  # type: ignore[attr-defined]
                        note = sighting.absent_reason if new == down else "back in the engine"
                        record_change(s, "scheduler", f"node:{name}", "state", old, new, now, note)
                        changed.append(name)
        return changed

    def take_down_silent_nodes(self, now: float) -> list[StopOrder]:
        """Nodes up or draining whose agents have reported before but not for
        heartbeat_timeout_s go down ("missed heartbeats: ...", keeping a drain's reason for
        when the agent is back); their attempts end lost and are requeued. Judged only once
        this leader has led that long itself: after a restart of the control plane, every
        agent looks silent until it reports again."""
        timeout = self.heartbeat_timeout_s
        if timeout is None or self._claimed_at is None or now < self._next_heartbeat_check:
            return []
        self._next_heartbeat_check = now + self.heartbeat_check_s
        cutoff = now - timeout
        if self._claimed_at > cutoff:
            return []
        live = (NodeStateName.UP.value, NodeStateName.DRAINING.value)
        with read_session(self.engine) as s:
            silent = s.execute(
                select(N.c.name, N.c.state, N.c.state_reason, NT.c.received_at)
                .join(NT, NT.c.node == N.c.name)
                .where(N.c.state.in_(live), NT.c.received_at < cutoff)
            ).all()
        if not silent:
            return []
        stops: list[StopOrder] = []
        with write_session(self.engine) as s:
            self._fence(s)
            for node in silent:
                drained = node.state_reason if node.state == NodeStateName.DRAINING else None
                reason = silent_reason(node.received_at, drained)
                done = s.execute(
                    update(N)
                    .where(N.c.name == node.name, N.c.state == node.state)
                    .values(state=NodeStateName.DOWN.value, state_reason=reason)
                )
                if not done.rowcount:  # type: ignore[attr-defined]
                    continue
                record_change(
                    s, "scheduler", f"node:{node.name}", "state", node.state, "down", now, reason
                )
                attempts = s.execute(
                    select(A.c.job_id, A.c.attempt)
                    .join(J, and_(J.c.id == A.c.job_id, J.c.attempt == A.c.attempt))
                    .where(A.c.node == node.name, A.c.end.is_(None), J.c.state.in_(ACTIVE))
                    .distinct()
                ).all()
                lost = [
                    JobEvent(
                        str(a.job_id),
                        a.attempt,
                        EventKind.LOST,
                        now,
                        f"node {node.name} down: {reason}",
                    )
                    for a in attempts
                ]
                self._ended(s, lost)
                stops += [StopOrder(e.job_id, e.attempt, 0.0, StopWhy.NODE_DOWN) for e in lost]
        return stops

    # --- 0. a new leader -----------------------------------------------------------------

    def active_attempts(self) -> list[tuple[str, int]]:
        with read_session(self.engine) as s:
            rows = s.execute(select(J.c.id, J.c.attempt).where(J.c.state.in_(ACTIVE))).all()
        return [(str(r.id), r.attempt) for r in rows]

    def outstanding(self, now: float) -> Recorded:
        recorded = Recorded()
        with read_session(self.engine) as s:
            jobs = s.exec(select(Job).where(col(Job.state).in_(ACTIVE))).scalars().all()  # type: ignore[call-overload]
            pieces: dict[tuple[int, int], list[tuple[str, int]]] = defaultdict(list)
            for a in s.exec(select(Allocation).where(col(Allocation.end).is_(None))).scalars():  # type: ignore[call-overload]
                pieces[(a.job_id, a.attempt)].append((a.node, a.gpus))
            for job in jobs:
                if job.stopping_at is not None:
                    why = StopWhy(job.stop_reason or StopWhy.PREEMPTED.value)
                    if job.cancel_requested_at is not None:
                        why = StopWhy.CANCELLED
                    grace = max(job.stopping_at - now, 0.0)
                    recorded.stops.append(StopOrder(str(job.id), job.attempt, grace, why))
                elif job.state == JobState.ADMITTED.value:
                    flavor = job.flavor_used or job.flavor
                    recorded.starts.append(
                        StartOrder(
                            str(job.id),
                            job.attempt,
                            job.project,
                            job.user,
                            job.entrypoint,
                            flavor,
                            tuple(pieces[(job.id, job.attempt)]),
                            job.max_runtime_s,
                            dict(job.runtime_env or {}),
                        )
                    )
        return recorded


def _outcome(
    event: JobEvent, cancelled: bool, stop_reason: str | None
) -> tuple[JobState | None, str]:
    """The job's final state (None: requeued for another attempt) and the attempt's outcome.
    A cancelled job ends cancelled however its attempt ended short of success."""
    if cancelled and event.kind in (EventKind.STOPPED, EventKind.LOST):
        return JobState.CANCELLED, JobState.CANCELLED.value
    if event.kind is EventKind.STOPPED:
        if stop_reason == StopWhy.TIMEOUT.value:
            return JobState.TIMEOUT, JobState.TIMEOUT.value
        if stop_reason == StopWhy.IDLE.value:
            return JobState.CANCELLED, StopWhy.IDLE.value  # its GPUs idle too long
        return None, StopWhy.PREEMPTED.value
    if event.kind is EventKind.LOST:
        return None, EventKind.LOST.value
    final = JobState(event.kind.value)
    return final, final.value
