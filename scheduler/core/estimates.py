"""Run-time estimates for backfill, from history: EASY++ (Tsafrir, Etsion and Feitelson,
"Backfilling using system-generated predictions rather than user runtime estimates", 2007).

A job is expected to run as long as the mean of the last two jobs of the same user (or
project) that ran to the end; with no history, for its whole time limit. A job that
outlives its estimate is taken to run to its limit (see backfill.py). Estimates only shape
reservations and backfill; a job is held to its max_runtime, never to its estimate.
"""

from __future__ import annotations

from collections import deque


class RecentRuntimes:
    def __init__(self, remembered: int = 2) -> None:
        self._remembered = remembered
        self._runs: dict[str, deque[float]] = {}

    def observe(self, key: str, runtime: float) -> None:
        """A job of `key` ran to its end in `runtime` seconds."""
        runs = self._runs.get(key)
        if runs is None:
            runs = self._runs[key] = deque(maxlen=self._remembered)
        runs.append(runtime)

    def estimate(self, key: str) -> float | None:
        runs = self._runs.get(key)
        return None if not runs else sum(runs) / len(runs)
