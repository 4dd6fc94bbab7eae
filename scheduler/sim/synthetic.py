"""Synthetic pools and workloads, made from a seed: for benchmarks and the demo.

Nothing here reads a trace: the project ships no trace data of its own.
"""

from __future__ import annotations

import random

from scheduler.core import FlavorQuota, Job, Node, Project, Running, Sector, Snapshot
from scheduler.sim.cluster import Cluster
from scheduler.sim.trace import TraceJob

FLAVORS = ("H100-80GB", "A100-40GB")
SECTORS = (Sector("industry", 1.0), Sector("academia", 1.5), Sector("research", 1.5))
JOB_SIZES = (1, 1, 1, 1, 2, 2, 4, 8, 8, 16, 32)


def synthetic_pool(nodes: int, projects: int, seed: int = 1) -> Cluster:
    """`nodes` 8-GPU nodes in two flavors and racks of 32; guarantees sum to capacity."""
    rng = random.Random(seed)
    pool = tuple(
        Node(f"gpu-{i:05d}", FLAVORS[i % 2], 8, f"rack-{i // 64:04d}") for i in range(nodes)
    )
    weights = [rng.uniform(0.2, 1.0) for _ in range(projects)]
    total = sum(weights)
    made = []
    remaining = {f: sum(n.gpus for n in pool if n.flavor == f) for f in FLAVORS}
    for i, w in enumerate(weights):
        quotas = {}
        for flavor in FLAVORS:
            capacity = sum(n.gpus for n in pool if n.flavor == flavor)
            guaranteed = int(capacity * w / total)
            if i == projects - 1:  # the last project takes the rounding rest
                guaranteed = remaining[flavor]
            remaining[flavor] -= guaranteed
            quotas[flavor] = FlavorQuota(guaranteed, max(2 * guaranteed, guaranteed + 32))
        made.append(Project(f"proj-{i:04d}", SECTORS[i % 3].name, quotas))
    return Cluster(nodes=pool, sectors=SECTORS, projects=tuple(made))


def busy_snapshot(nodes: int, pending: int, projects: int, seed: int = 1) -> Snapshot:
    """A pool filled by running jobs (some borrowing), with `pending` jobs waiting."""
    rng = random.Random(seed)
    cluster = synthetic_pool(nodes, projects, seed)
    names = [p.name for p in cluster.projects]
    now = 1_000_000.0
    running: list[Running] = []
    for node in cluster.nodes:
        free = node.gpus - (1 if rng.random() < 0.05 else 0)  # a few single free GPUs
        while free > 0:
            size = min(rng.choice((1, 1, 2, 4, 8)), free)
            free -= size
            running.append(
                Running(
                    job_id=f"r{len(running)}",
                    project=rng.choice(names),
                    flavor=node.flavor,
                    pieces=((node.name, size),),
                    start=now - rng.uniform(0, 86_400),
                    max_runtime=rng.choice((3_600.0, 14_400.0, 86_400.0, 172_800.0)),
                )
            )
    waiting = tuple(
        Job(
            id=f"p{i}",
            project=rng.choice(names),
            gpus=rng.choice(JOB_SIZES),
            flavor=rng.choice(FLAVORS),
            submit_time=now - rng.uniform(0, 86_400),
            max_runtime=rng.choice((600.0, 3_600.0, 14_400.0, 86_400.0)),
            priority=rng.choice((0, 0, 0, 1)),
        )
        for i in range(pending)
    )
    return Snapshot(cluster.nodes, cluster.sectors, cluster.projects, waiting, tuple(running))


def demo_workload(cluster: Cluster, jobs: int, seed: int = 7) -> list[TraceJob]:
    """A day of bursty submissions sized to load the pool to about 80%."""
    rng = random.Random(seed)
    names = [p.name for p in cluster.projects]
    flavors = cluster.flavors
    mean_gpus = sum(JOB_SIZES) / len(JOB_SIZES)
    mean_duration = 3_000.0
    span = jobs * mean_gpus * mean_duration / (0.8 * cluster.gpus)
    workload = []
    for i in range(jobs):
        flavor = rng.choice(flavors)
        largest = max(n.gpus for n in cluster.nodes if n.flavor == flavor)
        gpus = min(rng.choice(JOB_SIZES), largest * 2)
        workload.append(
            TraceJob(
                id=f"d{i}",
                submit_s=round(rng.uniform(0, span), 1),
                project=rng.choice(names),
                gpus=gpus,
                flavor=flavor,
                duration_s=round(rng.expovariate(1 / mean_duration) + 30, 1),
                max_runtime_s=4 * 3600.0,
            )
        )
    workload.sort(key=lambda j: (j.submit_s, j.id))
    return workload
