"""The live scheduling loop: snapshot -> plan -> assume (one transaction) -> dispatch.

Each tick:
  1. Events     what the dispatcher saw since the last tick (running, ended, stopped) is
                applied to the records; and, from a dispatcher that can tell, which nodes
                the engine has: a node that left it goes down (no new jobs there), one
                that is back returns to service. Nodes whose agents went silent go down,
                their jobs are requeued (lost) and stopped, in case they still run.
  2. Snapshot   the pool as the records have it.
  3. Plan       scheduler.core.plan: pure, the same as the simulator runs. Then, at most
                every FORECAST_INTERVAL_S or when a job waits that has none yet, start
                forecasts for the waiting jobs (scheduler/core/forecast.py), for people.
  4. Assume     the sink records the plan in one transaction: admitted jobs hold their GPUs
                before anything runs, so a crash here loses nothing and runs nothing.
  5. Dispatch   outside the transaction: start admitted attempts, stop preempted and
                cancelled ones. A start that fails gives its GPUs back and requeues the job.

Only the leader ticks; a standby polls for leadership and, on taking over (step 0), claims
it in the records, which fences off any earlier leader still half-way through a tick;
requeues the attempts its dispatcher no longer runs; and resends what its predecessor may
have left half done.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from scheduler.core import Plan, Policy, SchedulerState, run_cycle
from scheduler.core.estimates import RunForecast
from scheduler.core.forecast import RunModel, forecast_starts
from scheduler.runtime.ports import (
    Clock,
    DecisionSink,
    Deposed,
    Dispatcher,
    DispatchError,
    EventKind,
    JobEvent,
    Leadership,
    NodeSighting,
    Recorded,
    SnapshotSource,
    StartOrder,
    StopOrder,
)

log = logging.getLogger("gpupool.loop")

FORECAST_INTERVAL_S = 30.0


def to_limit(job_id: str, elapsed: float, limit: float) -> RunForecast:
    """A run-time model without history: every job runs to its limit."""
    return RunForecast(limit, limit, limit, unbounded=True)


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
        # Kept until recorded: a tick that fails to write them must not lose them.
        self._unapplied: list[JobEvent] = []
        self._unreported_failures: dict[str, tuple[StartOrder, DispatchError]] = {}
        self._claimed = False  # whether this leadership was claimed in the records
        self._engine_error: str | None = None  # what the dispatcher said when it last failed
        self._engine_warned_at = 0.0
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.leading = False
        self.ticks = 0
        self._forecast_at: float | None = None
        self._forecast_for: set[str] = set()  # the waiting jobs the last forecast covered

    def wake(self) -> None:
        """Run the next tick now (say, a job was submitted)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def take_over(self) -> Recorded:
        """Step 0, once per leadership: claim it in the records (which fences off any
        earlier leader), close what the dispatcher no longer runs, and resend what may have
        been left half done."""
        now = self.clock.now()
        self.sink.claim(self.holder, now)
        self._unsent_stops.clear()
        self._unreported_failures.clear()
        known = self.dispatcher.known()
        outstanding = self.sink.outstanding(now)
        to_start = {order.key for order in outstanding.starts}
        gone = [
            JobEvent(
                job_id,
                attempt,
                EventKind.LOST,
                now,
                "its process was gone when the scheduler took over (the control plane restarted)",
            )
            for job_id, attempt in self.sink.active_attempts()
            if f"{job_id}-{attempt}" not in known and f"{job_id}-{attempt}" not in to_start
        ]
        if gone:
            log.warning("%d attempts were gone at take-over; requeued", len(gone))
            self.sink.apply(gone, now)
        outstanding.stops = [stop for stop in outstanding.stops if stop.key in known]
        self._dispatch(outstanding, TickReport())
        self._claimed = True  # only now: a take-over cut short is done again next tick
        return outstanding

    def tick(self) -> TickReport:
        if not self._claimed:
            self.take_over()
        report = TickReport()
        now = self.clock.now()
        self._unapplied += self.dispatcher.poll()  # 1
        if self._unapplied:
            self.sink.apply(self._unapplied, now)
            report.events = len(self._unapplied)
            self._unapplied = []
        self._report_failures()
        self._sight_nodes(now)
        for stop in self.sink.take_down_silent_nodes(now):
            self._unsent_stops[stop.key] = stop  # sent in step 5
        snapshot = self.source.snapshot(now)  # 2
        state = SchedulerState(snapshot, self.policy)
        decided = run_cycle(state, now)  # 3
        self._forecast(state, decided, now)
        recorded = self.sink.record(snapshot, decided, now)  # 4
        report.pending = len(snapshot.pending) - len(recorded.starts)
        self._dispatch(recorded, report)  # 5
        self.ticks += 1
        return report

    def _forecast(self, state: SchedulerState, decided: Plan, now: float) -> None:
        """Start forecasts for the waiting jobs, when the last ones are old or miss a job."""
        waiting = set(state.queue_of)
        fresh = self._forecast_at is not None and now - self._forecast_at < FORECAST_INTERVAL_S
        if fresh and waiting <= self._forecast_for:
            return
        run_times: Callable[[float], RunModel] | None = getattr(self.source, "run_times", None)
        model = to_limit if run_times is None else run_times(now)
        decided.forecasts = forecast_starts(state, now, model)
        self._forecast_at, self._forecast_for = now, waiting

    def _sight_nodes(self, now: float) -> None:
        sight: Callable[[], NodeSighting | None] | None = getattr(
            self.dispatcher, "sight_nodes", None
        )
        sighting = sight() if sight is not None else None
        if sighting is not None:
            changed = self.sink.sight_nodes(sighting, now)
            if changed:
                log.info("nodes changed with the engine's node list: %s", ", ".join(changed))

    def _dispatch(self, recorded: Recorded, report: TickReport) -> None:
        for order in recorded.starts:
            try:
                self.dispatcher.start(order)
                report.admitted += 1
            except DispatchError as err:
                log.warning("dispatch of job %s failed: %s", order.key, err)
                self._unreported_failures[order.key] = (order, err)
                report.dispatch_failures += 1
        self._report_failures()
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

    def _report_failures(self) -> None:
        """Give failed starts' GPUs back; one that cannot be recorded now is tried again
        next tick (until then its job stays admitted, holding its GPUs)."""
        for key, (order, err) in list(self._unreported_failures.items()):
            try:
                self.sink.dispatch_failed(order, err, self.clock.now())
                del self._unreported_failures[key]
            except Deposed:
                raise
            except Exception:  # the records are unreachable: the failure waits for them
                log.exception("could not record the failed start of %s; will retry", key)
                return

    def run(self) -> None:
        """Lead when possible, tick while leading, until stop(). Errors in a tick are
        logged and the next tick tries again; losing the lock (or being fenced off by a
        newer leader) drops back to standby."""
        try:
            while not self._stopping.is_set():
                if not self.leading:
                    self.leading = self.leadership.try_acquire()
                    if not self.leading:
                        self._stopping.wait(self.standby_poll_s)
                        continue
                    log.info("this loop leads now (%s)", self.holder)
                    self._claimed = False
                    self._guarded(self.take_over)
                elif not self.leadership.held():
                    self._stand_by("lost the leader lock")
                    continue
                started = time.monotonic()
                self._guarded(self.tick)
                # Wakes between ticks are coalesced: at most one tick per min_gap_s, however
                # fast jobs arrive (each tick reads the whole pool; a burst is one tick's work).
                self._stopping.wait(max(0.0, self.min_gap_s - (time.monotonic() - started)))
                self._wait_for_work(time.monotonic() + self.interval_s)
                self._wake.clear()
        finally:
            if self.leading:
                self.leadership.release()
                self.leading = False

    def _wait_for_work(self, until: float) -> None:
        """Until `until` (time.monotonic()), a wake, or news from the dispatcher. One that
        says how often it wants polling (`poll_every_s`, None: not now) is polled at that
        pace between ticks, and the next tick comes as soon as it reports something: a job
        running or ended is recorded within that, not within interval_s."""
        while not self._stopping.is_set():
            left = until - time.monotonic()
            if left <= 0:
                return
            every: float | None = getattr(self.dispatcher, "poll_every_s", None)
            if self._wake.wait(left if every is None else min(left, max(every, 0.01))):
                return
            if every is None:
                continue
            try:
                events = self.dispatcher.poll()
            except Exception:  # the tick polls again, and says what goes wrong
                log.debug("polling between ticks failed", exc_info=True)
                return
            if events:
                self._unapplied += events
                return

    def _stand_by(self, why: str) -> None:
        log.warning("%s; standing by", why)
        self.leadership.release()
        self.leading = False
        self._claimed = False

    def _guarded(self, step: Callable[[], object]) -> None:
        try:
            step()
        except Deposed:
            self._stand_by("a newer leader claimed the records")
        except DispatchError as err:  # the engine is away: no traceback, and said once a
            self._engine_away(str(err))  # minute while it stays away the same way
        except Exception:  # the loop must outlive a bad tick; the error is logged in full
            log.exception("scheduling tick failed; retrying next tick")
        else:
            if self._engine_error is not None:
                log.info("the dispatcher answers again")
                self._engine_error = None

    def _engine_away(self, error: str, every_s: float = 60.0) -> None:
        now = time.monotonic()
        if error != self._engine_error or now - self._engine_warned_at >= every_s:
            log.warning("the dispatcher cannot answer (%s); retrying each tick", error)
            self._engine_warned_at = now
        else:
            log.debug("the dispatcher cannot answer (%s)", error)
        self._engine_error = error
