"""Workload families: the same seed gives the same bytes, each hits its load and has its shape,
and bad requests are errors that say what is allowed."""

from __future__ import annotations

import hashlib
import math
import os
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.core import ANY_FLAVOR, FlavorQuota, Node, Policy, Project, Sector
from scheduler.sim.cluster import Cluster, load_cluster
from scheduler.sim.engine import check_trace
from scheduler.sim.synthetic import (
    BENCH_LOADS,
    DAY,
    FAMILIES,
    HOUR,
    LOAD_RANGE,
    MINUTE,
    SEED_RANGE,
    WEEK,
    WorkloadError,
    check_load,
    check_seed,
    generate_workload,
    offered_load,
)
from scheduler.sim.trace import TraceJob, load_generic, write_generic

REPO = Path(__file__).resolve().parents[3]
JOBS = 600  # enough to measure a load, small enough to stay quick
SHAPE_JOBS = 2000  # each family's own count at load 0.9: enough for its shape


def pool_of(name: str) -> Cluster:
    return load_cluster(FAMILIES[name].pool_path)


def workload(name: str, load: float = 0.9, seed: int = 1, jobs: int = JOBS) -> list[TraceJob]:
    return generate_workload(name, pool_of(name), load, seed, jobs)


def as_bytes(jobs: list[TraceJob], path: Path) -> bytes:
    write_generic(jobs, path)
    return path.read_bytes()


def demand(jobs: list[TraceJob]) -> float:
    return sum(j.gpus * j.duration_s for j in jobs)


@pytest.mark.parametrize("name", FAMILIES)
def test_same_seed_same_bytes_other_seed_other_jobs(name: str, tmp_path: Path) -> None:
    first = as_bytes(workload(name, seed=5), tmp_path / "a.csv")
    again = as_bytes(workload(name, seed=5), tmp_path / "b.csv")
    other = as_bytes(workload(name, seed=6), tmp_path / "c.csv")
    assert first == again
    assert first != other


def test_same_bytes_in_another_process_under_another_hash_seed(tmp_path: Path) -> None:
    script = (
        "import hashlib, sys, pathlib\n"
        "from scheduler.sim.cluster import load_cluster\n"
        "from scheduler.sim.synthetic import FAMILIES, generate_workload\n"
        "from scheduler.sim.trace import write_generic\n"
        "out = pathlib.Path(sys.argv[1])\n"
        "for name, f in FAMILIES.items():\n"
        "    write_generic(generate_workload(name, load_cluster(f.pool_path), 1.1, 3, 300), out)\n"
        "    print(name, hashlib.sha256(out.read_bytes()).hexdigest())\n"
    )
    digests = []
    for hash_seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / f"w{hash_seed}.csv")],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            check=True,
        )
        digests.append(done.stdout)
    here = ""
    for name in FAMILIES:
        jobs = generate_workload(name, pool_of(name), 1.1, 3, 300)
        here += f"{name} {hashlib.sha256(as_bytes(jobs, tmp_path / 'h.csv')).hexdigest()}\n"
    assert digests[0] == digests[1] == here


def test_the_written_trace_reads_back_the_same(tmp_path: Path) -> None:
    jobs = workload("flavors", jobs=400)
    path = tmp_path / "w.csv"
    write_generic(jobs, path)
    back = load_generic(path)

    def rows(jobs: list[TraceJob]) -> list[tuple[object, ...]]:
        # load_generic breaks ties in submit_s by id text (t10 before t9): compare as sets
        return sorted(
            (j.submit_s, j.project, j.gpus, j.flavor, j.duration_s, j.max_runtime_s, j.user)
            for j in jobs
        )

    assert rows(back) == rows(jobs)


@pytest.mark.parametrize("load", BENCH_LOADS)
@pytest.mark.parametrize("name", FAMILIES)
def test_each_family_offers_its_load(name: str, load: float) -> None:
    jobs = workload(name, load)
    assert offered_load(jobs, pool_of(name)) == pytest.approx(load, abs=0.01)
    assert jobs == sorted(jobs, key=lambda j: j.submit_s) and jobs[0].submit_s == 0.0
    assert len(jobs) >= JOBS


@pytest.mark.parametrize("name", FAMILIES)
def test_default_job_count_scales_with_the_load(name: str) -> None:
    pool = pool_of(name)
    low, high = (generate_workload(name, pool, load, 1) for load in (0.7, 1.1))
    assert len(high) / len(low) == pytest.approx(1.1 / 0.7, rel=0.05)


@pytest.mark.parametrize("name", FAMILIES)
def test_every_job_fits_its_projects_guarantee(name: str) -> None:
    """So that `static` (each project confined to its guarantee) can run every job."""
    pool = pool_of(name)
    jobs = workload(name)
    check_trace(pool, jobs, name, Policy.static())
    assert all(j.max_runtime_s is not None and j.max_runtime_s >= j.duration_s for j in jobs)


def test_heavy_tail_most_jobs_minutes_a_few_weeks() -> None:
    durations = sorted(j.duration_s for j in workload("heavy-tail", jobs=SHAPE_JOBS))
    assert 5 * MINUTE <= statistics.median(durations) <= 20 * MINUTE
    assert durations[-1] >= 12 * DAY
    assert sum(d >= DAY for d in durations) <= 0.05 * len(durations)


