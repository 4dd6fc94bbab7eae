"""Start forecasts (scheduler/core/forecast.py) and the run-time history they read
(estimates.RecentRuntimes.forecast), on cases small enough to work out by hand."""

from __future__ import annotations

import pytest

from scheduler.core import Policy, SchedulerState, StartForecast, run_cycle
from scheduler.core.estimates import RecentRuntimes, RunForecast
from scheduler.core.forecast import DETAILED_JOBS, Forecaster, RunModel, forecast_starts

from .builders import HOUR, job, node, project, running, snapshot

LIMIT = 10 * HOUR


def history_of(runs: dict[str, list[float]]) -> RunModel:
    """Run times by job id: each job's own remembered runs."""
    history = RecentRuntimes()
    for key, values in runs.items():
        for value in values:
            history.observe(key, value)
    return lambda job_id, elapsed, limit: history.forecast(job_id, elapsed, limit)


def to_limit(job_id: str, elapsed: float, limit: float) -> RunForecast:
    return RunForecast(limit, limit, limit)


def forecasts_after_a_cycle(
    pending: list[object], runs: list[object], model: RunModel, now: float = 0.0, nodes: int = 1
) -> dict[str, StartForecast]:
    state = SchedulerState(
        snapshot(
            nodes=[node(f"n{i}") for i in range(nodes)],
            projects=[project("p").quota("H100", 8 * nodes, 64)],
            pending=pending,
            running=runs,
        ),
        Policy.gpupool(),
    )
    run_cycle(state, now)
    return forecast_starts(state, now, model)


# -- run times from history ------------------------------------------------------------


@pytest.mark.parametrize(
    ("runs", "elapsed", "expected"),
    [
        # no history at all: only the limit is known
        ([], 0.0, RunForecast(LIMIT, LIMIT, LIMIT, unbounded=True)),
        # quartiles of the runs longer than what it has run (nearest rank)
        ([10, 20, 30, 40], 0.0, RunForecast(10, 20, 30)),
        ([10, 20, 30, 40], 25.0, RunForecast(30, 30, 40)),
        # it has outrun every remembered run: as long again as it has run, up to its limit
        ([10, 20, 30, 40], 45.0, RunForecast(45, 90, LIMIT, unbounded=True)),
        ([10, 20, 30, 40], 0.7 * LIMIT, RunForecast(0.7 * LIMIT, LIMIT, LIMIT, unbounded=True)),
        # never past the limit
        ([2 * LIMIT], 0.0, RunForecast(LIMIT, LIMIT, LIMIT)),
    ],
)
def test_a_run_is_forecast_from_the_runs_longer_than_it_has_run(
    runs: list[float], elapsed: float, expected: RunForecast
) -> None:
    history = RecentRuntimes()
    for value in runs:
        history.observe("user:u", value)
    assert history.forecast("user:u", elapsed, LIMIT) == expected


def test_a_key_without_history_borrows_the_pools_and_easy_plus_plus_is_unchanged() -> None:
    history = RecentRuntimes()
    for value in (100.0, 300.0, 500.0):
        history.observe("user:a", value)
    assert history.forecast("user:b", 0.0, LIMIT) == RunForecast(100, 300, 500)
    assert history.estimate("user:a") == 400.0  # the mean of the last two, as before
    assert history.estimate("user:b") is None  # backfill does not borrow


# -- forecasts -------------------------------------------------------------------------


def test_a_waiting_job_starts_when_the_running_job_is_likely_to_end() -> None:
    runs = {"r": [600.0, 1200.0, 1800.0, 2400.0]}
    forecasts = forecasts_after_a_cycle(
        [job("w").gpus(8).runtime(LIMIT)],
        [running("r").on("n0", 8).started(-300).runtime(LIMIT)],
        history_of(runs),
    )
    # r has run 300 s; its runs longer than that: 600..2400 (quartiles 600, 1200, 1800)
    assert forecasts["w"] == StartForecast(start=900.0, earliest=300.0, latest=1500.0)


def test_with_every_job_at_its_limit_the_forecast_is_slurms() -> None:
    forecasts = forecasts_after_a_cycle(
        [job("w").gpus(8).runtime(LIMIT)],
        [running("r").on("n0", 8).started(-300).runtime(LIMIT)],
        to_limit,
    )
    assert forecasts["w"].start == LIMIT - 300


def test_a_job_past_its_history_makes_the_forecast_rough_and_counts() -> None:
    forecasts = forecasts_after_a_cycle(
        [job("w").gpus(8).runtime(LIMIT)],
        [running("r").on("n0", 8).started(-3000).runtime(LIMIT)],
        history_of({"r": [600.0, 1200.0]}),
    )
    # outran every run: likely as long again (ends at 3000), at latest at its limit
    assert forecasts["w"] == StartForecast(3000.0, 0.0, LIMIT - 3000, unbounded=1)


