"""The pool's utilization, for operators: the per-minute history behind the charts, the
figures of the moment, the queue with its reasons, and the idle allocations.

The history is utilization_minutes (web.models.UtilizationMinute), one row per (minute,
flavor, sector), written from two sides:
- the agents' reports add the GPU-seconds they saw (held, utilization-weighted busy, and
  idle) in the telemetry writer's transaction (web/services/telemetry.py);
- the scheduling loop's leader, once a minute in its fenced transaction, sets the GPUs
  allocated per (flavor, sector) and each flavor's capacity (on the row of sector "")
  with `sample_minute`.
Rows older than GPUPOOL_TELEMETRY_HISTORY_DAYS go with the GPUs' history
(TelemetryIngest.prune_history).

Everything here reads with aggregate SQL (GROUP BY minute, bucket, state, reason) or one
page of rows: the operators' pages stay fast with 10,000 nodes and 100,000 jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, and_, case, func, select, update
from sqlmodel import Session, col

from web.enums import ACTIVE_JOB_STATE_VALUES
from web.models import (
    Allocation,
    Job,
    JobPage,
    JobPublic,
    JobState,
    JobUsage,
    Node,
    NodeStateName,
    Project,
    Role,
    Sector,
    UtilizationMinute,
)
from web.services.auth import Principal
from web.services.jobs import public_jobs
from web.services.telemetry import upsert

UM = UtilizationMinute.__table__  # type: ignore[attr-defined]
A = Allocation.__table__  # type: ignore[attr-defined]
J = Job.__table__  # type: ignore[attr-defined]
JU = JobUsage.__table__  # type: ignore[attr-defined]
N = Node.__table__  # type: ignore[attr-defined]
P = Project.__table__  # type: ignore[attr-defined]
S = Sector.__table__  # type: ignore[attr-defined]

CAPACITY_SECTOR = ""  # the row of a (minute, flavor) that holds its capacity
IN_SERVICE = (NodeStateName.UP.value, NodeStateName.DRAINING.value)
# A chart's buckets, in minutes: the smallest that keeps it within MAX_POINTS points.
BUCKETS_MIN = (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440)
MAX_POINTS = 300


# --- writing: the loop's sample ------------------------------------------------------------


def sample_minute(s: Session, minute: int) -> None:
    """Set the minute's GPUs allocated per (flavor, sector) (open allocations, by their
    jobs' projects' sectors) and each flavor's capacity (GPUs of nodes up or draining),
    aggregated in SQL. A minute sampled again (a new leader) is sampled anew."""
    allocated = s.execute(
        select(A.c.flavor, P.c.sector, func.sum(A.c.gpus).label("gpus"))
        .join(J, J.c.id == A.c.job_id)
        .join(P, P.c.name == J.c.project)
        .where(A.c.end.is_(None))
        .group_by(A.c.flavor, P.c.sector)
        .order_by(A.c.flavor, P.c.sector)
    ).all()
    capacity = s.execute(
        select(
            N.c.flavor,
            func.sum(case((N.c.state.in_(IN_SERVICE), N.c.gpus), else_=0)).label("gpus"),
        )
        .group_by(N.c.flavor)
        .order_by(N.c.flavor)
    ).all()
    s.execute(update(UM).where(UM.c.minute == minute, UM.c.allocated != 0).values(allocated=0))
    keys = ("minute", "flavor", "sector")
    upsert(
        s,
        UM,
        [
            {"minute": minute, "flavor": r.flavor, "sector": r.sector, "allocated": int(r.gpus)}
            for r in allocated
        ],
        keys=keys,
    )
    upsert(
        s,
        UM,
        [
            {
                "minute": minute,
                "flavor": r.flavor,
                "sector": CAPACITY_SECTOR,
                "capacity": int(r.gpus or 0),
            }
            for r in capacity
        ],
        keys=keys,
    )


# --- reading: the charts ---------------------------------------------------------------------


def bucket_minutes(span_s: float) -> int:
    """The bucket (in minutes) for a chart over `span_s`: at most MAX_POINTS points."""
    minutes = max(1, int(span_s // 60))
    for size in BUCKETS_MIN:
        if minutes / size <= MAX_POINTS:
            return size
    return BUCKETS_MIN[-1]


@dataclass(frozen=True, slots=True)
class UtilizationPoint:
    """One bucket of a chart: its start (seconds since the epoch) and GPUs allocated and
    in service (`capacity`), averaged over the minutes the loop sampled (None where it
    sampled none), and busy (held and used: (gpu_s - idle_gpu_s) / 60) and idle, averaged
    over the bucket's minutes in the range (a minute no agent reported counts 0)."""

    at: float
    allocated: float | None
    busy: float
    idle: float
    capacity: float | None


