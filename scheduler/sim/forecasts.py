"""What a replay told each job about its start, and how right that was.

A job's *first estimate* is the start it was told when it first waited: after the cycle at
its submission, if that cycle did not start it. Its *10-minute estimate* is the one it was
told 10 simulated minutes after its submission, if it still waited then (what its owner
would see on looking again). Jobs that started at once have neither. Preempted jobs queued
again are not asked again: a person plans by the first wait.

Estimates come from one of three sources (`EstimateSource`):
- history: the start forecasts of scheduler.core.forecast, with run times predicted from
  each user's (or project's) history, given how long each job has run (the default);
- limits: the same forecasts with every job taken to run to its limit (as Slurm's are);
- reservations: only what the cycle's reasons carry (the reserved job's start, a reclaim's
  end of grace); every other waiting job has none.
"""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from scheduler.core import SchedulerState
from scheduler.core.estimates import RecentRuntimes, RunForecast
from scheduler.core.forecast import Forecaster, RunModel

if TYPE_CHECKING:
    from scheduler.sim.engine import JobRecord

LATER_S = 600.0  # when the second estimate is read, after submission
# A forecast serves the jobs submitted after it for this long (they are forecast behind
# what it walked, on its timelines): bursts of submissions walk the queue once, not once
# each. The live loop's forecasts are at most FORECAST_INTERVAL_S (30 s) old; the replay's
# are older so that a replay of Philly stays near a minute (README: Start estimates).
REUSE_S = 120.0
WITHIN_S = 3600.0  # est_within_1h


class EstimateSource(StrEnum):
    HISTORY = "history"
    LIMITS = "limits"
    RESERVATIONS = "reservations"


class StartEstimates:
    """The first and 10-minute estimates of every job that waited."""

    def __init__(
        self,
        state: SchedulerState,
        source: EstimateSource,
        history: RecentRuntimes,
        key_of: Callable[[str], str],
    ) -> None:
        self.state = state
        self.source = source
        self.first: dict[str, float | None] = {}
        self.later: dict[str, float | None] = {}
        self._due: list[tuple[float, str]] = []  # (submission + LATER_S, job id)
        self._forecaster: Forecaster | None = None
        if source is EstimateSource.HISTORY:
            keys: dict[str, str] = {}

            def model(job_id: str, elapsed: float, limit: float) -> RunForecast:
                key = keys.get(job_id)
                if key is None:
                    key = keys[job_id] = key_of(job_id)
                return history.forecast(key, elapsed, limit)

            self.model: RunModel = model
        else:
            self.model = _to_limit

    def before_cycle(self, now: float) -> None:
        """Read the 10-minute estimates due before `now`: the state is as it stood then."""
        self._read_due(now, inclusive=False)

    def after_cycle(self, now: float, arrived: Iterable[tuple[str, float]]) -> None:
        """First estimates for jobs submitted now that still wait; then those due now."""
        waiting = [(job_id, submit) for job_id, submit in arrived if job_id in self.state.queue_of]
        if waiting:
            told = self._estimates(now, [job_id for job_id, _ in waiting])
            for job_id, submit in waiting:
                self.first[job_id] = told.get(job_id)
                heapq.heappush(self._due, (submit + LATER_S, job_id))
        self._read_due(now, inclusive=True)

    def _read_due(self, now: float, inclusive: bool) -> None:
        while self._due and (self._due[0][0] < now or (inclusive and self._due[0][0] == now)):
            at = self._due[0][0]
            batch = []
            while self._due and self._due[0][0] == at:
                batch.append(heapq.heappop(self._due)[1])
            still = [job_id for job_id in batch if job_id in self.state.queue_of]
            if still:
                told = self._estimates(at, still)
                for job_id in still:
                    self.later[job_id] = told.get(job_id)

    def _estimates(self, now: float, job_ids: list[str]) -> dict[str, float | None]:
        state = self.state
        if self.source is EstimateSource.RESERVATIONS:
            told: dict[str, float | None] = {}
            for job_id in job_ids:
                job = state.pending_job(job_id)
                reason = None if job is None else state.reasons.reason_for(job)
                told[job_id] = None if reason is None else reason.est_start
            return told
        forecaster = self._forecaster
        if forecaster is None or now - forecaster.now >= REUSE_S:
            forecaster = self._forecaster = Forecaster(state, now, self.model)
        forecasts = forecaster.starts(job_ids)
        return {
            job_id: max(now, f.start) if (f := forecasts.get(job_id)) else None
            for job_id in job_ids
        }

    def figures(self, records: Mapping[str, JobRecord]) -> dict[str, Any]:
        """est_* figures against the real starts (see the README's Simulator section)."""
        first, later = [], []
        waited = over_10m = 0
        waits_over_10m = []
        for job_id, record in records.items():
            if record.first_start is None:
                continue
            submit = record.trace.submit_s
            wait = record.first_start - submit
            if wait <= 0:
                continue
            waited += 1
            told = self.first.get(job_id)
            if told is not None:
                first.append((told - record.first_start, wait))
            if wait > LATER_S:
                waits_over_10m.append(wait)
            if job_id in self.later:
                over_10m += 1
                told = self.later[job_id]
                if told is not None:
                    first_start = record.first_start
                    later.append((told - first_start, first_start - (submit + LATER_S)))
        return {
            "est_source": self.source.value,
            "est_jobs": waited,
            **_accuracy("est", first, waited),
            "est_10m_jobs": over_10m,
            **_accuracy("est_10m", later, over_10m),
            "p50_wait_over_10m_s": statistics.median(waits_over_10m) if waits_over_10m else 0.0,
        }


def _accuracy(prefix: str, errors: list[tuple[float, float]], jobs: int) -> dict[str, float]:
    """Over (error, wait it was about) pairs of the jobs that had an estimate."""
    n = len(errors)
    return {
        f"{prefix}_coverage": n / jobs if jobs else 0.0,
        f"{prefix}_error_median_s": statistics.median(abs(e) for e, _ in errors) if n else 0.0,
        f"{prefix}_within_25pct": sum(abs(e) <= 0.25 * w for e, w in errors) / n if n else 0.0,
        f"{prefix}_within_1h": sum(abs(e) <= WITHIN_S for e, _ in errors) / n if n else 0.0,
    }


def _to_limit(job_id: str, elapsed: float, limit: float) -> RunForecast:
    return RunForecast(limit, limit, limit)