def test_jobs_queue_behind_each_other_and_the_range_widens() -> None:
    runs = {"r": [1000.0], "w1": [500.0, 1500.0], "w2": [100.0]}
    forecasts = forecasts_after_a_cycle(
        [job("w1").gpus(8).runtime(LIMIT), job("w2").gpus(8).submitted(1).runtime(LIMIT)],
        [running("r").on("n0", 8).started(0).runtime(LIMIT)],
        history_of(runs),
    )
    assert forecasts["w1"] == StartForecast(1000.0, 1000.0, 1000.0)
    # w1 runs 500 (low) .. 500 (median of two, nearest rank) .. 1500 (high)
    assert forecasts["w2"] == StartForecast(1500.0, 1500.0, 2500.0)


def test_small_jobs_start_where_gpus_come_back_first() -> None:
    runs = {"early": [100.0], "late": [5000.0]}
    forecasts = forecasts_after_a_cycle(
        [job("w").gpus(4).runtime(LIMIT)],
        [
            running("early").on("n0", 8).runtime(LIMIT),
            running("late").on("n1", 8).runtime(LIMIT),
        ],
        history_of(runs),
        nodes=2,
    )
    assert forecasts["w"].start == 100.0


def test_a_gang_waits_for_its_last_node() -> None:
    runs = {"a": [100.0], "b": [700.0], "c": [300.0]}
    forecasts = forecasts_after_a_cycle(
        [job("gang").gpus(16).runtime(LIMIT)],
        [
            running("a").on("n0", 8).runtime(LIMIT),
            running("b").on("n1", 8).runtime(LIMIT),
            running("c").on("n2", 8).runtime(LIMIT),
        ],
        history_of(runs),
        nodes=3,
    )
    assert forecasts["gang"].start == 300.0  # n0 at 100, n2 at 300


def test_a_job_over_its_limit_has_no_forecast() -> None:
    state = SchedulerState(
        snapshot(
            nodes=[node("n0"), node("n1")],
            projects=[project("p").quota("H100", 8, 8)],
            pending=[job("over").gpus(4)],
            running=[running("r").on("n0", 8)],
        ),
        Policy.gpupool(),
    )
    run_cycle(state, 0.0)
    assert forecast_starts(state, 0.0, to_limit) == {}


def test_a_forecaster_resumed_for_new_submissions_gives_what_a_fresh_one_does() -> None:
    state = SchedulerState(
        snapshot(
            nodes=[node("n0")],
            projects=[project("p").quota("H100", 8, 64)],
            pending=[job("w1").gpus(8)],
            running=[running("r").on("n0", 8)],
        ),
        Policy.gpupool(),
    )
    model = history_of({"r": [100.0], "w1": [200.0], "w2": [50.0]})
    run_cycle(state, 0.0)
    resumed = Forecaster(state, 0.0, model)
    assert resumed.starts(["w1"]) == {"w1": StartForecast(100.0, 100.0, 100.0)}
    state.add_job(job("w2").gpus(8).submitted(5).build())
    run_cycle(state, 5.0)
    fresh = Forecaster(state, 0.0, model).starts()
    assert resumed.starts(["w2"]) == {"w2": fresh["w2"]} == {"w2": StartForecast(300, 300, 300)}


def test_past_the_detailed_jobs_the_pool_is_a_fluid_of_gpu_seconds() -> None:
    """Two 8-GPU nodes; r1 ends at 100 and r2 at 300 (their histories). Past the detailed
    jobs, a 4-GPU job of 50 s ahead uses 200 GPU-seconds: done by 100 + 200 / 8 = 125 on
    r1's node (before r2's GPUs are back), so the 8-GPU job behind it starts at 125."""
    state = SchedulerState(
        snapshot(
            nodes=[node("n0"), node("n1")],
            projects=[project("p").quota("H100", 16, 64)],
            pending=[job("w1").gpus(4), job("w2").gpus(8).submitted(1)],
            running=[running("r1").on("n0", 8), running("r2").on("n1", 8)],
        ),
        Policy.gpupool(),
    )
    run_cycle(state, 0.0)
    model = history_of({"r1": [100.0], "r2": [300.0], "w1": [50.0], "w2": [10.0]})
    forecaster = Forecaster(state, 0.0, model)
    forecaster.walked.update(f"before-{i}" for i in range(DETAILED_JOBS))  # as if walked
    assert forecaster.starts() == {
        "w1": StartForecast(100.0, 100.0, 100.0),
        "w2": StartForecast(125.0, 125.0, 125.0),
    }
    detailed = Forecaster(state, 0.0, model).starts()
    assert detailed["w2"] == StartForecast(150.0, 150.0, 150.0)  # behind w1, on n0
