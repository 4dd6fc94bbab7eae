"""Timing the allocation core on synthetic snapshots (`gpupool bench cycle`)."""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any

from scheduler.core import Policy, SchedulerState, run_cycle
from scheduler.sim.synthetic import busy_snapshot


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
