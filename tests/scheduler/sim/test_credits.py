"""Credit budgets in the simulator: charged as jobs run, committed at admission by the core,
and the jobs they delayed counted in the report."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.core import FlavorQuota, Node, Policy, Project, Sector
from scheduler.sim.cluster import Cluster, load_cluster
from scheduler.sim.engine import Simulation
from scheduler.sim.errors import InputError
from scheduler.sim.trace import TraceJob
from tests.conftest import SMALL_POOL

HOUR = 3600.0


def pool(credits: float | None, rate: float = 1.0) -> Cluster:
    """Two 8-GPU nodes; project a may use all 16 GPUs, with this budget."""
    return Cluster(
        nodes=(Node("n0", "H100", 8), Node("n1", "H100", 8)),
        sectors=(Sector("research"),),
        projects=(Project("a", "research", {"H100": FlavorQuota(16, 16, rate)}, credits),),
    )


def whole_node_job(i: int, duration: float, limit: float = HOUR) -> TraceJob:
    return TraceJob(f"j{i}", 0.0, "a", 8, "H100", duration, limit, line=i + 2)


@pytest.mark.parametrize(
    ("credits", "second_start", "delayed"),
    [
        pytest.param(None, 0.0, 0, id="no-budget-both-start-at-once"),
        pytest.param(16.0, 0.0, 0, id="enough-for-both-limits"),
        # 12 credits: j0 commits 8 (8 GPUs x 1 h); j1 needs 8 more and waits until j0 ends at
        # 30 min, charged 4, its commitment released: 8 left.
        pytest.param(12.0, HOUR / 2, 1, id="waits-until-the-first-is-charged"),
    ],
)
def test_a_budget_delays_what_it_cannot_pay_for(credits, second_start, delayed) -> None:
    jobs = [whole_node_job(0, HOUR / 2), whole_node_job(1, HOUR / 2)]
    sim = Simulation(pool(credits), jobs, Policy.gpupool())
    report = sim.run()
    assert report.completed == 2
    assert sim.records["j0"].first_start == 0.0
    assert sim.records["j1"].first_start == second_start
    assert report.credit_delayed_jobs == delayed


def test_a_budget_too_small_for_any_job_leaves_them_waiting_and_counted() -> None:
    jobs = [whole_node_job(0, 60.0), whole_node_job(1, 60.0)]  # each commits 8
    report = Simulation(pool(7.0), jobs, Policy.gpupool()).run()
    assert report.completed == 0
    assert report.credit_delayed_jobs == 2


@pytest.mark.parametrize(("rate", "second_start"), [(1.0, 0.0), (2.0, HOUR / 2)])
def test_the_rate_weighs_what_is_charged_and_committed(rate, second_start) -> None:
    # At rate 2, 24 credits commit j0 (16) and not j1 (16 more) until j0 is charged 8.
    jobs = [whole_node_job(0, HOUR / 2), whole_node_job(1, HOUR / 2)]
    sim = Simulation(pool(24.0, rate=rate), jobs, Policy.gpupool())
    sim.run()
    assert sim.records["j1"].first_start == second_start


def test_the_pool_file_gives_budgets_and_rates(tmp_path: Path) -> None:
    text = SMALL_POOL.replace(
        '[[flavors]]\nname = "H100"', '[[flavors]]\nname = "H100"\ncredit_rate = 2.5'
    )
    text = text.replace(
        'name = "b"\nsector = "research"\nquotas = { H100 = { guaranteed = 8, limit = 16 } }',
        'name = "b"\nsector = "research"\ncredits = 5000\n'
        "quotas = { H100 = { guaranteed = 8, limit = 16, credit_rate = 0.5 } }",
    )
    path = tmp_path / "pool.toml"
    path.write_text(text)
    a, b = load_cluster(path).projects
    assert a.credits_left is None and a.quotas["H100"].credit_rate == 2.5
    assert b.credits_left == 5000 and b.quotas["H100"].credit_rate == 0.5


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'name = "b"\nsector = "research"\n',
            'name = "b"\nsector = "research"\ncredits = nan\n',
            "field 'projects[1].credits': must be a number >= 0, got nan",
        ),
        (
            'name = "b"\nsector = "research"\n',
            'name = "b"\nsector = "research"\ncredits = -5\n',
            "field 'projects[1].credits': must be a number >= 0, got -5",
        ),
        (
            "guaranteed = 8, limit = 16 } }\n\n[[projects]]",
            "guaranteed = 8, limit = 16, credit_rate = inf } }\n\n[[projects]]",
            "field 'projects[0].quotas.H100.credit_rate': must be a number >= 0, got inf",
        ),
    ],
)
def test_a_bad_budget_or_rate_names_the_field(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    assert old in SMALL_POOL
    path = tmp_path / "pool.toml"
    path.write_text(SMALL_POOL.replace(old, new, 1))
    with pytest.raises(InputError) as caught:
        load_cluster(path)
    assert message in str(caught.value)


def test_a_job_waiting_for_credits_is_not_counted_as_a_guarantee_violation() -> None:
    # a is owed the node but cannot pay for its job (8 credits); b borrows the node meanwhile.
    cluster = Cluster(
        nodes=(Node("n0", "H100", 8),),
        sectors=(Sector("research"),),
        projects=(
            Project("a", "research", {"H100": FlavorQuota(8, 8)}, credits_left=1.0),
            Project("b", "research", {"H100": FlavorQuota(0, 8)}),
        ),
    )
    jobs = [
        TraceJob("b1", 0.0, "b", 8, "H100", 1000.0, HOUR, line=2),
        TraceJob("a1", 0.0, "a", 8, "H100", 60.0, HOUR, line=3),
    ]
    report = Simulation(cluster, jobs, Policy.gpupool()).run()
    assert report.preemptions == 0 and report.credit_delayed_jobs == 1
    assert report.guarantee_violation_s == 0.0
