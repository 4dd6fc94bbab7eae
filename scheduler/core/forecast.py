"""Start forecasts for waiting jobs: when each is likely to start, and how sure that is.

These are for people, not for backfill. Reservations (backfill.py) stay as EASY has them,
safe for the reserved job: a running job past its EASY++ estimate is taken to run to its
limit. Taken to people, that says "in 40 days" whenever one job outruns its estimate (as
Slurm's estimates do, which assume every job runs to its limit). A forecast instead asks the
history (estimates.RecentRuntimes.forecast) how long each job it waits on is likely to run,
given how long it has run already, and carries the range those predictions span.

The waiting jobs are taken in the order the cycle considers them, and each is placed, as
the cycle would place it, on the nodes where the GPUs it needs are expected back first,
behind the jobs taken before it: every GPU of every node has a time it is expected free
(now, a running job's predicted end, or a forecast job's), and a job of g GPUs on a node
starts when the g-th of them is. The same is done with the predictions' low and high ends
for the range. Nothing arrives and nothing is preempted in a forecast, and the GPUs a job
leaves idle while it waits for the rest are not handed to later jobs (conservative).
"""

from __future__ import annotations

import heapq
from bisect import bisect_right, insort
from collections.abc import Callable, Collection

from scheduler.core.cycle import Cycle
from scheduler.core.estimates import RunForecast
from scheduler.core.placement import gang_sizes
from scheduler.core.queues import QueueKey, SortKey, sort_key
from scheduler.core.state import SchedulerState
from scheduler.core.types import ANY_FLAVOR, Job, ReasonCode, StartForecast

# (job id, seconds it has run, its limit) -> how long it runs in all
RunModel = Callable[[str, float, float], RunForecast]

# Waiting for these, a job's start is not a matter of GPUs coming free (over its limit, it
# waits for its own project's jobs, which a forecast does not follow): it gets none.
UNFORECAST = frozenset(
    {ReasonCode.CREDITS, ReasonCode.PROJECT, ReasonCode.NEVER_FITS, ReasonCode.OVER_LIMIT}
)

NO_JOBS: frozenset[str] = frozenset()
INFINITY = float("inf")
# A walk places this many jobs GPU by GPU; the jobs behind them are forecast as work on a
# fluid pool (_Timeline.fluid), so a queue thousands deep costs little more than one.
DETAILED_JOBS = 1500


# One GPU: when it is expected free (likely, soonest, latest), and the jobs with no history
# to go by that this time waits on. Tuples: a forecast makes thousands.
Slot = tuple[float, float, float, frozenset[str]]


class _Fluid:
    """When GPUs coming back at `times` have done `work` GPU-seconds between them."""

    def __init__(self, times: list[float]) -> None:
        self.times = times
        self.before = [0.0]  # sums of the times before each
        for t in times:
            self.before.append(self.before[-1] + t)
        # the work done by the time the i-th GPU is back (nondecreasing)
        self.done_at = [i * t - self.before[i] for i, t in enumerate(times)]

    def when_done(self, work: float, gpus: int) -> float:
        i = max(0, bisect_right(self.done_at, work) - 1)  # GPUs 0..i share the work
        return max(self.times[gpus - 1], (work + self.before[i + 1]) / (i + 1))


