"""What the live loop needs from the world, as Protocols. web/services implements the
database side (SnapshotSource, DecisionSink, Leadership); dispatchers run the jobs."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from scheduler.core import Plan, Snapshot
from scheduler.core.types import Piece


class Clock(Protocol):
    def now(self) -> float: ...


@dataclass(frozen=True, slots=True)
class StartOrder:
    """Run attempt `attempt` of a job on exactly these pieces (node, GPUs)."""

    job_id: str
    attempt: int
    project: str
    user: str
    entrypoint: str
    flavor: str
    pieces: tuple[Piece, ...]
    max_runtime_s: float
    runtime_env: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """One key per attempt: a retried start never runs an attempt twice."""
        return f"{self.job_id}-{self.attempt}"


class StopWhy(StrEnum):
    PREEMPTED = "preempted"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    NODE_DOWN = "node down"  # its node went silent: the attempt was requeued already
    IDLE = "idle"  # its GPUs idle longer than its project allows


@dataclass(frozen=True, slots=True)
class StopOrder:
    job_id: str
    attempt: int
    grace_s: float  # SIGTERM now; its GPUs count as free after this
    why: StopWhy

    @property
    def key(self) -> str:
        return f"{self.job_id}-{self.attempt}"


class EventKind(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"  # ended after a stop order
    LOST = "lost"  # the dispatcher lost it (node gone)


@dataclass(frozen=True, slots=True)
class JobEvent:
    job_id: str
    attempt: int
    kind: EventKind
    at: float
    message: str = ""


@dataclass(frozen=True, slots=True)
class NodeSighting:
    """Which pool nodes the engine has now (by gpupool name), from a dispatcher that can
    tell. A registered node missing from `present` is taken out of service with
    `absent_reason`, and returns to service once it is present again."""

    present: frozenset[str]
    absent_reason: str


class DispatchError(Exception):
    """A start the dispatcher refused. Permanent: the job cannot run as given (say, a
    runtime_env the engine rejects) and fails; otherwise it is requeued."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Dispatcher(Protocol):
    def start(self, order: StartOrder) -> None:
        """Start the attempt (idempotent per order.key); DispatchError if it cannot."""

    def stop(self, order: StopOrder) -> None:
        """Ask the attempt to stop (idempotent)."""

    def poll(self) -> list[JobEvent]:
        """What happened to started attempts since the last poll."""

    def known(self) -> set[str]:
        """The keys (StartOrder.key) of the attempts it is running now."""

    # Optional: `poll_every_s: float | None`, how often the loop should poll it between
    # ticks now (None: no need), so that what it sees is recorded within that (see
    # SchedulingLoop._wait_for_work). Dispatchers without it are polled once a tick.
    #
    # Optional: `sight_nodes() -> NodeSighting | None`, the nodes the engine has, when it
    # has a new answer (None: nothing new, or it cannot tell now). Dispatchers without it
    # leave node health to the agents.


class SnapshotSource(Protocol):
    def snapshot(self, now: float) -> Snapshot: ...

    # Optional: `run_times(now) -> scheduler.core.forecast.RunModel`, how long jobs run by
    # their history, for start forecasts. Without it every job is forecast at its limit.


@dataclass(slots=True)
class Recorded:
    """What a cycle's decisions, once assumed, ask the dispatcher to do."""

    starts: list[StartOrder] = field(default_factory=list)
    stops: list[StopOrder] = field(default_factory=list)


class Deposed(Exception):
    """Another loop leads now: this one's decisions must not be recorded."""


class DecisionSink(Protocol):
    def claim(self, holder: str, now: float) -> None:
        """Start a leadership: from now on, the writes of any earlier leader fail (Deposed)
        and this one's succeed until a later leader claims."""

    def record(self, snapshot: Snapshot, plan: Plan, now: float) -> Recorded:
        """Assume the plan in one transaction: admissions hold their GPUs, preemptions and
        cancellations get their stop time, every waiting job its reason."""

    def dispatch_failed(self, order: StartOrder, error: DispatchError, now: float) -> None:
        """Release the attempt's GPUs; requeue the job (or fail it, if permanent)."""

    def apply(self, events: list[JobEvent], now: float) -> None:
        """Running, ended, stopped, lost: state, allocations and usage follow."""

    def outstanding(self, now: float) -> Recorded:
        """What a new leader must (re)send: admitted attempts not known to run, stops
        ordered and not yet confirmed. Sending them again is harmless (keys)."""

    def active_attempts(self) -> list[tuple[str, int]]:
        """(job id, attempt) of every attempt the records say holds GPUs."""

    def take_down_silent_nodes(self, now: float) -> list[StopOrder]:
        """Nodes whose agents stopped reporting go down, and the attempts on them end lost
        (requeued); the stops to send them, in case they still run."""

    def sight_nodes(self, sighting: NodeSighting, now: float) -> list[str]:
        """Take the nodes in service that the engine lacks out of it (down, with the
        sighting's reason), return to service those taken out for that reason that it has
        again; the names of the nodes changed."""


class Leadership(Protocol):
    """Exactly one loop acts at a time."""

    def try_acquire(self) -> bool: ...

    def held(self) -> bool:
        """Whether this process still leads (False once the lock is lost)."""

    def release(self) -> None: ...