def test_flood_one_project_asks_many_times_its_guarantee() -> None:
    pool = pool_of("flood")
    jobs = workload("flood", jobs=SHAPE_JOBS)
    window = jobs[-1].submit_s
    by_project: dict[str, float] = defaultdict(float)
    for j in jobs:
        by_project[j.project] += j.gpus * min(j.duration_s, window - j.submit_s)
    guaranteed = {p.name: sum(q.guaranteed for q in p.quotas.values()) for p in pool.projects}
    ratios = {name: asked / window / guaranteed[name] for name, asked in by_project.items()}
    flooder = max(ratios, key=lambda name: ratios[name])
    assert ratios[flooder] >= 5, ratios
    assert sorted(ratios.values())[-2] < 3, "only one project floods"
    flood = [j for j in jobs if j.project == flooder]
    assert demand(flood) / demand(jobs) == pytest.approx(0.5, abs=0.05)


def test_gangs_carry_a_third_of_the_demand_on_several_nodes() -> None:
    pool = pool_of("gangs")
    node_gpus = max(n.gpus for n in pool.nodes)
    jobs = workload("gangs", jobs=SHAPE_JOBS)
    gangs = [j for j in jobs if 16 <= j.gpus <= 64]
    assert demand(gangs) / demand(jobs) == pytest.approx(1 / 3, abs=0.04)
    assert all(j.gpus > node_gpus for j in gangs), "every gang spans nodes"
    assert all(j.gpus <= 8 for j in jobs if j not in gangs)
    assert {j.gpus for j in gangs} >= {16, 32, 64}


def test_flavors_uses_every_flavor_and_a_quarter_any() -> None:
    pool = pool_of("flavors")
    jobs = workload("flavors", jobs=SHAPE_JOBS)
    assert len(pool.flavors) >= 3
    assert {j.flavor for j in jobs} == {*pool.flavors, ANY_FLAVOR}
    assert sum(j.flavor == ANY_FLAVOR for j in jobs) / len(jobs) == pytest.approx(0.25, abs=0.06)
    # the dearest flavor is the most asked for, against its capacity
    per_gpu = {
        f: demand([j for j in jobs if j.flavor == f]) / pool.gpus_of(f) for f in pool.flavors
    }
    dearest = max(pool.flavors, key=lambda f: pool.credit_rates[f])
    assert max(per_gpu, key=lambda f: per_gpu[f]) == dearest


def test_long_runners_hold_gpus_for_weeks_next_to_short_jobs() -> None:
    jobs = workload("long-runners", jobs=SHAPE_JOBS)
    long = [j for j in jobs if j.duration_s >= 5 * DAY]
    short = [j for j in jobs if j.duration_s < 5 * DAY]
    assert demand(long) / demand(jobs) == pytest.approx(0.5, abs=0.05)
    assert max(j.duration_s for j in long) >= 2 * WEEK
    assert statistics.median(j.duration_s for j in short) <= HOUR
    assert len(long) <= 0.05 * len(jobs)


def test_unknown_family_lists_the_families() -> None:
    with pytest.raises(WorkloadError) as caught:
        generate_workload("philly", pool_of("flood"), 0.9, 1)
    assert all(name in str(caught.value) for name in FAMILIES)


@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**70), 2**70))
@settings(max_examples=100, deadline=None)
def test_load_outside_its_range_is_refused(load: float) -> None:
    low, high = LOAD_RANGE
    if (isinstance(load, float) and math.isnan(load)) or not low <= load <= high:
        with pytest.raises(WorkloadError, match=r"--load must be a number from 0\.05 to 3"):
            check_load(load, "--load")
    else:
        check_load(load, "--load")


@pytest.mark.parametrize("seed", [-1, 2**32, 2**70, 10**400, True, 1.5])
def test_seed_outside_its_range_is_refused(seed: int) -> None:
    with pytest.raises(WorkloadError) as caught:
        check_seed(seed, "--seed")
    message = str(caught.value)
    assert message.startswith(f"--seed must be a whole number from 0 to {SEED_RANGE[1]}")
    assert len(message) < 200  # a 400-digit seed is not printed back


def test_seed_range_ends_are_accepted() -> None:
    for seed in SEED_RANGE:
        check_seed(seed)


def tiny_pool(guaranteed: int, gpus: int = 8, nodes: int = 2) -> Cluster:
    return Cluster(
        nodes=tuple(Node(f"n{i}", "H100", gpus) for i in range(nodes)),
        sectors=(Sector("research"),),
        projects=(Project("a", "research", {"H100": FlavorQuota(guaranteed, gpus * nodes)}),),
    )


def test_a_pool_without_guarantees_is_refused() -> None:
    with pytest.raises(WorkloadError, match="guarantees no project any GPUs"):
        generate_workload("heavy-tail", tiny_pool(0), 0.9, 1, 100)


def test_gangs_need_a_project_guaranteed_a_gang() -> None:
    with pytest.raises(WorkloadError, match="largest guarantee is 8"):
        generate_workload("gangs", tiny_pool(8), 0.9, 1, 100)


def test_too_few_jobs_for_the_load_is_said() -> None:
    with pytest.raises(WorkloadError, match="cannot offer this load"):
        generate_workload("flood", pool_of("flood"), 3.0, 1, 20)


def test_a_tiny_pool_takes_tiny_workloads() -> None:
    pool = tiny_pool(16)
    for name in ("heavy-tail", "flood", "flavors", "long-runners"):
        jobs = generate_workload(name, pool, 0.9, 2, 50)
        assert offered_load(jobs, pool) == pytest.approx(0.9, abs=0.01)
        check_trace(pool, jobs, name, Policy.static())