class _Timeline:
    """When each GPU of each node of one flavor is expected free, soonest first."""

    def __init__(self, state: SchedulerState, flavor: str, now: float, model: RunModel) -> None:
        pool = state.pools[flavor]
        self.max_gpus = pool.max_gpus
        free: Slot = (now, now, now, NO_JOBS)
        self.slots: list[list[Slot]] = [[free] * f for f in pool.free]
        for _end, job_id in state.ends.get(flavor, ()):
            run = state.running.get(job_id)
            if run is None:
                continue
            slot = _running_slot(
                run.job_id, run.start, run.max_runtime, run.stopping_at, now, model
            )
            for name, n in run.pieces:
                i = pool.index.get(name)
                if i is not None:
                    self.slots[i] += [slot] * n
        for node_slots in self.slots:
            node_slots.sort()
        self.version = [0] * len(self.slots)
        self.gpus = sum(len(node_slots) for node_slots in self.slots)
        self.work: list[float] | None = None  # GPU-seconds ahead, once fluid (mid, low, high)
        self.fluid_times: list[_Fluid] = []
        self.fluid_unsure = 0
        self.by_size: dict[int, list[tuple[float, float, int, int]]] = {}

    def _entry(self, i: int, size: int) -> tuple[float, float, int, int]:
        """(when `size` GPUs are back on node i, minus when the next one is: best fit among
        nodes ready together, node, node version)."""
        node_slots = self.slots[i]
        after = node_slots[size][0] if len(node_slots) > size else INFINITY
        return (node_slots[size - 1][0], -after, i, self.version[i])

    def _ready(self, size: int) -> list[tuple[float, float, int, int]]:
        """Nodes by when `size` of their GPUs are back (a heap; stale entries skipped)."""
        heap = self.by_size.get(size)
        if heap is None:
            heap = [self._entry(i, size) for i, s in enumerate(self.slots) if len(s) >= size]
            heapq.heapify(heap)
            self.by_size[size] = heap
        return heap

    def fit(self, sizes: list[int]) -> tuple[float, list[tuple[int, int]]] | None:
        """(likely start, [(node, GPUs)]) on the nodes whose GPUs are back soonest; a gang's
        pieces are all taken at its largest piece's size."""
        heap = self._ready(sizes[0])
        chosen: list[tuple[float, float, int, int]] = []
        while heap and len(chosen) < len(sizes):
            entry = heapq.heappop(heap)
            if entry[3] == self.version[entry[2]]:
                chosen.append(entry)
        for entry in chosen:
            heapq.heappush(heap, entry)
        if len(chosen) < len(sizes):
            return None
        pieces = [(entry[2], n) for entry, n in zip(chosen, sizes, strict=True)]
        return chosen[-1][0], pieces

    def fluid(self, now: float, gpus: int, run: RunForecast, job_id: str) -> StartForecast:
        """Past the first DETAILED_JOBS of a walk: the flavor's GPUs as one fluid pool that
        the jobs ahead use up in GPU-seconds, placement and holes aside (cheap, and slightly
        hopeful). The job starts once the work ahead of it is done and `gpus` are back."""
        if self.work is None:
            every = [slot for node_slots in self.slots for slot in node_slots]
            self.fluid_times = [
                _Fluid(sorted(mid for mid, _, _, _ in every)),
                _Fluid(sorted(low for _, low, _, _ in every)),
                _Fluid(sorted(high for _, _, high, _ in every)),
            ]
            self.fluid_unsure = len(NO_JOBS.union(*(slot[3] for slot in every)))
            self.work = [0.0, 0.0, 0.0]
        gpus = min(gpus, len(self.fluid_times[0].times))
        start, earliest, latest = (
            max(now, pool.when_done(self.work[k], gpus)) for k, pool in enumerate(self.fluid_times)
        )
        unsure = self.fluid_unsure
        for k, seconds in enumerate((run.mid, run.low, run.high)):
            self.work[k] += gpus * seconds
        if run.unbounded:
            self.fluid_unsure += 1
        return StartForecast(start, min(earliest, start), max(latest, start), unsure)

    def occupy(
        self, pieces: list[tuple[int, int]], now: float, run: RunForecast, job_id: str
    ) -> StartForecast:
        taken = [slot for i, n in pieces for slot in self.slots[i][:n]]
        start = max(now, max(s[0] for s in taken))
        earliest = min(start, max(now, max(s[1] for s in taken)))
        latest = max(start, max(s[2] for s in taken))
        unsure = NO_JOBS.union(*(s[3] for s in taken))
        end: Slot = (
            start + run.mid,
            earliest + run.low,
            latest + run.high,
            unsure | {job_id} if run.unbounded else unsure,
        )
        for i, n in pieces:
            node_slots = self.slots[i]
            del node_slots[:n]
            for _ in range(n):
                insort(node_slots, end)
            self.version[i] += 1
            for size, heap in self.by_size.items():
                if len(node_slots) >= size:
                    heapq.heappush(heap, self._entry(i, size))
        return StartForecast(start, earliest, latest, len(unsure))


def _running_slot(
    job_id: str,
    start: float,
    limit: float,
    stopping_at: float | None,
    now: float,
    model: RunModel,
) -> Slot:
    if stopping_at is not None:  # preempted or cancelled: free at the end of its grace
        return (stopping_at, stopping_at, stopping_at, NO_JOBS)
    run = model(job_id, max(0.0, now - start), limit)
    return (
        max(now, start + run.mid),
        max(now, start + run.low),
        max(now, start + run.high),
        frozenset({job_id}) if run.unbounded else NO_JOBS,
    )


def forecast_starts(
    state: SchedulerState,
    now: float,
    model: RunModel,
    wanted: Collection[str] | None = None,
) -> dict[str, StartForecast]:
    """Start forecasts for the waiting jobs (all, or until every job in `wanted` has one).

    Call it after a cycle, on the state that cycle left: the order is the cycle's own.
    """
    return Forecaster(state, now, model).starts(wanted)