@dataclass(slots=True)
class UtilizationOverview:
    """The charts of a range: the whole pool, each flavor that has rows (by name), and
    the GPUs allocated per sector (bucket start, GPUs) over every flavor."""

    bucket_s: int
    whole: list[UtilizationPoint] = field(default_factory=list)
    flavors: dict[str, list[UtilizationPoint]] = field(default_factory=dict)
    sectors: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


@dataclass(slots=True)
class _Sums:
    allocated: float = 0.0
    busy_s: float = 0.0
    idle_s: float = 0.0
    sampled: int = 0  # minutes the loop sampled (the capacity rows)
    capacity: float = 0.0


def overview(
    s: Session, asker: Principal, since: float, until: float, sector: str | None = None
) -> UtilizationOverview:
    """The utilization over [since, until) in buckets (bucket_minutes): one scan of the
    range, GROUP BY (flavor, sector, bucket) in SQL (at most ~300 buckets x flavors x
    sectors rows come back), summed up here per flavor, for the whole pool and per
    sector. With `sector`, the whole pool's and the flavors' allocated, busy and idle
    GPUs are that sector's (capacity stays every sector's); the per-sector figures are
    always every sector's."""
    asker.require(Role.OPERATOR, Role.ADMIN)
    size = bucket_minutes(until - since)
    first, last = int(since // 60), int(until // 60)
    bucket = (UM.c.minute // size).label("bucket")
    rows = s.execute(
        select(
            UM.c.flavor,
            UM.c.sector,
            bucket,
            func.count().label("minutes"),
            func.sum(UM.c.allocated).label("allocated"),
            func.sum(_readable(UM.c.gpu_s) - _readable(UM.c.idle_gpu_s)).label("busy_s"),
            func.sum(_readable(UM.c.idle_gpu_s)).label("idle_s"),
            func.sum(UM.c.capacity).label("capacity"),
        )
        .where(UM.c.minute >= first, UM.c.minute < last)
        .group_by(UM.c.flavor, UM.c.sector, bucket)
    ).all()
    sums: dict[tuple[str, int], _Sums] = {}
    per_sector: dict[tuple[str, str, int], float] = {}
    for r in rows:
        cell = sums.setdefault((r.flavor, int(r.bucket)), _Sums())
        if r.sector == CAPACITY_SECTOR:
            cell.sampled += int(r.minutes)
            cell.capacity += float(r.capacity or 0)
            continue
        per_sector[(r.flavor, r.sector, int(r.bucket))] = float(r.allocated or 0)
        if sector is None or r.sector == sector:
            cell.allocated += float(r.allocated or 0)
            cell.busy_s += float(r.busy_s or 0.0)
            cell.idle_s += float(r.idle_s or 0.0)

    def seconds(b: int) -> float:
        """The bucket's time within the range."""
        return 60.0 * max(1, min((b + 1) * size, last) - max(b * size, first))

    found = UtilizationOverview(size * 60)
    whole: dict[int, list[float | None]] = {}
    for (flavor, b), cell in sorted(sums.items()):
        point = UtilizationPoint(
            at=float(b * size * 60),
            allocated=cell.allocated / cell.sampled if cell.sampled else None,
            busy=max(0.0, cell.busy_s) / seconds(b),
            idle=cell.idle_s / seconds(b),
            capacity=cell.capacity / cell.sampled if cell.sampled else None,
        )
        found.flavors.setdefault(flavor, []).append(point)
        total = whole.setdefault(b, [None, 0.0, 0.0, None])
        if point.allocated is not None and point.capacity is not None:
            total[0] = (total[0] or 0.0) + point.allocated
            total[3] = (total[3] or 0.0) + point.capacity
        total[1] = (total[1] or 0.0) + point.busy
        total[2] = (total[2] or 0.0) + point.idle
    found.whole = [
        UtilizationPoint(float(b * size * 60), a, busy or 0.0, idle or 0.0, c)
        for b, (a, busy, idle, c) in sorted(whole.items())
    ]
    for (flavor, name, b), allocated in sorted(per_sector.items(), key=lambda i: i[0][1:]):
        sampled = sums[(flavor, b)].sampled
        if not sampled:
            continue
        points = found.sectors.setdefault(name, [])
        at = float(b * size * 60)
        if points and points[-1][0] == at:
            points[-1] = (at, points[-1][1] + allocated / sampled)
        else:
            points.append((at, allocated / sampled))
    return found


# --- reading: the figures of the moment -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeCount:
    state: str
    nodes: int
    gpus: int


@dataclass(frozen=True, slots=True)
class PoolNow:
    """The headline figures: nodes and GPUs per state, GPUs allocated now, busy and idle
    in the last whole minute the agents reported, the queue."""

    states: list[NodeCount]
    allocated: int
    busy: float
    idle: float
    queued_jobs: int
    queued_gpus: int
    minute: int  # the minute `busy` and `idle` are of

    def gpus(self, state: str) -> int:
        return sum(c.gpus for c in self.states if c.state == state)

    def nodes(self, state: str) -> int:
        return sum(c.nodes for c in self.states if c.state == state)


# A minute's GPU-seconds of one flavor and sector: 60 s x 16 billion GPUs is past any pool.
MAX_MINUTE_GPU_S = 1e12


def _readable(column: ColumnElement[float]) -> ColumnElement[float | None]:
    """The column where it holds a plausible value, else NULL (which SUM skips): a sum
    stored before the agents' numbers were bounded (infinity, 1e308: PostgreSQL's SUM
    fails on overflow, SQLite's gives infinity) never takes the operators' pages down."""
    return case((column.between(-MAX_MINUTE_GPU_S, MAX_MINUTE_GPU_S), column), else_=None)


def pool_now(s: Session, asker: Principal, now: float, flavor: str | None = None) -> PoolNow:
    asker.require(Role.OPERATOR, Role.ADMIN)
    nodes = select(N.c.state, func.count().label("nodes"), func.sum(N.c.gpus).label("gpus"))
    allocated = select(func.coalesce(func.sum(A.c.gpus), 0)).where(A.c.end.is_(None))
    minute = int(now // 60) - 1
    seen = select(
        func.coalesce(func.sum(_readable(UM.c.gpu_s) - _readable(UM.c.idle_gpu_s)), 0.0),
        func.coalesce(func.sum(_readable(UM.c.idle_gpu_s)), 0.0),
    ).where(UM.c.minute == minute)
    queued = select(func.count(), func.coalesce(func.sum(J.c.gpus), 0)).where(
        J.c.state == JobState.QUEUED.value
    )
    if flavor is not None:
        nodes = nodes.where(N.c.flavor == flavor)
        allocated = allocated.where(A.c.flavor == flavor)
        seen = seen.where(UM.c.flavor == flavor)
        queued = queued.where(J.c.flavor == flavor)
    states = [
        NodeCount(r.state, int(r.nodes), int(r.gpus or 0))
        for r in s.execute(nodes.group_by(N.c.state).order_by(N.c.state))
    ]
    busy_s, idle_s = s.execute(seen).one()
    jobs, gpus = s.execute(queued).one()
    return PoolNow(
        states=states,
        allocated=int(s.execute(allocated).scalar() or 0),
        busy=max(0.0, float(busy_s)) / 60.0,
        idle=float(idle_s) / 60.0,
        queued_jobs=int(jobs),
        queued_gpus=int(gpus),
        minute=minute,
    )


def sector_names(s: Session) -> list[str]:
    return list(s.execute(select(S.c.name).order_by(S.c.name)).scalars())


# --- the queue ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReasonCount:
    code: str
    jobs: int
    gpus: int


def _queued(
    project: str | None, flavor: str | None, reason_code: str | None
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [J.c.state == JobState.QUEUED.value]
    if project is not None:
        where.append(J.c.project == project)
    if flavor is not None:
        where.append(J.c.flavor == flavor)
    if reason_code is not None:
        where.append(J.c.reason_code == reason_code)
    return where


def queue_reasons(
    s: Session, asker: Principal, *, project: str | None = None, flavor: str | None = None
) -> list[ReasonCount]:
    """Queued jobs (and their GPUs) per reason code, the most jobs first."""
    asker.require(Role.OPERATOR, Role.ADMIN)
    jobs = func.count().label("jobs")
    rows = s.execute(
        select(J.c.reason_code, jobs, func.sum(J.c.gpus).label("gpus"))
        .where(*_queued(project, flavor, None))
        .group_by(J.c.reason_code)
        .order_by(jobs.desc(), J.c.reason_code)
    ).all()
    return [ReasonCount(r.reason_code, int(r.jobs), int(r.gpus or 0)) for r in rows]


def queue_page(
    s: Session,
    asker: Principal,
    *,
    project: str | None = None,
    flavor: str | None = None,
    reason_code: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> JobPage:
    """A page of the queued jobs of every project, oldest first (by id), filtered by
    project, flavor (as asked) and reason code."""
    asker.require(Role.OPERATOR, Role.ADMIN)
    where = _queued(project, flavor, reason_code)
    total = s.execute(select(func.count()).select_from(J).where(*where)).scalar()
    ids = list(
        s.execute(
            select(J.c.id).where(*where).order_by(J.c.id).limit(limit).offset(offset)
        ).scalars()
    )
    return JobPage(items=_jobs(s, ids), total=int(total or 0), limit=limit, offset=offset)


def _jobs(s: Session, ids: Sequence[int], idle_flag_before: float | None = None) -> list[JobPublic]:
    """The jobs of `ids`, in that order, as callers see them."""
    rows = {j.id: j for j in s.execute(select(Job).where(col(Job.id).in_(ids))).scalars()}
    return public_jobs(s, [rows[i] for i in ids if i in rows], idle_flag_before)


# --- idle allocations ---------------------------------------------------------------------------


def idle_page(
    s: Session, asker: Principal, idle_flag_before: float, *, limit: int = 50, offset: int = 0
) -> JobPage:
    """Running jobs whose GPUs have all been idle since before `idle_flag_before` (now
    less GPUPOOL_IDLE_FLAG_AFTER_S, as the API flags them), the longest idle first; each
    carries `idle_since`."""
    asker.require(Role.OPERATOR, Role.ADMIN)
    where = (
        J.c.state.in_(ACTIVE_JOB_STATE_VALUES),
        JU.c.idle_since.is_not(None),
        JU.c.idle_since <= idle_flag_before,
    )
    joined = J.join(JU, and_(JU.c.job_id == J.c.id, JU.c.attempt == J.c.attempt))
    total = s.execute(select(func.count()).select_from(joined).where(*where)).scalar()
    ids = list(
        s.execute(
            select(J.c.id)
            .select_from(joined)
            .where(*where)
            .order_by(JU.c.idle_since, J.c.id)
            .limit(limit)
            .offset(offset)
        ).scalars()
    )
    return JobPage(
        items=_jobs(s, ids, idle_flag_before), total=int(total or 0), limit=limit, offset=offset
    )
