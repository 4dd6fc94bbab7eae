"""The live scheduling loop: snapshot -> plan -> assume (one transaction) -> dispatch.

Each tick:
  1. Events     what the dispatcher saw since the last tick (running, ended, stopped) is
                applied to the records.
  2. Snapshot   the pool as the records have it.
  3. Plan       scheduler.core.plan: pure, the same as the simulator runs.
  4. Assume     the sink records the plan in one transaction: admitted jobs hold their GPUs
                before anything runs, so a crash here loses nothing and runs nothing.
  5. Dispatch   outside the transaction: start admitted attempts, stop preempted and
                cancelled ones. A start that fails gives its GPUs back and requeues the job.

Only the leader ticks; a standby polls for leadership and, on taking over, first resends
what its predecessor may have left half done (step 0).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from scheduler.core import Policy, plan
from scheduler.runtime.ports import (
    Clock,
    DecisionSink,
    Dispatcher,
    DispatchError,
    Leadership,
    Recorded,
    SnapshotSource,
    StopOrder,
)

log = logging.getLogger("gpupool.loop")


class WakeEvent(Protocol):
    def set(self) -> None: ...

    def clear(self) -> None: ...

    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass(slots=True)
class TickReport:
    admitted: int = 0
    preempted_or_stopped: int = 0
    dispatch_failures: int = 0
    events: int = 0
    pending: int = 0
    failed_stops: list[str] = field(default_factory=list)


class SchedulingLoop:
    def __init__(
        self,
        source: SnapshotSource,
        sink: DecisionSink,
        dispatcher: Dispatcher,
        clock: Clock,
        policy: Policy,
        leadership: Leadership,
        interval_s: float = 0.2,
        standby_poll_s: float = 1.0,
        wake_event: WakeEvent | None = None,
        min_gap_s: float = 0.0,
    ) -> None:
        self.source, self.sink, self.dispatcher = source, sink, dispatcher
        self.clock, self.policy, self.leadership = clock, policy, leadership
        self.interval_s, self.standby_poll_s, self.min_gap_s = interval_s, standby_poll_s, min_gap_s
        # Set by whoever submits; a multiprocessing.Event when the loop runs in its own process.
        self._wake: WakeEvent = wake_event or threading.Event()
        self._stopping = threading.Event()
        self._unsent_stops: dict[str, StopOrder] = {}
        self.leading = False
        self.ticks = 0

    def wake(self) -> None:
        """Run the next tick now (say, a job was submitted)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def take_over(self) -> Recorded:
        """Step 0, once per leadership: resend what may have been left half done."""
        outstanding = self.sink.outstanding(self.clock.now())
        self._dispatch(outstanding, TickReport())
        return outstanding

    def tick(self) -> TickReport:
        report = TickReport()
        now = self.clock.now()
        events = self.dispatcher.poll()  # 1
        if events:
            self.sink.apply(events, now)
            report.events = len(events)
        snapshot = self.source.snapshot(now)  # 2
        decided = plan(snapshot, self.policy, now)  # 3
        recorded = self.sink.record(snapshot, decided, now)  # 4
        report.pending = len(snapshot.pending) - len(recorded.starts)
        self._dispatch(recorded, report)  # 5
        self.ticks += 1
        return report

    def _dispatch(self, recorded: Recorded, report: TickReport) -> None:
        for order in recorded.starts:
            try:
                self.dispatcher.start(order)
                report.admitted += 1
            except DispatchError as err:
                log.warning("dispatch of job %s failed: %s", order.key, err)
                self.sink.dispatch_failed(order, err, self.clock.now())
                report.dispatch_failures += 1
        for stop in recorded.stops:
            self._unsent_stops[stop.key] = stop
        for key, stop in list(self._unsent_stops.items()):
            try:
                self.dispatcher.stop(stop)
                del self._unsent_stops[key]
                report.preempted_or_stopped += 1
            except DispatchError as err:  # retried next tick
                log.warning("stop of job %s failed: %s; will retry", key, err)
                report.failed_stops.append(key)

    def run(self) -> None:
        """Lead when possible, tick while leading, until stop(). Errors in a tick are
        logged and the next tick tries again; losing the lock drops back to standby."""
        try:
            while not self._stopping.is_set():
                if not self.leading:
                    self.leading = self.leadership.try_acquire()
                    if not self.leading:
                        self._stopping.wait(self.standby_poll_s)
                        continue
                    log.info("this loop leads now")
                    self._unsent_stops.clear()
                    self._guarded(self.take_over)
                elif not self.leadership.held():
                    log.warning("lost the leader lock; standing by")
                    self.leading = False
                    continue
                started = time.monotonic()
                self._guarded(self.tick)
                # Wakes between ticks are coalesced: at most one tick per min_gap_s, however
                # fast jobs arrive (each tick reads the whole pool; a burst is one tick's work).
                self._stopping.wait(max(0.0, self.min_gap_s - (time.monotonic() - started)))
                self._wake.wait(self.interval_s)
                self._wake.clear()
        finally:
            if self.leading:
                self.leadership.release()
                self.leading = False

    def _guarded(self, step: object) -> None:
        try:
            step()  # type: ignore[operator]
        except Exception:  # the loop must outlive a bad tick; the error is logged in full
            log.exception("scheduling tick failed; retrying next tick")