class Forecaster:
    """A forecast walked only as far as asked, and resumed when asked for more.

    Made for the state as it was at `now`. Asked again later, it goes on from where it
    stopped, in each queue after the last job it forecast, over the state as it is then: a
    job queued since (a submission) is forecast behind what was walked, on the timelines as
    they were. How long such a forecast may serve is the caller's choice.
    """

    def __init__(self, state: SchedulerState, now: float, model: RunModel) -> None:
        self.state, self.now, self.model = state, now, model
        pending_rejections = state.new_rejections
        self.cycle = Cycle(state, now)  # for its order only; it must not take the rejections
        state.new_rejections = pending_rejections
        self.timelines: dict[str, _Timeline] = {}
        self.forecasts: dict[str, StartForecast] = {}
        self.last: dict[QueueKey, SortKey] = {}  # per queue, the last job walked
        self.walked: set[str] = set()
        self.heads: list[tuple[tuple[object, ...], QueueKey, str]] = []
        for key in state.queues:
            self._push(key)

    def _push(self, key: QueueKey) -> None:
        job = self.state.queues[key].after(self.last.get(key))
        if job is not None:
            heapq.heappush(self.heads, (self.cycle.head_key(job), key, job.id))

    def starts(self, wanted: Collection[str] | None = None) -> dict[str, StartForecast]:
        """Forecasts of `wanted` (None: every waiting job); a job with none is left out."""
        state = self.state
        ordering = self.state.policy.ordering
        remaining = set(state.queue_of) if wanted is None else set(wanted) & state.queue_of.keys()
        remaining -= self.walked_ids(remaining)
        queued = {key for _, key, _ in self.heads}
        for key in sorted({state.queue_of[job_id] for job_id in remaining} - queued):
            self._push(key)  # the walk had passed the end of its queue
        while remaining and self.heads:
            _, key, job_id = heapq.heappop(self.heads)
            queue = state.queues.get(key)
            job = None if queue is None else queue.after(self.last.get(key))
            if job is None:
                continue
            if job.id != job_id:  # the queue changed since: rank its next job afresh
                self._push(key)
                continue
            self.last[key] = sort_key(job, ordering)
            self._push(key)
            fluid = len(self.walked) >= DETAILED_JOBS
            forecast = _forecast_one(state, job, self.now, self.model, self.timelines, fluid)
            if forecast is not None:
                self.forecasts[job.id] = forecast
            self.walked.add(job.id)
            remaining.discard(job.id)
        if wanted is None:
            return dict(self.forecasts)
        return {j: self.forecasts[j] for j in wanted if j in self.forecasts}

    def walked_ids(self, job_ids: set[str]) -> set[str]:
        return job_ids & self.walked


def _forecast_one(
    state: SchedulerState,
    job: Job,
    now: float,
    model: RunModel,
    timelines: dict[str, _Timeline],
    fluid: bool = False,
) -> StartForecast | None:
    reason = state.reasons.reason_for(job)
    if reason is not None and reason.code in UNFORECAST:
        return None
    flavors = sorted(state.pools) if job.flavor == ANY_FLAVOR else [job.flavor]
    if fluid:
        return _fluid_one(state, job, now, model, timelines, flavors)
    best: tuple[float, str, list[tuple[int, int]]] | None = None
    for flavor in flavors:
        if flavor not in state.pools:
            continue
        timeline = timelines.get(flavor)
        if timeline is None:
            timeline = timelines[flavor] = _Timeline(state, flavor, now, model)
        fit = timeline.fit(gang_sizes(job.gpus, job.nodes, timeline.max_gpus))
        if fit is not None and (best is None or fit[0] < best[0]):
            best = (fit[0], flavor, fit[1])
    if best is None:
        return None
    run = model(job.id, 0.0, job.max_runtime)
    return timelines[best[1]].occupy(best[2], now, run, job.id)


def _fluid_one(
    state: SchedulerState,
    job: Job,
    now: float,
    model: RunModel,
    timelines: dict[str, _Timeline],
    flavors: list[str],
) -> StartForecast | None:
    flavor = next((f for f in flavors if f in state.pools), None)  # fluid: the first only
    if flavor is None:
        return None
    timeline = timelines.get(flavor)
    if timeline is None:
        timeline = timelines[flavor] = _Timeline(state, flavor, now, model)
    if job.gpus > timeline.gpus:
        return None
    return timeline.fluid(now, job.gpus, model(job.id, 0.0, job.max_runtime), job.id)
