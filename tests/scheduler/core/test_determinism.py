"""Same snapshot, same plan, in any process: nothing may depend on string hashing order."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

DIGEST = """
import hashlib
from scheduler.core import Policy, SchedulerState, plan, run_cycle
from scheduler.sim.synthetic import busy_snapshot

digest = hashlib.sha256()
for seed in range(3):
    snap = busy_snapshot(1000, 8000, 120, seed=seed)
    first = plan(snap, Policy.gpupool(), 1e6)
    digest.update(repr((first.admissions, first.preemptions, first.reservations)).encode())
    digest.update(repr(sorted((k, str(v)) for k, v in first.job_reasons.items())).encode())
    state = SchedulerState(snap, Policy.gpupool())
    run_cycle(state, 1e6)
    for job_id in sorted(state.running)[:5]:
        state.finish(job_id)
    later = run_cycle(state, 1e6 + 5)
    digest.update(repr((later.admissions, later.preemptions, later.reservations)).encode())
print(digest.hexdigest())
"""


def digest_with_hash_seed(seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run(
        [sys.executable, "-c", DIGEST],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


def test_plans_do_not_depend_on_the_hash_seed():
    assert digest_with_hash_seed("1") == digest_with_hash_seed("2")
