"""Pending jobs, one queue per (project, flavor), each kept in its own order.

Within a queue the order never changes between cycles (priority, then age; or age alone),
so it is kept sorted on insert. Across queues the order depends on usage, which moves with
every admission: the cycle merges queue heads (see cycle.py).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import Counter
from typing import TypeVar

from scheduler.core.policy import Ordering
from scheduler.core.types import Job

K = TypeVar("K", int, float)
QueueKey = tuple[str, str]  # (project, flavor)
SortKey = tuple[int, float, str]  # (-priority, submit time, job id)


def sort_key(job: Job, ordering: Ordering) -> SortKey:
    priority = -job.priority if ordering is Ordering.FAIR_SHARE else 0
    return (priority, job.submit_time, job.id)


class JobQueue:
    __slots__ = (
        "_entries",
        "_jobs",
        "_limits",
        "_pieces",
        "_runtimes",
        "_sizes",
        "key",
        "ordering",
    )

    def __init__(self, key: QueueKey, ordering: Ordering) -> None:
        self.key = key
        self.ordering = ordering
        self._entries: list[SortKey] = []
        self._jobs: dict[str, Job] = {}
        self._sizes: Counter[int] = Counter()
        self._pieces: Counter[int] = Counter()  # GPUs a job needs on one node, at least
        self._runtimes: Counter[float] = Counter()
        self._limits: Counter[float] = Counter()  # GPUs x max_runtime: what credits commit

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, job: Job) -> None:
        if job.id in self._jobs:
            raise ValueError(f"job {job.id} is already queued")
        insort(self._entries, sort_key(job, self.ordering))
        self._jobs[job.id] = job
        self._sizes[job.gpus] += 1
        self._pieces[_piece(job)] += 1
        self._runtimes[job.expected_runtime] += 1
        self._limits[_limit(job)] += 1

    def extend(self, jobs: list[Job]) -> None:
        """Add many jobs, sorting once. Their ids must not be queued already."""
        before = len(self._jobs)
        self._jobs.update((job.id, job) for job in jobs)
        if len(self._jobs) != before + len(jobs):
            raise ValueError("a job is already queued")
        self._sizes.update(job.gpus for job in jobs)
        self._pieces.update(_piece(job) for job in jobs)
        self._runtimes.update(job.expected_runtime for job in jobs)
        self._limits.update(_limit(job) for job in jobs)
        self._entries.extend(sort_key(job, self.ordering) for job in jobs)
        self._entries.sort()

    def remove(self, job_id: str) -> Job | None:
        job = self._jobs.pop(job_id, None)
        if job is None:
            return None
        entry = sort_key(job, self.ordering)
        i = bisect_left(self._entries, entry)
        del self._entries[i]
        _uncount(self._sizes, job.gpus)
        _uncount(self._pieces, _piece(job))
        _uncount(self._runtimes, job.expected_runtime)
        _uncount(self._limits, _limit(job))
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def at(self, position: int) -> Job | None:
        if position >= len(self._entries):
            return None
        return self._jobs[self._entries[position][2]]

    def after(self, key: SortKey | None) -> Job | None:
        """The first job after `key` in this queue's order (None: the first job)."""
        position = 0 if key is None else bisect_right(self._entries, key)
        return self.at(position)

    def smallest(self) -> int:
        """The fewest GPUs any queued job asks for (0 when empty)."""
        return min(self._sizes, default=0)

    def smallest_piece(self) -> int:
        """The fewest GPUs any queued job needs on a single node."""
        return min(self._pieces, default=0)

    def shortest_runtime(self) -> float:
        return min(self._runtimes, default=0.0)

    def least_gpu_seconds(self) -> float:
        """The fewest GPU-seconds any queued job may run (GPUs x max_runtime)."""
        return min(self._limits, default=0.0)


def _piece(job: Job) -> int:
    return job.gpus // job.nodes if job.nodes else job.gpus


def _limit(job: Job) -> float:
    return job.gpus * job.max_runtime


def _uncount(counter: Counter[K], value: K) -> None:
    counter[value] -= 1
    if not counter[value]:
        del counter[value]
