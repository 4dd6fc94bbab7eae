"""The Philly trace, read from ../shared/traces (never copied here): skipped when absent."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from scheduler.core import Policy
from scheduler.sim.cluster import load_cluster
from scheduler.sim.engine import Simulation, check_trace
from scheduler.sim.trace import TraceJob, load_trace

REPO = Path(__file__).resolve().parents[3]
PHILLY = REPO.parent / "shared" / "traces" / "philly" / "philly.csv"

pytestmark = [
    pytest.mark.trace,
    pytest.mark.skipif(not PHILLY.exists(), reason=f"the Philly trace is not at {PHILLY}"),
]


@pytest.fixture(scope="module")
def philly() -> list[TraceJob]:
    return load_trace(PHILLY, default_flavor="philly-gpu")


def test_the_whole_trace_loads_sorted(philly: list[TraceJob]) -> None:
    assert len(philly) == 82_247
    assert philly[0].submit_s == 0.0
    assert all(a.submit_s <= b.submit_s for a, b in itertools.pairwise(philly))
    assert len({j.project for j in philly}) == 15
    assert max(j.gpus for j in philly) == 128


def test_the_philly_pool_accepts_every_job(philly: list[TraceJob]) -> None:
    cluster = load_cluster(REPO / "configs" / "philly.toml")
    for name in ("gpupool", "static", "fifo"):
        check_trace(cluster, philly, str(PHILLY), Policy.named(name))


@pytest.mark.parametrize("policy", ["gpupool", "static", "fifo"])
def test_a_slice_replays_to_the_end(philly: list[TraceJob], policy: str) -> None:
    cluster = load_cluster(REPO / "configs" / "philly.toml")
    report = Simulation(cluster, philly[:3000], Policy.named(policy)).run()
    assert report.completed == 3000 and report.rejected == 0
    assert 0 < report.utilization <= 1
    if policy == "static":
        assert report.preemptions == 0 and report.guarantee_violation_s == 0
