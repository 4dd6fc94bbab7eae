"""EASY backfill: a reservation for the first blocked job, and the GPUs it holds back.

The earliest start is found by replaying the running jobs' expected ends (start + their
estimate or max_runtime, or the end of a preemption's grace period) onto the current free
counts until the job fits. Until then, a job may use the reserved nodes' GPUs only if it
ends before the reservation starts, or if it leaves the reservation its GPUs at that time.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from scheduler.core.placement import FlavorPool
from scheduler.core.types import Piece, Running


@dataclass(slots=True)
class Hold:
    """GPUs on reserved nodes that only jobs ending before `start` may use."""

    job_id: str
    start: float
    pieces: tuple[Piece, ...]
    borrower: bool = False  # reserved for a borrowing job: in-quota jobs may ignore it
    held: dict[int, int] = field(default_factory=dict)  # node index -> GPUs held back

    def apply(self, pool: FlavorPool, free_at_start: dict[int, int]) -> None:
        for name, need in self.pieces:
            i = pool.index[name]
            spare_at_start = free_at_start.get(i, pool.free[i]) - need
            usable_now = max(0, min(pool.free[i], spare_at_start))
            self.held[i] = pool.free[i] - usable_now
        pool.take((pool.names[i], n) for i, n in self.held.items() if n)

    def release(self, pool: FlavorPool) -> None:
        pool.give((pool.names[i], n) for i, n in self.held.items() if n)
        self.held.clear()

    @property
    def total(self) -> int:
        return sum(self.held.values())

    def place_short(self, pool: FlavorPool, gpus: int) -> Piece | None:
        """A node using held GPUs, for a job that may use them (one expected to end before
        the reservation starts, or an in-quota job when the reservation is a borrower's)."""
        options = sorted(
            (pool.free[i] + h, i) for i, h in self.held.items() if pool.free[i] + h >= gpus
        )
        if not options:
            return None
        i = options[0][1]
        from_held = min(self.held[i], gpus)
        self.held[i] -= from_held
        # The held GPUs were taken out of the pool; give back what the short job uses, so
        # that the caller's take() of the whole piece balances.
        pool.give([(pool.names[i], from_held)])
        return (pool.names[i], gpus)


def _in_expected_order(
    ends: Sequence[tuple[float, str]], running: dict[str, Running], now: float
) -> Iterator[tuple[float, str]]:
    """Running jobs by when their GPUs are expected back, lazily. A job past its estimate is
    taken to run to its limit (as EASY++ does): it moves back to its limit's place."""
    later: list[tuple[float, str]] = []
    for entry in ends:
        while later and later[0] <= entry:
            yield heapq.heappop(later)
        end, job_id = entry
        run = running.get(job_id)
        if end < now and run is not None and run.latest_end > end:
            heapq.heappush(later, (run.latest_end, job_id))
        else:
            yield entry
    while later:
        yield heapq.heappop(later)


def earliest_start(
    pool: FlavorPool,
    ends: Sequence[tuple[float, str]],
    running: dict[str, Running],
    sizes: Sequence[int],
    now: float,
) -> tuple[float, tuple[Piece, ...], dict[int, int]] | None:
    """(start, pieces, free GPUs per touched node at start) for a job that cannot start now."""
    free: dict[int, int] = {}
    big = max(sizes)
    ready = [i for i, f in enumerate(pool.free) if f >= big] if len(sizes) > 1 else []
    for end, job_id in _in_expected_order(ends, running, now):
        run = running.get(job_id)
        if run is None:
            continue
        for name, n in run.pieces:
            i = pool.index.get(name)
            if i is None:
                continue
            before = free.get(i, pool.free[i])
            free[i] = before + n
            if len(sizes) == 1:
                if free[i] >= big:
                    return (max(end, now), ((name, big),), free)
            elif before < big <= free[i]:
                ready.append(i)
        if len(sizes) > 1 and len(ready) >= len(sizes):
            chosen = sorted(ready, key=lambda i: (-free.get(i, pool.free[i]), i))[: len(sizes)]
            pieces = tuple(
                (pool.names[i], n) for i, n in zip(chosen, sorted(sizes, reverse=True), strict=True)
            )
            return (max(end, now), pieces, free)
    return None
