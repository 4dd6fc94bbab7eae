"""The allocation core's vocabulary: what a snapshot holds and what a plan decides.

Everything here is plain, immutable data. Times are seconds on whatever clock the caller
uses (the simulator's virtual clock, the service's wall clock); the core never reads one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

ANY_FLAVOR = "*"
"""A job whose flavor is ANY_FLAVOR may run on any GPU type the pool has."""


class NodeState(StrEnum):
    UP = "up"
    DRAINING = "draining"  # runs what it has, takes nothing new
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    flavor: str
    gpus: int
    group: str = ""  # topology group: rack or switch label
    state: NodeState = NodeState.UP


@dataclass(frozen=True, slots=True)
class Sector:
    name: str
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class FlavorQuota:
    guaranteed: int
    limit: int  # borrowing ceiling, >= guaranteed
    credit_rate: float = 1.0  # credits per GPU-hour the project pays on this flavor


def credits_for(gpus: int, seconds: float, rate: float) -> float:
    """Credits `gpus` GPUs cost for `seconds` at `rate` credits per GPU-hour."""
    return gpus * seconds / 3600.0 * rate


@dataclass(frozen=True, slots=True)
class Project:
    name: str
    sector: str
    quotas: dict[str, FlavorQuota] = field(default_factory=dict)
    # None: no credit budget is enforced. Otherwise credits (weighted GPU-hours) left:
    # granted + earned - used, where used does not yet count its running jobs (the core
    # commits their whole limit at admission: see SchedulerState.credits_free).
    credits_left: float | None = None
    # Weight within its sector for fair sharing; None: the sum of its guarantees.
    share: float | None = None
    # Usage in GPU-seconds, decayed with the policy's half-life, as of `usage_at`.
    usage_gpu_s: float = 0.0
    usage_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Job:
    """A job waiting for GPUs."""

    id: str
    project: str
    gpus: int
    flavor: str
    submit_time: float
    max_runtime: float  # seconds; backfill estimates and billing depend on it
    priority: int = 0
    nodes: int | None = None  # spread over exactly this many nodes, gpus/nodes each
    user: str = ""
    # How long it is expected to run, for backfill only (say, predicted from the history of
    # its user or project); None: max_runtime. max_runtime stays the limit it is held to.
    estimate: float | None = None

    @property
    def expected_runtime(self) -> float:
        if self.estimate is None:
            return self.max_runtime
        return min(self.estimate, self.max_runtime)


Piece = tuple[str, int]
"""(node name, GPU count): one part of a placement."""


@dataclass(frozen=True, slots=True)
class Running:
    """A job holding GPUs (admitted or running)."""

    job_id: str
    project: str
    flavor: str
    pieces: tuple[Piece, ...]
    start: float
    max_runtime: float
    priority: int = 0
    # Set once a preemption was ordered: the GPUs are free at this time ...
    stopping_at: float | None = None
    # ... and the waiting job they are freed for.
    preempted_for: str | None = None
    estimate: float | None = None  # expected run time for backfill (see Job.estimate)
    gpus: int = field(init=False, compare=False)  # the sum of the pieces

    def __post_init__(self) -> None:
        object.__setattr__(self, "gpus", sum(n for _, n in self.pieces))

    @property
    def expected_end(self) -> float:
        """When its GPUs are expected back: the end of a preemption's grace period, or of
        its estimated run (which it may overrun: see latest_end)."""
        if self.stopping_at is not None:
            return self.stopping_at
        if self.estimate is None:
            return self.start + self.max_runtime
        return self.start + min(self.estimate, self.max_runtime)

    @property
    def latest_end(self) -> float:
        """When it must have ended: its limit, or the end of a preemption's grace period."""
        if self.stopping_at is not None:
            return self.stopping_at
        return self.start + self.max_runtime


@dataclass(frozen=True, slots=True)
class Snapshot:
    nodes: tuple[Node, ...]
    sectors: tuple[Sector, ...]
    projects: tuple[Project, ...]
    pending: tuple[Job, ...]
    running: tuple[Running, ...] = ()
    # (flavor, job id) of the waiting jobs that hold a backfill reservation: they keep it.
    reserved: tuple[tuple[str, str], ...] = ()


