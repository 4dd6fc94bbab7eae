"""An in-process dispatcher that runs nothing: for tests, benchmarks and demos of the
control plane without an execution engine. It keeps the engine's contract: starts are
idempotent per attempt, stops end an attempt, and what happens is reported by poll()."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from scheduler.runtime.ports import (
    Clock,
    DispatchError,
    EventKind,
    JobEvent,
    StartOrder,
    StopOrder,
)


@dataclass(slots=True)
class FakeRun:
    order: StartOrder
    started_at: float
    ends_at: float | None  # None: runs until finished or stopped
    stop: StopOrder | None = None


class InProcessDispatcher:
    """Attempts 'run' until `finish()` is called, or for `run_for(order)` seconds of the
    clock. `refuse` decides whether a start fails (a message) and whether for good."""

    def __init__(
        self,
        clock: Clock,
        run_for: Callable[[StartOrder], float | None] = lambda order: None,
        refuse: Callable[[StartOrder], DispatchError | None] = lambda order: None,
    ) -> None:
        self.clock, self.run_for, self.refuse = clock, run_for, refuse
        self.runs: dict[str, FakeRun] = {}
        self.starts: list[str] = []  # every start accepted, in order (duplicates would show)
        self._events: list[JobEvent] = []
        self._lock = threading.Lock()

    def start(self, order: StartOrder) -> None:
        with self._lock:
            if order.key in self.runs:
                return
            refusal = self.refuse(order)
            if refusal is not None:
                raise refusal
            now = self.clock.now()
            duration = self.run_for(order)
            self.runs[order.key] = FakeRun(order, now, None if duration is None else now + duration)
            self.starts.append(order.key)
            self._events.append(JobEvent(order.job_id, order.attempt, EventKind.RUNNING, now))

    def stop(self, order: StopOrder) -> None:
        with self._lock:
            run = self.runs.get(order.key)
            if run is None or run.stop is not None:
                return
            run.stop = order
            self._end(run, EventKind.STOPPED, f"stopped: {order.why.value}")

    def finish(self, job_id: str, attempt: int, ok: bool = True, message: str = "") -> None:
        with self._lock:
            run = self.runs[f"{job_id}-{attempt}"]
            self._end(run, EventKind.SUCCEEDED if ok else EventKind.FAILED, message)

    def lose(self, job_id: str, attempt: int, message: str) -> None:
        with self._lock:
            self._end(self.runs[f"{job_id}-{attempt}"], EventKind.LOST, message)

    def known(self) -> set[str]:
        with self._lock:
            return set(self.runs)

    def poll(self) -> list[JobEvent]:
        with self._lock:
            now = self.clock.now()
            for run in list(self.runs.values()):
                if run.ends_at is not None and run.ends_at <= now:
                    self._end(run, EventKind.SUCCEEDED, "exit code 0", at=run.ends_at)
            events, self._events = self._events, []
            return events

    @property
    def running(self) -> list[str]:
        with self._lock:
            return sorted(self.runs)

    def _end(self, run: FakeRun, kind: EventKind, message: str, at: float | None = None) -> None:
        del self.runs[run.order.key]
        when = self.clock.now() if at is None else at
        event = JobEvent(run.order.job_id, run.order.attempt, kind, when, message)
        self._events.append(event)
