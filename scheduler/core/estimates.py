"""Run-time estimates from history.

For backfill: EASY++ (Tsafrir, Etsion and Feitelson, "Backfilling using system-generated
predictions rather than user runtime estimates", 2007). A job is expected to run as long as
the mean of the last two jobs of the same user (or project) that ran to the end; with no
history, for its whole time limit. A job that outlives its estimate is taken to run to its
limit (see backfill.py). Estimates only shape reservations and backfill; a job is held to
its max_runtime, never to its estimate.

For people (start forecasts, forecast.py): the same history, but more of it and read
differently. A job that has run `elapsed` seconds is expected to end like the remembered
runs that lasted longer than that (their median; their quartiles give the range). One that
has outrun every remembered run has no history to say when it ends: it is expected to run
as long again as it has (the best guess for heavy-tailed run times), anywhere up to its
limit, and is counted as `unbounded`. A key with no history of its own borrows the pool's.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass

POOL_KEY = "*"  # every run, for keys with no history of their own


@dataclass(frozen=True, slots=True)
class RunForecast:
    """How long a job is expected to run in all (seconds): likely `mid`, between `low` and
    `high`; `unbounded` when no remembered run says when it ends."""

    low: float
    mid: float
    high: float
    unbounded: bool = False


class RecentRuntimes:
    def __init__(self, remembered: int = 2, depth: int = 16) -> None:
        self._remembered = remembered
        self._depth = max(depth, remembered)
        self._runs: dict[str, deque[float]] = {}
        self._sorted: dict[str, list[float]] = {}  # the same runs, shortest first

    def observe(self, key: str, runtime: float) -> None:
        """A job of `key` ran to its end in `runtime` seconds."""
        for k in (key, POOL_KEY):
            runs = self._runs.get(k)
            if runs is None:
                runs = self._runs[k] = deque(maxlen=self._depth)
            runs.append(runtime)
            self._sorted.pop(k, None)

    def estimate(self, key: str) -> float | None:
        """EASY++: the mean of the key's last `remembered` runs; None without history."""
        runs = self._runs.get(key)
        if not runs:
            return None
        recent = list(runs)[-self._remembered :]
        return sum(recent) / len(recent)

    def forecast(self, key: str, elapsed: float, limit: float) -> RunForecast:
        """The total run time of a job of `key` that has run `elapsed` seconds so far."""
        if key not in self._runs:
            key = POOL_KEY
        runs = self._sorted.get(key)
        if runs is None:
            runs = self._sorted[key] = sorted(self._runs.get(key, ()))
        if not runs:  # nothing has ended yet: only the limit is known
            return RunForecast(limit, limit, limit, unbounded=True)
        first = bisect_right(runs, elapsed)  # runs[first:] lasted longer than `elapsed`
        longer = len(runs) - first
        if not longer:
            return RunForecast(min(limit, elapsed), min(limit, 2.0 * elapsed), limit, True)

        def rank(q: float) -> float:  # nearest-rank quantile of the longer runs
            return min(limit, runs[first + max(1, math.ceil(q * longer)) - 1])

        return RunForecast(rank(0.25), rank(0.5), rank(0.75))