class ReasonCode(StrEnum):
    CAPACITY = "capacity"  # waiting for free GPUs
    RESERVED = "reserved"  # first blocked job: holds a backfill reservation
    BACKFILL = "backfill"  # would fit, but would delay the reserved job
    RECLAIMING = "reclaiming"  # in quota; borrowers are being preempted for it
    OVER_LIMIT = "over_limit"
    CREDITS = "credits"
    PROJECT = "project"  # project unknown or not active
    NEVER_FITS = "never_fits"


@dataclass(frozen=True, slots=True)
class Reason:
    code: ReasonCode
    message: str
    est_start: float | None = None
    field: str = ""  # for rejections: the job field at fault (gpus, nodes, flavor)

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class StartForecast:
    """When a waiting job is likely to start (`start`), and between which times
    (`earliest`, `latest`); `unbounded`: how many of the jobs it waits on (running, or
    forecast to start before it) have no history that says when they end (forecast.py)."""

    start: float
    earliest: float
    latest: float
    unbounded: int = 0


@dataclass(frozen=True, slots=True)
class Admission:
    job_id: str
    flavor: str
    pieces: tuple[Piece, ...]
    borrowed: bool


@dataclass(frozen=True, slots=True)
class Preemption:
    job_id: str
    for_job: str
    stop_at: float  # end of the grace period
    reason: str


@dataclass(frozen=True, slots=True)
class Reservation:
    job_id: str
    flavor: str
    start: float
    pieces: tuple[Piece, ...]


class ReasonBook:
    """The latest reason of every waiting job, across cycles.

    A quick cycle decides only for the queues it looked at; the others' reasons stand, and
    this is where they stand. Job-level and queue-level reasons are stamped with the cycle
    that gave them, and the newer one wins (a job's own reason on a tie).
    """

    __slots__ = ("_jobs", "_queues")

    def __init__(self) -> None:
        self._jobs: dict[str, tuple[int, Reason]] = {}
        self._queues: dict[tuple[str, str], tuple[int, Reason]] = {}

    def record(self, plan: Plan, cycle: int) -> None:
        for job_id, reason in plan.job_reasons.items():
            self._jobs[job_id] = (cycle, reason)
        for key, reason in plan.queue_reasons.items():
            self._queues[key] = (cycle, reason)
        for job_id in plan.admitted:
            self._jobs.pop(job_id, None)

    def forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    def forget_queue(self, key: tuple[str, str]) -> None:
        self._queues.pop(key, None)

    def reason_for(self, job: Job) -> Reason | None:
        own = self._jobs.get(job.id)
        queue = self._queues.get((job.project, job.flavor))
        if own is None or (queue is not None and queue[0] > own[0]):
            return None if queue is None else queue[1]
        return own[1]


@dataclass(slots=True)
class Plan:
    """What one scheduling cycle decided. Every pending job not admitted has a reason."""

    now: float
    full: bool = True  # False: a quick cycle that looked only at what changed
    admissions: list[Admission] = field(default_factory=list)
    preemptions: list[Preemption] = field(default_factory=list)
    reservations: list[Reservation] = field(default_factory=list)
    rejections: dict[str, Reason] = field(default_factory=dict)
    # Reasons of jobs this cycle looked at one by one ...
    job_reasons: dict[str, Reason] = field(default_factory=dict)
    # ... and of whole queues it did not need to walk, keyed by (project, flavor).
    queue_reasons: dict[tuple[str, str], Reason] = field(default_factory=dict)
    admitted: set[str] = field(default_factory=set)
    # Where the reasons of queues this (quick) cycle did not look at stand: the state's live
    # book, so an old plan answers with today's reasons for those.
    earlier: ReasonBook | None = None
    # Start forecasts of the waiting jobs, when the caller made them after this cycle (None:
    # not this time; scheduler/core/forecast.py). For people: they decide nothing.
    forecasts: dict[str, StartForecast] | None = None

    def reason_for(self, job: Job) -> Reason | None:
        """Why a pending job is still waiting; None if this plan admitted it.

        A quick cycle answers for the queues it did not look at with the reason they were
        last given.
        """
        if job.id in self.admitted:
            return None
        reason = self.job_reasons.get(job.id) or self.rejections.get(job.id)
        reason = reason or self.queue_reasons.get((job.project, job.flavor))
        if reason is None and self.earlier is not None:
            return self.earlier.reason_for(job)
        return reason
