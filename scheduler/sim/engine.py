"""Discrete-event trace replay on a virtual clock.

The simulator drives the allocation core exactly as the live service does: a
`SchedulerState` told of arrivals and ends, and `run_cycle(state, now)` at every instant
something happened. Admitted jobs run for their trace duration (cut at `max_runtime`).
Preempted jobs stop at the end of their grace period and are queued again; they resume
from their last checkpoint (every `checkpoint_interval_s` of run time; 0: start over),
and the work since then is lost.
"""

from __future__ import annotations

import dataclasses
import heapq
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from scheduler.core import Job, Plan, Policy, SchedulerState, Snapshot, run_cycle
from scheduler.core.estimates import RecentRuntimes
from scheduler.core.types import credits_for
from scheduler.sim.cluster import Cluster
from scheduler.sim.errors import InputError
from scheduler.sim.forecasts import EstimateSource, StartEstimates
from scheduler.sim.metrics import Meter, Report
from scheduler.sim.trace import TraceJob

FALLBACK_MAX_RUNTIME_S = 7 * 24 * 3600.0


class Event(IntEnum):
    # Ends before arrivals at the same instant: freed GPUs are there for the newcomers.
    FINISH = 0
    STOP = 1  # a preempted job's grace period ended
    ARRIVE = 2


@dataclass(slots=True)
class JobRecord:
    trace: TraceJob
    max_runtime: float
    attempt: int = 0
    first_start: float | None = None
    last_start: float | None = None
    gpus_held: int = 0
    end: float | None = None
    outcome: str = "pending"
    preemptions: int = 0
    borrowed: bool = False
    done_s: float = 0.0  # run time kept by checkpoints across preemptions
    lost_gpu_s: float = 0.0  # run time preemptions threw away, times GPUs


