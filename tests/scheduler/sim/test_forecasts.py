"""The simulator's figures of the start estimates, slowdown and per-project waits, on
replays small enough to work out by hand."""

from __future__ import annotations

import pytest

from scheduler.core import Policy
from scheduler.sim.engine import Simulation
from scheduler.sim.forecasts import EstimateSource

from .test_engine import pool, trace_job

# One 8-GPU node; project a (guaranteed 8, limit 16); limits of 10,000 s.
#   j0  0..1000            teaches the history of project a: one run of 1,000 s
#   j1  2000..3200         running when j2 and j3 arrive
#   j2  submitted 2100, starts 3200 (waited 1,100 s), runs 10 s
#   j3  submitted 2100, starts 3210 (waited 1,110 s)
JOBS = [
    trace_job(0, "a", 8, 0, 1000),
    trace_job(1, "a", 8, 2000, 1200),
    trace_job(2, "a", 8, 2100, 10),
    trace_job(3, "a", 8, 2100, 10),
]


def replay(source: EstimateSource) -> dict[str, object]:
    sim = Simulation(pool(a=(8, 16)), JOBS, Policy.gpupool(), start_estimates=source)
    report = sim.run().as_dict()
    assert [sim.records[f"j{i}"].first_start for i in range(4)] == [0, 2000, 3200, 3210]
    return report


def test_estimates_from_history_against_the_real_starts() -> None:
    report = replay(EstimateSource.HISTORY)
    # At 2100: j1 has run 100 s; a's one run (1,000 s) is longer: j1 ends at 3000, so j2 is
    # told 3000 (off by 200: within 25% of its 1,100 s wait) and j3, behind j2 (1,000 s by
    # a's history), 4000 (off by 790: not within 277.5). Both within the hour.
    assert report["est_jobs"] == 2 and report["est_coverage"] == 1.0
    assert report["est_error_median_s"] == pytest.approx((200 + 790) / 2)
    assert report["est_within_25pct"] == 0.5
    assert report["est_within_1h"] == 1.0
    # At 2700 (10 minutes on), both still wait and are told the same; the waits left are
    # 500 and 510 s, and 200 or 790 off is more than a quarter of either.
    assert report["est_10m_jobs"] == 2 and report["est_10m_coverage"] == 1.0
    assert report["est_10m_error_median_s"] == pytest.approx((200 + 790) / 2)
    assert report["est_10m_within_25pct"] == 0.0
    assert report["est_10m_within_1h"] == 1.0
    assert report["p50_wait_over_10m_s"] == pytest.approx((1100 + 1110) / 2)
    assert report["est_source"] == "history"


def test_estimates_at_the_limit_are_slurms() -> None:
    report = replay(EstimateSource.LIMITS)
    # j1 taken to its limit: j2 at 12000 (8,800 off), j3 after j2's limit, 22000 (18,790 off)
    assert report["est_error_median_s"] == pytest.approx((8800 + 18790) / 2)
    assert report["est_within_25pct"] == 0.0 and report["est_within_1h"] == 0.0


def test_reservations_alone_leave_most_waiting_jobs_without_an_estimate() -> None:
    report = replay(EstimateSource.RESERVATIONS)
    # Only j2 holds the reservation (EASY++: j1 expected to run a's last runs, 1,000 s)
    assert report["est_jobs"] == 2 and report["est_coverage"] == 0.5
    assert report["est_error_median_s"] == 200.0
    assert report["est_10m_coverage"] == 0.5


def test_jobs_that_start_at_once_are_not_counted() -> None:
    sim = Simulation(pool(a=(8, 16)), JOBS[:2], Policy.gpupool())
    report = sim.run()
    assert (report.est_jobs, report.est_10m_jobs, report.est_error_median_s) == (0, 0, 0.0)


def test_a_job_that_waits_less_than_10_minutes_has_no_second_estimate() -> None:
    jobs = [trace_job(0, "a", 8, 0, 300), trace_job(1, "a", 8, 10, 5)]
    report = Simulation(pool(a=(8, 16)), jobs, Policy.gpupool()).run()
    assert (report.est_jobs, report.est_10m_jobs) == (1, 0)


def test_mean_slowdown_floors_run_times_at_10_s_and_waits_are_per_project() -> None:
    # a's k0 (5 s) and k1 (100 s) are in quota and go first; b borrows after them.
    jobs = [
        trace_job(0, "a", 8, 0, 5),
        trace_job(1, "a", 8, 0, 100),
        trace_job(2, "b", 8, 0, 10),
    ]
    report = Simulation(pool(a=(8, 16), b=(0, 16)), jobs, Policy.gpupool()).run()
    # k0: 5 / max(5, 10) = 0.5; k1: 105 / 100; k2: 115 / 10
    assert report.mean_slowdown == pytest.approx((0.5 + 1.05 + 11.5) / 3)
    assert report.wait_by_project == {"a": 2.5, "b": 105.0}
