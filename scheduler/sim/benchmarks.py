"""Timing the allocation core on synthetic snapshots (`gpupool bench cycle`), and every
workload family replayed under every policy (`gpupool bench families`)."""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from scheduler.core import Policy, SchedulerState, run_cycle
from scheduler.sim.cluster import load_cluster
from scheduler.sim.engine import Simulation
from scheduler.sim.synthetic import (
    BENCH_LOADS,
    FAMILIES,
    busy_snapshot,
    family,
    generate_workload,
)


def bench_cycle(nodes: int, pending: int, projects: int, repeats: int = 20) -> dict[str, Any]:
    """Time one full cycle on a snapshot, then cycles right after a single job finished.

    load_snapshot_ms: building the in-memory state from the snapshot (once, at start-up).
    full_cycle_ms: the first full cycle over it, which walks every queue (the heaviest:
    it also starts every reclaim). plan_from_snapshot_ms: both, i.e. the pure
    `plan(snapshot, policy, now)`. incremental_cycle_ms: the median over `repeats` of one
    job finishing and the cycle that follows, on the state kept between cycles.
    """
    snapshot = busy_snapshot(nodes, pending, projects)
    policy = Policy.gpupool()
    now = 1_000_000.0

    started = time.perf_counter()
    state = SchedulerState(snapshot, policy)
    built = time.perf_counter()
    # A long-running scheduler keeps this state for its lifetime: move it out of the
    # cyclic collector's way (gc.freeze), as the service does after loading it.
    gc.collect()
    gc.freeze()
    built_and_frozen = time.perf_counter()
    first = run_cycle(state, now)
    done = time.perf_counter()

    samples = []
    ending = sorted(
        (r for r in state.running.values() if r.stopping_at is None),
        key=lambda r: (r.expected_end, r.job_id),
    )
    for i in range(repeats):
        now += 1.0
        tick = time.perf_counter()
        state.finish(ending[i].job_id)
        run_cycle(state, now)
        samples.append((time.perf_counter() - tick) * 1000.0)
    samples.sort()
    gc.unfreeze()
    return {
        "nodes": nodes,
        "gpus": sum(n.gpus for n in snapshot.nodes),
        "pending": pending,
        "projects": projects,
        "running": len(snapshot.running),
        "full_cycle_ms": round((done - built_and_frozen) * 1000.0, 1),
        "load_snapshot_ms": round((built - started) * 1000.0, 1),
        "plan_from_snapshot_ms": round((built - started + done - built_and_frozen) * 1000.0, 1),
        "incremental_cycle_ms": round(statistics.median(samples), 2),
        "incremental_p95_ms": round(samples[min(len(samples) - 1, int(0.95 * len(samples)))], 2),
        "admitted_first_cycle": len(first.admissions),
        "preempted_first_cycle": len(first.preemptions),
    }


def calibration_s() -> float:
    """This machine's speed, for comparing figures across machines: the best of three runs
    of 10 million Python additions, in seconds."""
    best = math.inf
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(10_000_000):
            total += i
        best = min(best, time.perf_counter() - started)
    return round(best, 3)


FAMILY_POLICIES = ("gpupool", "fifo", "static")


def bench_families(
    families: Sequence[str] = tuple(FAMILIES),
    loads: Sequence[float] = BENCH_LOADS,
    policies: Sequence[str] = FAMILY_POLICIES,
    seed: int = 1,
    jobs: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every workload family at every load under every policy, each on its family's pool.

    Returns {"seed", "calib_s", "wall_s", "rows"}: one row per family and load, with each
    policy's figures (mean and p99 wait, guarantee violation, lost GPU-hours, ...) under
    its name. The same seed and load give every policy the same jobs.
    """
    started = time.perf_counter()
    rows = []
    for name in families:
        pool = load_cluster(family(name).pool_path)
        for load in loads:
            workload = generate_workload(name, pool, load, seed, jobs)
            row: dict[str, Any] = {
                "workload": name,
                "load": load,
                "pool": family(name).pool,
                "jobs": len(workload),
                "window_days": round(workload[-1].submit_s / 86_400, 2),
            }
            for policy in policies:
                if progress is not None:
                    progress(f"{name} at load {load} under {policy}")
                report = Simulation(pool, workload, Policy.named(policy)).run()
                row[policy] = {key: getattr(report, key) for key in FAMILY_FIGURES}
            rows.append(row)
    return {
        "seed": seed,
        "calib_s": calibration_s(),
        "wall_s": round(time.perf_counter() - started, 1),
        "rows": rows,
    }


FAMILY_FIGURES = (
    "mean_wait_s",
    "p99_wait_s",
    "guarantee_violation_s",
    "guarantee_fragmentation_s",
    "lost_gpu_h",
    "preemptions",
    "utilization",
    "wall_s",
)

FAMILY_COLUMNS = (
    ("mean_wait_s", "mean wait s", "{:,.0f}"),
    ("p99_wait_s", "p99 wait s", "{:,.0f}"),
    ("guarantee_violation_s", "violation s", "{:,.0f}"),
    ("lost_gpu_h", "lost GPU-h", "{:,.0f}"),
)


def family_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The families' figures as one table: a row per workload and load, columns per policy
    (mean and p99 wait, guarantee violation, lost GPU-hours)."""
    policies = [p for p in FAMILY_POLICIES if result["rows"] and p in result["rows"][0]]
    header = ["workload", "load", "jobs"] + [
        f"{policy} {title}" for policy in policies for _, title, _ in FAMILY_COLUMNS
    ]
    body = [
        [row["workload"], f"{row['load']:g}", f"{row['jobs']:,}"]
        + [fmt.format(row[policy][key]) for policy in policies for key, _, fmt in FAMILY_COLUMNS]
        for row in result["rows"]
    ]
    return header, body


def family_markdown(result: dict[str, Any]) -> str:
    header, body = family_table(result)
    lines = ["| " + " | ".join(header) + " |", "|---|---:|" + "---:|" * (len(header) - 2)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)
