"""What a replay measured: waits, completion times, utilization, idle GPUs, guarantees, fairness.

- utilization: allocated GPU-seconds over capacity x (first submission .. last end).
- idle_while_waiting_gpu_h: GPU-hours that stood free while a waiting job would have fitted
  on one node's free GPUs (whatever kept it waiting: quota, order or a reservation).
- guarantee_violation_s: summed over jobs, the seconds a job waited within its project's
  guarantee (and its credits, when it has a budget), past the grace period, while it was
  blocked by borrowers: it fitted the free GPUs, or preempting other projects' jobs down to
  their guarantees would have made room.
- guarantee_fragmentation_s: the same waiting while other projects borrowed, but where no
  such preemption could make room (a job needing whole nodes while every node that
  borrowers use also runs other projects' guaranteed work).
- lost_gpu_h: GPU-hours of work that preemptions threw away (run time since the last
  checkpoint of each preempted attempt).
- credit_delayed_jobs: jobs that waited, before their first start, because their project's
  credits could not pay for their whole limit (projects with a `credits` budget only).
- jain_fairness: Jain's index over projects of the mean of duration / (wait + duration) of
  their jobs (1 when no job waits, and equal when every project waits alike).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from scheduler.core import ANY_FLAVOR, Job, Policy, SchedulerState
from scheduler.core.placement import gang_sizes
from scheduler.core.reclaim import BorrowedIndex
from scheduler.core.types import credits_for
from scheduler.sim.cluster import Cluster
from scheduler.sim.credits import CreditDelays

if TYPE_CHECKING:
    from scheduler.sim.engine import JobRecord


@dataclass(frozen=True, slots=True)
class Report:
    policy: str
    jobs: int
    completed: int
    rejected: int
    timed_out: int
    preemptions: int
    lost_gpu_h: float
    mean_wait_s: float
    p50_wait_s: float
    p99_wait_s: float
    mean_jct_s: float
    utilization: float
    idle_while_waiting_gpu_h: float
    guarantee_violation_s: float
    guarantee_fragmentation_s: float
    jain_fairness: float
    makespan_s: float
    wall_s: float
    # Jobs that waited because their project's credits could not pay for their limit.
    credit_delayed_jobs: int = 0
    # JCT over run time (run time taken as at least SLOWDOWN_FLOOR_S), averaged over jobs.
    mean_slowdown: float = 0.0
    wait_by_project: dict[str, float] = field(default_factory=dict)  # mean wait (s)
    # How good the start estimates were (scheduler/sim/forecasts.py; README, Simulator).
    est_source: str = ""
    est_jobs: int = 0
    est_coverage: float = 0.0
    est_error_median_s: float = 0.0
    est_within_25pct: float = 0.0
    est_within_1h: float = 0.0
    est_10m_jobs: int = 0
    est_10m_coverage: float = 0.0
    est_10m_error_median_s: float = 0.0
    est_10m_within_25pct: float = 0.0
    est_10m_within_1h: float = 0.0
    p50_wait_over_10m_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


SLOWDOWN_FLOOR_S = 10.0  # run times below this count as this in mean_slowdown


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), math.ceil(q / 100.0 * len(sorted_values))))
    return sorted_values[rank - 1]


def jain(values: list[float]) -> float:
    if not values:
        return 1.0
    squares = sum(v * v for v in values)
    return (sum(values) ** 2) / (len(values) * squares) if squares else 1.0


class Meter:
    """Integrates pool-wide figures over each interval between events."""

    def __init__(self, state: SchedulerState, policy: Policy, cluster: Cluster) -> None:
        self.state = state
        self.grace = policy.grace_period_s
        self.capacity = cluster.gpus
        self.allocated_gpu_s = 0.0
        self.idle_waiting_gpu_s = 0.0
        self.violation_s = 0.0
        self.fragmentation_s = 0.0
        self.in_quota_since: dict[str, float] = {}
        self.credit_delays = CreditDelays()

    def advance(self, now: float, until: float) -> None:
        dt = until - now
        state = self.state
        if dt <= 0:
            return
        waiting_by_flavor: dict[str, int] = {}
        for (_, flavor), queue in state.queues.items():
            smallest = queue.smallest()
            if smallest:
                waiting_by_flavor[flavor] = min(waiting_by_flavor.get(flavor, smallest), smallest)
        for flavor, pool in state.pools.items():
            self.allocated_gpu_s += (pool.total_capacity - pool.total_free) * dt
            smallest = min(
                (waiting_by_flavor[f] for f in (flavor, ANY_FLAVOR) if f in waiting_by_flavor),
                default=0,
            )
            if pool.total_free and smallest and smallest <= pool.max_free():
                self.idle_waiting_gpu_s += pool.total_free * dt
        self._guarantees(now, until)

    def _guarantees(self, now: float, until: float) -> None:
        """Accrue in-quota waiting time past the grace period, split by what blocks it.

        A job is *blocked by borrowers* when it fits the free GPUs, or preempting other
        projects' jobs down to their guarantees would make room for it now (counted as a
        guarantee violation); otherwise the borrowed GPUs are not where it could use them
        and it waits on other projects' guaranteed work (counted as fragmentation).
        """
        state = self.state
        since: dict[str, float] = {}
        overdue: list[tuple[Job, float]] = []
        for (project, flavor), queue in state.queues.items():
            if not state.borrowers_besides(project, flavor):
                continue
            budget = state.quota(project, flavor).guaranteed - state.held(project, flavor)
            smallest = queue.smallest()
            position = 0
            while budget >= smallest and (job := queue.at(position)) is not None:
                position += 1
                if job.gpus > budget or not affords(state, job, flavor):
                    continue  # not owed now: past the guarantee, or its credits cannot pay
                budget -= job.gpus
                began = since[job.id] = self.in_quota_since.get(job.id, now)
                counted_from = max(now, began + self.grace)
                if until > counted_from:
                    overdue.append((job, until - counted_from))
        self.in_quota_since = since
        if overdue:
            rooms = _Reclaimable(state)
            for job, seconds in overdue:
                if rooms.would_fit(job):
                    self.violation_s += seconds
                else:
                    self.fragmentation_s += seconds

    def report(self, records: Mapping[str, JobRecord], policy: str, wall_s: float) -> Report:
        done = [r for r in records.values() if r.outcome in ("completed", "timeout")]
        waits = sorted((r.first_start or 0.0) - r.trace.submit_s for r in done)
        jcts = [(r.end or 0.0) - r.trace.submit_s for r in done]
        first = min((r.trace.submit_s for r in records.values()), default=0.0)
        last = max((r.end or 0.0 for r in done), default=first)
        makespan = max(last - first, 1e-9)
        speed: dict[str, list[float]] = defaultdict(list)
        for r, wait in ((r, (r.first_start or 0.0) - r.trace.submit_s) for r in done):
            speed[r.trace.project].append(r.trace.duration_s / (wait + r.trace.duration_s))
        return Report(
            policy=policy,
            jobs=len(records),
            completed=len(done),
            rejected=sum(1 for r in records.values() if r.outcome == "rejected"),
            timed_out=sum(1 for r in done if r.outcome == "timeout"),
            preemptions=sum(r.preemptions for r in records.values()),
            lost_gpu_h=sum(r.lost_gpu_s for r in records.values()) / 3600.0,
            mean_wait_s=sum(waits) / len(waits) if waits else 0.0,
            p50_wait_s=percentile(waits, 50),
            p99_wait_s=percentile(waits, 99),
            mean_jct_s=sum(jcts) / len(jcts) if jcts else 0.0,
            utilization=self.allocated_gpu_s / (self.capacity * makespan),
            idle_while_waiting_gpu_h=self.idle_waiting_gpu_s / 3600.0,
            guarantee_violation_s=self.violation_s,
            guarantee_fragmentation_s=self.fragmentation_s,
            jain_fairness=jain([sum(v) / len(v) for v in speed.values()]),
            makespan_s=makespan,
            wall_s=wall_s,
            credit_delayed_jobs=self.credit_delays.count(records),
            mean_slowdown=mean_slowdown(done),
            wait_by_project=wait_by_project(done),
        )


def run_time(record: JobRecord) -> float:
    """How long a job ran to its end (its trace duration, cut at its limit)."""
    return min(record.trace.duration_s, record.max_runtime)


def mean_slowdown(done: list[JobRecord]) -> float:
    """Mean of JCT / max(run time, SLOWDOWN_FLOOR_S): short jobs do not blow it up."""
    if not done:
        return 0.0
    return sum(
        ((r.end or 0.0) - r.trace.submit_s) / max(run_time(r), SLOWDOWN_FLOOR_S) for r in done
    ) / len(done)


def wait_by_project(done: list[JobRecord]) -> dict[str, float]:
    """Mean wait (first start minus submission) of each project's jobs, by name."""
    waits: dict[str, list[float]] = defaultdict(list)
    for r in done:
        waits[r.trace.project].append((r.first_start or 0.0) - r.trace.submit_s)
    return {project: sum(w) / len(w) for project, w in sorted(waits.items())}


def affords(state: SchedulerState, job: Job, flavor: str) -> bool:
    """Can the job's project pay for its whole limit on `flavor` now (no budget: yes)?"""
    if state.credits_free(job.project) is None:
        return True
    rate = state.credit_rate(job.project, flavor)
    return state.affords(job.project, credits_for(job.gpus, job.max_runtime, rate))


class _Reclaimable:
    """Could preempting other projects' borrowed GPUs (down to their guarantees) make
    room for a job right now? Asks the core's own reclaim index, built once per flavor."""

    def __init__(self, state: SchedulerState) -> None:
        self.state = state
        self.indices: dict[str, BorrowedIndex] = {}

    def would_fit(self, job: Job) -> bool:
        flavors = sorted(self.state.pools) if job.flavor == ANY_FLAVOR else [job.flavor]
        for flavor in flavors:
            pool = self.state.pools[flavor]
            sizes = gang_sizes(job.gpus, job.nodes, pool.max_gpus)
            if pool.place(sizes) is not None:
                return True  # it fits the free GPUs as they are
            if flavor not in self.indices:
                self.indices[flavor] = BorrowedIndex(self.state, pool)
            if self.indices[flavor].choose_victims(job.project, sizes) is not None:
                return True
        return False
