"""Hypothesis strategies: small random pools, projects, running and pending jobs.

Generated snapshots are *consistent* (no node over capacity, running jobs within their
project's limit, unique job ids) but otherwise as mean as possible: mixed node sizes and
flavors, draining and down nodes, stopping jobs, any-flavor jobs, gangs with node counts,
zero-GPU jobs, unknown flavors and projects, exhausted and short credits at several rates.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from scheduler.core import (
    ANY_FLAVOR,
    FlavorQuota,
    Job,
    Node,
    NodeState,
    Project,
    Running,
    Sector,
    Snapshot,
)

FLAVORS = ("A100", "H100")
NOW = 1000.0


def property_settings(examples: int) -> settings:
    """Reproducible and quick by default: a fixed seed per test, no example database, and
    failing examples reported as found rather than shrunk (shrinking can take half a minute).

        GPUPOOL_PROPERTY_EXAMPLES=5000   search wider
        GPUPOOL_PROPERTY_RANDOM=1        a new seed every run
        GPUPOOL_PROPERTY_SHRINK=1        shrink failures to a minimal example
        GPUPOOL_PROPERTY_NO_EXAMPLES=1   skip the @example regressions (to look past them)
    """
    phases = [Phase.reuse, Phase.generate, Phase.target]
    if not os.environ.get("GPUPOOL_PROPERTY_NO_EXAMPLES"):
        phases.insert(0, Phase.explicit)
    if os.environ.get("GPUPOOL_PROPERTY_SHRINK"):
        phases.append(Phase.shrink)
    return settings(
        max_examples=int(os.environ.get("GPUPOOL_PROPERTY_EXAMPLES", examples)),
        derandomize=not os.environ.get("GPUPOOL_PROPERTY_RANDOM"),
        phases=phases,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@st.composite
def nodes(draw: st.DrawFn, max_nodes: int = 4) -> list[Node]:
    flavors = draw(st.sampled_from([["H100"], ["H100"], ["A100", "H100"]]))
    count = draw(st.integers(len(flavors), max_nodes))
    states = st.sampled_from([NodeState.UP] * 4 + [NodeState.DRAINING, NodeState.DOWN])
    result = []
    for i in range(count):
        result.append(
            Node(
                name=f"n{i}",
                flavor=flavors[i] if i < len(flavors) else draw(st.sampled_from(flavors)),
                gpus=draw(st.sampled_from([2, 4, 8])),
                group=draw(st.sampled_from(["g1", "g2"])),
                state=draw(states),
            )
        )
    # Every flavor keeps one up node: a flavor with none is a known crash, covered by
    # test_placement.test_a_flavor_whose_nodes_are_all_unavailable_makes_its_jobs_wait.
    for flavor in flavors:
        if not any(n.flavor == flavor and n.state is NodeState.UP for n in result):
            i = next(i for i, n in enumerate(result) if n.flavor == flavor)
            result[i] = Node(result[i].name, flavor, result[i].gpus, result[i].group)
    return result


@st.composite
def projects(draw: st.DrawFn, flavors: list[str], max_projects: int = 3) -> list[Project]:
    result = []
    for i in range(draw(st.integers(1, max_projects))):
        quotas = {}
        for flavor in flavors:
            if draw(st.integers(0, 7)) == 0:
                continue  # no quota for this flavor
            guaranteed = draw(st.sampled_from([0, 0, 2, 4, 8, 12]))
            quotas[flavor] = FlavorQuota(
                guaranteed,
                guaranteed + draw(st.sampled_from([0, 4, 8, 16])),
                credit_rate=draw(st.sampled_from([1.0, 1.0, 0.5, 4.0])),
            )
        result.append(
            Project(
                name=f"p{i}",
                sector=draw(st.sampled_from(["s1", "s2"])),
                quotas=quotas,
                credits_left=draw(st.sampled_from([None, None, None, 50.0, 5.0, 0.0])),
                share=draw(st.sampled_from([None, None, 1.0, 3.0])),
                usage_gpu_s=draw(st.sampled_from([0.0, 0.0, 3600.0, 1e6, 1e8])),
                usage_at=draw(st.sampled_from([0.0, NOW])),
            )
        )
    return result


@st.composite
def running_jobs(
    draw: st.DrawFn,
    pool: list[Node],
    owners: list[Project],
    max_running: int = 8,
    stopping: bool = True,
) -> list[Running]:
    used = {n.name: 0 for n in pool}
    held: dict[tuple[str, str], int] = {}
    result = []
    for i in range(draw(st.integers(max_running // 2, max_running))):
        owner = draw(st.sampled_from(owners))
        flavor = draw(st.sampled_from(sorted({n.flavor for n in pool})))
        room = [n for n in pool if n.flavor == flavor and used[n.name] < n.gpus]
        if not room:
            continue
        chosen = draw(
            st.lists(st.sampled_from(room), min_size=1, max_size=2, unique_by=lambda n: n.name)
        )
        pieces = tuple(
            (
                n.name,
                n.gpus - used[n.name]
                if draw(st.booleans())
                else draw(st.integers(1, n.gpus - used[n.name])),
            )
            for n in chosen
        )
        gpus = sum(g for _, g in pieces)
        quota = owner.quotas.get(flavor)
        if quota is None or held.get((owner.name, flavor), 0) + gpus > quota.limit:
            continue  # the snapshot never has a project over its limit
        for name, g in pieces:
            used[name] += g
        held[(owner.name, flavor)] = held.get((owner.name, flavor), 0) + gpus
        start = draw(st.sampled_from([0.0, 100.0, 500.0, 900.0, NOW]))
        result.append(
            Running(
                job_id=f"r{i}",
                project=owner.name,
                flavor=flavor,
                pieces=pieces,
                start=start,
                max_runtime=draw(st.sampled_from([60.0, 600.0, 3600.0, 36000.0])),
                priority=draw(st.integers(0, 2)),
                stopping_at=(NOW + 60.0 if stopping and draw(st.integers(0, 7)) == 0 else None),
            )
        )
    return result


@st.composite
def pending_jobs(
    draw: st.DrawFn,
    flavors: list[str],
    owners: list[Project],
    max_pending: int = 8,
    odd: bool = True,
) -> list[Job]:
    """Pending jobs; `odd` adds zero-GPU jobs, unknown flavors and projects, ANY_FLAVOR."""
    names = [p.name for p in owners] * 4 + (["ghost"] if odd else [])
    flavor_choices = list(flavors) * 6 + ([ANY_FLAVOR, ANY_FLAVOR, "TPU"] if odd else [])
    sizes = st.one_of(st.sampled_from([1, 2, 4, 8]), st.integers(0 if odd else 1, 12))
    result = []
    for i in range(draw(st.integers(1, max_pending))):
        gpus = draw(sizes)
        result.append(
            Job(
                id=f"j{i}",
                project=draw(st.sampled_from(names)),
                gpus=gpus,
                flavor=draw(st.sampled_from(flavor_choices)),
                submit_time=draw(st.sampled_from([0.0, 10.0, 20.0, 500.0, NOW])),
                max_runtime=draw(st.sampled_from([30.0, 600.0, 3600.0, 36000.0])),
                priority=draw(st.integers(0, 2)),
                nodes=draw(st.sampled_from([None, None, None, 1, 2, 3])),
            )
        )
    return result


@st.composite
def snapshots(draw: st.DrawFn, odd: bool = True, stopping: bool = True) -> Snapshot:
    pool = draw(nodes())
    flavors = sorted({n.flavor for n in pool})
    owners = draw(projects(flavors))
    sectors = [Sector("s1", draw(st.sampled_from([1.0, 2.0])))]
    if draw(st.booleans()):
        sectors.append(Sector("s2", 1.0))
    return Snapshot(
        nodes=tuple(pool),
        sectors=tuple(sectors),
        projects=tuple(owners),
        pending=tuple(draw(pending_jobs(flavors, owners, odd=odd))),
        running=tuple(draw(running_jobs(pool, owners, stopping=stopping))),
    )