@dataclass(slots=True)
class Simulation:
    cluster: Cluster
    trace: Sequence[TraceJob]
    policy: Policy
    default_max_runtime_s: float | None = None
    checkpoint_interval_s: float = 1800.0
    # Backfill estimates from the history of each user (or project, when the trace has no
    # users), as EASY++ does; False: every job is expected to run to its max_runtime.
    predict_runtimes: bool = True
    progress: Callable[[int, int], None] | None = None  # (jobs ended, jobs in all)
    # Where the start estimates measured come from (see forecasts.py).
    start_estimates: EstimateSource = EstimateSource.HISTORY
    records: dict[str, JobRecord] = field(default_factory=dict)
    history: RecentRuntimes = field(default_factory=RecentRuntimes)

    def run(self) -> Report:
        started = time.perf_counter()
        cluster, policy = self.cluster, self.policy
        state = SchedulerState(
            Snapshot(cluster.nodes, cluster.sectors, cluster.projects, pending=()), policy
        )
        default_runtime = (
            self.default_max_runtime_s or cluster.default_max_runtime_s or FALLBACK_MAX_RUNTIME_S
        )
        events: list[tuple[float, int, int, str, int]] = []
        seq = 0
        for tj in self.trace:
            self.records[tj.id] = JobRecord(tj, tj.max_runtime_s or default_runtime)
            events.append((tj.submit_s, Event.ARRIVE, seq, tj.id, 0))
            seq += 1
        heapq.heapify(events)
        meter = Meter(state, policy, cluster)
        estimates = StartEstimates(
            state,
            self.start_estimates,
            self.history,
            lambda job_id: self._history_key(self.records[job_id].trace),
        )
        ended, total = 0, len(self.trace)
        while events:
            now = events[0][0]
            estimates.before_cycle(now)
            arrived: list[tuple[str, float]] = []
            while events and events[0][0] == now:
                _, kind, _, job_id, attempt = heapq.heappop(events)
                record = self.records[job_id]
                if kind == Event.ARRIVE:
                    self._enqueue(state, record, now)
                    arrived.append((job_id, now))
                elif attempt == record.attempt and job_id in state.running:
                    run = state.finish(job_id)
                    assert run is not None and record.last_start is not None
                    state.record_usage(run.project, run.gpus * (now - record.last_start), now)
                    # The ledger: what the attempt used, at its project's rate for the flavor.
                    rate = state.credit_rate(run.project, run.flavor)
                    state.charge(run.project, credits_for(run.gpus, now - record.last_start, rate))
                    if kind == Event.FINISH:
                        record.end = now
                        if record.trace.duration_s - record.done_s > record.max_runtime:
                            record.outcome = "timeout"  # cut at its limit
                        else:
                            record.outcome = "completed"
                            self.history.observe(
                                self._history_key(record.trace), record.trace.duration_s
                            )
                        ended += 1
                    else:
                        ran = now - record.last_start
                        every = self.checkpoint_interval_s
                        kept = (ran // every) * every if every > 0 else 0.0
                        record.done_s += kept
                        record.lost_gpu_s += (ran - kept) * run.gpus
                        record.attempt += 1
                        record.preemptions += 1
                        self._enqueue(state, record, now)
            plan = run_cycle(state, now)
            meter.credit_delays.observe(plan)
            for job_id in plan.rejections:
                record = self.records[job_id]
                if record.outcome != "rejected":
                    record.outcome = "rejected"
                    record.end = now
                    ended += 1
            seq = self._apply(plan, events, seq)
            estimates.after_cycle(now, arrived)
            next_time = events[0][0] if events else now
            meter.advance(now, next_time)
            if self.progress is not None and seq % 512 == 0:
                self.progress(ended, total)
        if self.progress is not None:
            self.progress(ended, total)
        report = meter.report(self.records, policy.name, 0.0)
        return dataclasses.replace(
            report, **estimates.figures(self.records), wall_s=time.perf_counter() - started
        )

    def _enqueue(self, state: SchedulerState, record: JobRecord, now: float) -> None:
        tj = record.trace
        estimate = self.history.estimate(self._history_key(tj)) if self.predict_runtimes else None
        state.add_job(
            Job(
                id=tj.id,
                project=tj.project,
                gpus=tj.gpus,
                flavor=tj.flavor,
                submit_time=tj.submit_s,
                max_runtime=record.max_runtime,
                user=tj.user,
                estimate=estimate,
            )
        )

    @staticmethod
    def _history_key(tj: TraceJob) -> str:
        return f"user:{tj.user}" if tj.user else f"project:{tj.project}"

    def _apply(self, plan: Plan, events: list[tuple[float, int, int, str, int]], seq: int) -> int:
        now = plan.now
        for admission in plan.admissions:
            record = self.records[admission.job_id]
            if record.first_start is None:
                record.first_start = now
            record.last_start = now
            record.borrowed = record.borrowed or admission.borrowed
            runtime = min(record.trace.duration_s - record.done_s, record.max_runtime)
            heapq.heappush(
                events, (now + runtime, Event.FINISH, seq, admission.job_id, record.attempt)
            )
            seq += 1
        for preemption in plan.preemptions:
            record = self.records[preemption.job_id]
            heapq.heappush(
                events, (preemption.stop_at, Event.STOP, seq, preemption.job_id, record.attempt)
            )
            seq += 1
        return seq


def check_trace(cluster: Cluster, trace: Sequence[TraceJob], path: str, policy: Policy) -> None:
    """Refuse a trace the pool cannot replay, naming the first bad line and field."""
    state = SchedulerState(
        Snapshot(cluster.nodes, cluster.sectors, cluster.projects, pending=()), policy
    )
    projects = {p.name for p in cluster.projects}
    for tj in trace:
        if tj.project not in projects:
            raise InputError(
                path,
                f"unknown project {tj.project!r}; the cluster file lists "
                f"{', '.join(sorted(projects))}",
                tj.line,
                "project",
            )
        reason = state.never_fits(
            Job(tj.id, tj.project, tj.gpus, tj.flavor, tj.submit_s, tj.max_runtime_s or 1.0)
        )
        if reason is not None:
            raise InputError(path, reason.message, tj.line, reason.field)
