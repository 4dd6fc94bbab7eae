"""Replays small enough to check by hand, and the simulator's refusal of bad traces."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.core import FlavorQuota, Node, Policy, Project, Sector
from scheduler.sim.cluster import Cluster, load_cluster
from scheduler.sim.engine import Simulation, check_trace
from scheduler.sim.errors import InputError
from scheduler.sim.metrics import jain, percentile
from scheduler.sim.trace import TraceJob, load_trace
from tests.conftest import write_trace


def pool(nodes: int = 1, **quotas: tuple[int, int]) -> Cluster:
    return Cluster(
        nodes=tuple(Node(f"n{i}", "H100", 8) for i in range(nodes)),
        sectors=(Sector("research"),),
        projects=tuple(
            Project(name, "research", {"H100": FlavorQuota(g, limit)})
            for name, (g, limit) in quotas.items()
        ),
    )


def trace_job(i: int, project: str, gpus: int, submit: float, duration: float) -> TraceJob:
    return TraceJob(f"j{i}", submit, project, gpus, "H100", duration, 10_000.0, line=i + 2)


def test_second_whole_node_job_waits_for_the_first() -> None:
    jobs = [trace_job(0, "a", 8, 0, 100), trace_job(1, "a", 8, 0, 50)]
    sim = Simulation(pool(a=(8, 8)), jobs, Policy.gpupool())
    report = sim.run()
    assert report.completed == 2
    assert report.mean_wait_s == 50.0 and report.p99_wait_s == 100.0
    assert report.mean_jct_s == 125.0
    assert report.guarantee_violation_s == 0 and report.preemptions == 0
    assert report.utilization == pytest.approx(1.0)


def test_in_quota_job_reclaims_a_borrower_after_the_grace_period() -> None:
    jobs = [trace_job(0, "a", 8, 0, 1000), trace_job(1, "b", 8, 100, 500)]
    policy = Policy.gpupool(grace_period_s=120.0)
    sim = Simulation(pool(a=(0, 8), b=(8, 8)), jobs, policy, checkpoint_interval_s=60.0)
    report = sim.run()
    borrower, owner = sim.records["j0"], sim.records["j1"]
    assert owner.first_start == 220.0  # submitted at 100, borrower stopped at 100 + 120
    assert borrower.preemptions == 1 and borrower.borrowed
    assert borrower.done_s == 180.0  # ran 220 s, checkpoints every 60 s
    assert borrower.lost_gpu_s == 40.0 * 8
    assert borrower.end == 220.0 + 500.0 + (1000.0 - 180.0)
    assert report.guarantee_violation_s == 0.0
    assert report.lost_gpu_h == pytest.approx(40.0 * 8 / 3600)


def test_without_checkpoints_a_preempted_job_starts_over() -> None:
    jobs = [trace_job(0, "a", 8, 0, 1000), trace_job(1, "b", 8, 100, 500)]
    sim = Simulation(pool(a=(0, 8), b=(8, 8)), jobs, Policy.gpupool(), checkpoint_interval_s=0)
    sim.run()
    assert sim.records["j0"].end == 220.0 + 500.0 + 1000.0


def test_static_confines_a_project_to_its_guarantee_while_fifo_pools() -> None:
    jobs = [trace_job(i, "a", 8, 0, 100) for i in range(2)]
    static = Simulation(pool(2, a=(8, 16), b=(8, 16)), jobs, Policy.static()).run()
    fifo = Simulation(pool(2, a=(8, 16), b=(8, 16)), jobs, Policy.fifo()).run()
    assert static.mean_wait_s == 50.0  # the second job waits for a's 8 GPUs
    assert fifo.mean_wait_s == 0.0  # b's idle node is used
    assert static.idle_while_waiting_gpu_h == pytest.approx(8 * 100 / 3600)
    assert fifo.idle_while_waiting_gpu_h == 0.0


def test_every_policy_completes_a_generated_workload(small_pool: Path, tmp_path: Path) -> None:
    def size(i: int) -> int:  # project b (odd rows) also sends 16-GPU jobs
        return [1, 2, 4, 8, 16][i % 5] if i % 2 else [1, 2, 4, 8][i % 4]

    rows = [f"{i * 7},{'ab'[i % 2]},{size(i)},H100,{30 + i % 13 * 40},," for i in range(300)]
    trace = load_trace(write_trace(tmp_path / "t.csv", rows))
    cluster = load_cluster(small_pool)
    too_big_for_static = sum(1 for j in trace if j.gpus > 8)  # b's guarantee is 8
    for name, rejected in (("gpupool", 0), ("static", too_big_for_static), ("fifo", 0)):
        report = Simulation(cluster, trace, Policy.named(name)).run()
        assert (report.completed, report.rejected) == (300 - rejected, rejected), name
        assert 0 < report.utilization <= 1


def test_a_job_that_can_never_fit_is_refused_with_its_line(
    small_pool: Path, tmp_path: Path
) -> None:
    cluster = load_cluster(small_pool)
    trace = load_trace(write_trace(tmp_path / "t.csv", ["0,a,1,H100,10,,", "1,a,32,H100,10,,"]))
    with pytest.raises(InputError) as caught:
        check_trace(cluster, trace, str(tmp_path / "t.csv"), Policy.gpupool())
    assert (caught.value.line, caught.value.field) == (3, "gpus")
    assert "32 GPUs do not fit the pool's 2 H100 nodes (16 GPUs, at most 8 a node)" in str(
        caught.value
    )


@pytest.mark.parametrize(
    ("row", "field", "words"),
    [
        ("0,c,1,H100,10,,", "project", "unknown project 'c'; the cluster file lists a, b"),
        ("0,a,1,B200,10,,", "flavor", "unknown flavor 'B200'; the pool has: H100"),
        ("0,a,24,H100,10,,", "gpus", "fit the pool"),
    ],
)
def test_check_trace_names_line_and_field(
    small_pool: Path, tmp_path: Path, row: str, field: str, words: str
) -> None:
    trace = load_trace(write_trace(tmp_path / "t.csv", [row]))
    with pytest.raises(InputError) as caught:
        check_trace(load_cluster(small_pool), trace, "t.csv", Policy.gpupool())
    assert (caught.value.line, caught.value.field) == (2, field)
    assert words in str(caught.value)


def test_static_refuses_a_job_larger_than_the_guarantee(small_pool: Path, tmp_path: Path) -> None:
    trace = load_trace(write_trace(tmp_path / "t.csv", ["0,a,16,H100,10,,"]))
    check_trace(load_cluster(small_pool), trace, "t.csv", Policy.gpupool())  # may borrow
    with pytest.raises(InputError, match="exceed project a's guarantee of 8 H100"):
        check_trace(load_cluster(small_pool), trace, "t.csv", Policy.static())


def test_percentile_and_jain() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0 and percentile(values, 99) == 99.0
    assert percentile([], 50) == 0.0
    assert jain([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert jain([1.0, 0.0]) == pytest.approx(0.5)


def test_runtime_estimates_come_from_the_last_two_runs() -> None:
    from scheduler.core.estimates import RecentRuntimes

    history = RecentRuntimes()
    assert history.estimate("project:a") is None
    for runtime in (100.0, 300.0, 500.0):
        history.observe("project:a", runtime)
    assert history.estimate("project:a") == 400.0  # the last two only


def test_a_job_longer_than_its_limit_is_cut_and_teaches_no_estimate() -> None:
    jobs = [TraceJob("j0", 0.0, "a", 8, "H100", 500.0, 100.0, line=2)]
    sim = Simulation(pool(a=(8, 8)), jobs, Policy.gpupool())
    report = sim.run()
    assert report.timed_out == 1 and report.completed == 1
    assert sim.records["j0"].end == 100.0
    assert sim.history.estimate("project:a") is None
