"""`gpupool bench portal` on a tiny pool: the database it builds holds what the pages read
(in a shape the services accept), and a run reports figures for every page it asks for.
Nothing here times anything: the figures are checked for their shape, never their size."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import Engine, func, select

from web.bench_portal import (
    World,
    bench_portal,
    build_pool_database,
    pages_to_time,
    percentiles,
)
from web.db import read_session
from web.models import Allocation, Attempt, Job, JobState, Node, NodeTelemetry, Role
from web.services.auth import Principal
from web.services.jobs import list_jobs
from web.services.nodes import node_gpus

NOW = 1_700_000_000.0


def test_the_bench_database_holds_what_the_pages_read(engine: Engine) -> None:
    world = build_pool_database(engine, nodes=40, jobs=600, projects=12, now=NOW)
    assert world.counts["nodes"] == world.counts["node_telemetry"] == 40
    assert world.counts["jobs"] == 600
    with read_session(engine) as session:
        jobs = session.exec(select(Job)).scalars().all()
        states = Counter(j.state for j in jobs)
        assert set(states) >= {"queued", "running", "succeeded"}
        assert states["succeeded"] > states["running"] > 0
        queued = [j for j in jobs if j.state == "queued"]
        assert all(j.reason_code and j.reason and j.attempt == 0 for j in queued)
        assert any(j.est_start is not None for j in queued)
        ran = [j for j in jobs if j.state != "queued"]
        assert session.scalar(select(func.count()).select_from(Attempt)) == len(ran)

        open_allocations = (
            session.exec(
                select(Allocation).where(Allocation.end.is_(None))  # type: ignore[union-attr]
            )
            .scalars()
            .all()
        )
        running = {j.id: j for j in jobs if j.state == "running"}
        assert sorted(a.job_id for a in open_allocations) == sorted(running)
        nodes = {n.name: n for n in session.exec(select(Node)).scalars()}
        held: Counter[str] = Counter()
        for a in open_allocations:
            job = running[a.job_id]
            assert (a.gpus, a.flavor) == (job.gpus, job.flavor) == (job.gpus, nodes[a.node].flavor)
            assert nodes[a.node].state != "down"
            held[a.node] += a.gpus
        assert max(held.values()) <= 8

        # Each node's latest report lists, on its GPUs, the jobs holding them.
        for row in session.exec(select(NodeTelemetry)).scalars():
            on_gpus = Counter(job for gpu in row.gpus for job, _ in gpu["jobs"])
            expected = Counter({a.job_id: a.gpus for a in open_allocations if a.node == row.node})
            assert on_gpus == expected, row.node

        # The services read it as they read a pool's own rows.
        ops = Principal("ops", Role.OPERATOR)
        gpus = node_gpus(session, ops, world.node)
        assert len(gpus.gpus) == 8
        assert any(g.jobs for g in gpus.gpus)
        researcher = Principal(world.user, Role.RESEARCHER, {world.project: "pi"})
        page = list_jobs(session, researcher, states=[JobState.QUEUED], limit=10)
        assert page.total == sum(1 for j in queued if j.project == world.project)
    assert world.jobs["queued"] and world.jobs["running"] and world.jobs["ended"]


def test_a_run_reports_every_page() -> None:
    result = bench_portal(nodes=20, jobs=300, requests=3, projects=10)
    assert result["database"] == "sqlite"
    assert (result["nodes"], result["jobs"]) == (20, 300)
    assert isinstance(result["build_s"], float)
    # Every page the bench knows of, whatever the pool (the labels name no project or job).
    labels = [label for label, _, _ in pages_to_time(World(project="x", other_project="y"))]
    assert list(result["pages"]) == labels
    dashboard = result["pages"]["/"]
    assert dashboard["status"] == 200
    assert dashboard["server_timed"] == 3  # every answer carried Server-Timing
    for label, figures in result["pages"].items():
        if figures["status"] == 200:
            assert figures["p50_ms"] <= figures["p95_ms"] <= figures["max_ms"], label
        else:  # not built yet (404) or failing: reported, not timed
            assert "p95_ms" not in figures, label
    assert result["missing"] == [p for p, f in result["pages"].items() if f["status"] == 404]
    assert set(result["over_200ms_p95"]) <= {
        p for p, f in result["pages"].items() if f["status"] == 200
    }


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], {"p50_ms": None, "p95_ms": None, "max_ms": None}),
        ([5.0], {"p50_ms": 5.0, "p95_ms": 5.0, "max_ms": 5.0}),
        ([4.0, 1.0, 3.0, 2.0], {"p50_ms": 2.0, "p95_ms": 4.0, "max_ms": 4.0}),
        ([float(i) for i in range(1, 101)], {"p50_ms": 50.0, "p95_ms": 95.0, "max_ms": 100.0}),
        ([float(i) for i in range(1, 21)], {"p50_ms": 10.0, "p95_ms": 19.0, "max_ms": 20.0}),
    ],
)
def test_percentiles_by_nearest_rank(values: list[float], expected: dict[str, float]) -> None:
    assert percentiles(values) == expected
