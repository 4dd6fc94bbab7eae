"""`gpupool bench dispatch` without running it (it starts a Ray of its own): the pool it seeds
and how its figures are counted from the database's rows and Ray's submissions."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

from scheduler.sim.cluster import load_cluster
from web.bench_dispatch import _figures, _pct, dispatch_pool


def test_the_bench_pool_has_room_for_every_job(tmp_path: Path) -> None:
    path = tmp_path / "pool.toml"
    path.write_text(dispatch_pool(3))
    cluster = load_cluster(path)
    assert [(n.name, n.gpus) for n in cluster.nodes] == [("n-0", 8), ("n-1", 8), ("n-2", 8)]
    (project,) = cluster.projects
    assert project.quotas["H100-80GB"].guaranteed == 24


def row(job_id: int, state: str, admitted: float, started: float | None, ended: float | None):
    return SimpleNamespace(
        id=job_id, state=state, admitted_at=admitted, started_at=started, ended_at=ended
    )


def test_figures_count_what_ran_what_was_lost_and_what_ran_twice() -> None:
    rows = {
        1: row(1, "succeeded", 100.0, 101.0, 103.0),
        2: row(2, "succeeded", 100.0, 102.0, 104.0),
        3: row(3, "lost", 100.0, None, 104.5),
        4: row(4, "running", 100.0, 103.0, None),  # did not end in time
    }
    submitted = {1: 99.5, 2: 99.5, 3: 99.5, 4: 99.5, 5: 99.5}  # 5: not in the database
    ray = Counter({1: 1, 2: 2, 4: 1})
    got = _figures(5, rows, submitted, ray, [0.8, 0.9, 1.0], 99.0, 0.0, False, 2.0)
    assert got["p50_admit_to_running_s"] == 2.0
    assert got["p95_admit_to_running_s"] == 3.0
    assert got["p50_submit_to_running_s"] == 2.5
    assert got["ray_floor_p50_s"] == 0.9
    assert got["lost"] == 3  # 3 lost, 4 unfinished, 5 missing
    assert got["duplicated"] == 1  # Ray was given job 2 twice
    assert got["jobs_per_s"] == round(3 / (104.5 - 99.0), 2)
    assert _pct([], 50) is None
