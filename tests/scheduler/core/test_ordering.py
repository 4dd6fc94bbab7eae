"""Ordering: in-quota first, then fair share (sector, then project), priority, age."""

from __future__ import annotations

import pytest

from scheduler.core import Ordering, Policy, Project, Sector
from scheduler.core.fairshare import DecayedUsage, decay, normalized_shares

from .builders import (
    admitted_ids,
    job,
    node,
    plan_of,
    project,
    running,
    sector,
)

DAY = 86400.0


def borrower(name: str, sector_name: str = "research"):
    """A project with no guarantee that may borrow a whole 16-GPU pool."""
    return project(name).sector(sector_name).quota("H100", guaranteed=0, limit=16)


# -- decay and DecayedUsage ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "since", "now", "half_life", "expected"),
    [
        pytest.param(100.0, 0.0, 10.0, 10.0, 50.0, id="one-half-life"),
        pytest.param(100.0, 0.0, 30.0, 10.0, 12.5, id="three-half-lives"),
        pytest.param(100.0, 5.0, 5.0, 10.0, 100.0, id="no-time-passed"),
        pytest.param(100.0, 10.0, 5.0, 10.0, 100.0, id="now-before-since"),
        pytest.param(100.0, 0.0, 1e9, 0.0, 100.0, id="zero-half-life-never-decays"),
    ],
)
def test_decay(amount, since, now, half_life, expected):
    assert decay(amount, since, now, half_life) == pytest.approx(expected)


def test_decayed_usage_halves_every_half_life():
    usage = DecayedUsage(half_life=100.0, value=800.0, at=0.0)
    assert [usage.value(t) for t in (0, 100, 200, 300)] == pytest.approx([800, 400, 200, 100])


def test_decayed_usage_add_decays_what_was_there_first():
    usage = DecayedUsage(half_life=100.0)
    usage.add(400.0, at=0.0)
    usage.add(100.0, at=100.0)
    assert usage.at == 100.0
    assert usage.value(100.0) == pytest.approx(300.0)
    assert usage.value(200.0) == pytest.approx(150.0)


def test_decayed_usage_late_record_is_decayed_to_the_reference_time():
    usage = DecayedUsage(half_life=100.0, value=0.0, at=200.0)
    usage.add(400.0, at=100.0)  # recorded late: one half-life before the reference
    assert usage.at == 200.0
    assert usage.value(200.0) == pytest.approx(200.0)


def test_decayed_usage_order_of_records_does_not_matter():
    a, b = DecayedUsage(50.0), DecayedUsage(50.0)
    a.add(10.0, 0.0)
    a.add(20.0, 70.0)
    b.add(20.0, 70.0)
    b.add(10.0, 0.0)
    assert a.value(90.0) == pytest.approx(b.value(90.0))


# -- normalized_shares --------------------------------------------------------------------


def test_sector_weights_are_normalized():
    sectors, _ = normalized_shares([Sector("s1", 3.0), Sector("s2", 1.0)], [])
    assert sectors == pytest.approx({"s1": 0.75, "s2": 0.25})


def test_project_without_share_weighs_its_total_guarantee():
    projects = [
        project("a").sector("s").quota("H100", 8).quota("A100", 8).build(),
        project("b").sector("s").quota("H100", 16).build(),
        project("c").sector("s").share(32.0).build(),
    ]
    _, shares = normalized_shares([Sector("s")], projects)
    assert shares == pytest.approx({"a": 0.25, "b": 0.25, "c": 0.5})


def test_shares_are_within_the_sector():
    projects = [
        project("a").sector("s1").share(1.0).build(),
        project("b").sector("s2").share(3.0).build(),
        project("c").sector("s2").share(1.0).build(),
    ]
    _, shares = normalized_shares([Sector("s1"), Sector("s2")], projects)
    assert shares == pytest.approx({"a": 1.0, "b": 0.75, "c": 0.25})


def test_zero_weights_get_a_tiny_but_positive_share():
    projects = [
        project("a").sector("s1").share(0.0).build(),
        project("b").sector("s1").share(1.0).build(),
    ]
    sectors, shares = normalized_shares([Sector("s1"), Sector("s0", 0.0)], projects)
    assert 0 < sectors["s0"] < 1e-6
    assert 0 < shares["a"] < 1e-6
    assert shares["b"] == pytest.approx(1.0)


def test_sector_only_named_by_a_project_weighs_one():
    projects: list[Project] = [project("a").sector("new").build()]
    sectors, shares = normalized_shares([Sector("s1", 1.0)], projects)
    assert sectors == pytest.approx({"s1": 0.5, "new": 0.5})
    assert shares == {"a": 1.0}  # a sector whose projects all weigh 0 shares equally


# -- ordering through plan(): one 8-GPU node, two 8-GPU jobs, who goes first? ---------------


ONE_NODE = [node("n1")]


@pytest.mark.parametrize(
    ("projects", "jobs", "first"),
    [
        pytest.param(
            [borrower("a").usage(100 * DAY), borrower("b")],
            [
                job("a1").project("a").gpus(8).submitted(0),
                job("b1").project("b").gpus(8).submitted(9),
            ],
            "b1",
            id="less-recent-usage-first",
        ),
        pytest.param(
            [borrower("a"), borrower("b").usage(100 * DAY)],
            [
                job("a1").project("a").gpus(8).submitted(9),
                job("b1").project("b").gpus(8).submitted(0),
            ],
            "a1",
            id="less-recent-usage-first-whatever-the-age",
        ),
        pytest.param(
            [borrower("a").usage(1e9, at=-70 * DAY), borrower("b").usage(1e6, at=0)],
            [
                job("a1").project("a").gpus(8).submitted(0),
                job("b1").project("b").gpus(8).submitted(0),
            ],
            "a1",
            id="old-usage-has-decayed",
        ),
        pytest.param(
            [
                borrower("a", "s1"),
                borrower("c", "s1").usage(100 * DAY),
                borrower("b", "s2").usage(1 * DAY),
            ],
            [job("a1").project("a").gpus(8), job("b1").project("b").gpus(8)],
            "b1",
            id="sectors-are-ranked-before-projects",
        ),
        pytest.param(
            [
                project("a").sector("s1").quota("H100", 8, 16).usage(100 * DAY),
                borrower("b", "s2"),
            ],
            [job("a1").project("a").gpus(8).submitted(5), job("b1").project("b").gpus(8)],
            "a1",
            id="in-quota-before-borrowing-despite-usage",
        ),
        pytest.param(
            [borrower("a"), borrower("b")],
            [
                job("a1").project("a").gpus(8).submitted(0),
                job("b1").project("b").gpus(8).submitted(5).priority(1),
            ],
            "b1",
            id="equal-share-then-priority",
        ),
        pytest.param(
            [borrower("a"), borrower("b")],
            [
                job("a1").project("a").gpus(8).submitted(5),
                job("b1").project("b").gpus(8).submitted(0),
            ],
            "b1",
            id="equal-share-and-priority-then-age",
        ),
        pytest.param(
            [borrower("a"), borrower("b")],
            [job("x").project("b").gpus(8), job("w").project("a").gpus(8)],
            "w",
            id="all-equal-then-job-id",
        ),
        pytest.param(
            [borrower("a")],
            [
                job("old").project("a").gpus(8).submitted(0),
                job("urgent").project("a").gpus(8).submitted(50).priority(3),
            ],
            "urgent",
            id="within-a-project-priority-first",
        ),
        pytest.param(
            [borrower("a")],
            [job("late").project("a").gpus(8).submitted(50), job("early").project("a").gpus(8)],
            "early",
            id="within-a-project-then-age",
        ),
    ],
)
def test_who_goes_first(projects, jobs, first):
    result = plan_of(nodes=ONE_NODE, projects=projects, pending=jobs)
    assert admitted_ids(result) == [first]


def test_sector_weight_favours_the_heavier_sector():
    projects = [borrower("a", "big").usage(10 * DAY), borrower("b", "small").usage(10 * DAY)]
    sectors = [sector("big").weight(3.0), sector("small").weight(1.0)]
    jobs = [job("b1").project("b").gpus(8), job("a1").project("a").gpus(8).submitted(9)]
    result = plan_of(nodes=ONE_NODE, projects=projects, sectors=sectors, pending=jobs)
    assert admitted_ids(result) == ["a1"]


def test_project_share_favours_the_larger_share():
    projects = [borrower("a").share(3.0).usage(10 * DAY), borrower("b").share(1.0).usage(10 * DAY)]
    jobs = [job("b1").project("b").gpus(8), job("a1").project("a").gpus(8).submitted(9)]
    result = plan_of(nodes=ONE_NODE, projects=projects, pending=jobs)
    assert admitted_ids(result) == ["a1"]


def test_gpus_held_now_count_as_usage():
    result = plan_of(
        nodes=[node("n1"), node("n2")],
        projects=[borrower("a"), borrower("b")],
        running=[running("ra").project("a").on("n1", 4)],
        pending=[job("a1").project("a").gpus(8), job("b1").project("b").gpus(8).submitted(9)],
    )
    assert admitted_ids(result) == ["b1"]


def test_fair_share_is_recomputed_after_every_admission():
    # Equal standing: a goes first (age), then b (a now holds GPUs), then a again.
    result = plan_of(
        nodes=[node("n1"), node("n2")],
        projects=[borrower("a"), borrower("b")],
        pending=[
            job("a1").project("a").gpus(4).submitted(0),
            job("a2").project("a").gpus(4).submitted(1),
            job("a3").project("a").gpus(4).submitted(2),
            job("b1").project("b").gpus(4).submitted(5),
        ],
    )
    assert admitted_ids(result) == ["a1", "b1", "a2", "a3"]


def test_borrowing_jobs_follow_in_quota_jobs_of_every_project():
    # a is in quota for its first 4 GPUs only; b is in quota for 4 as well.
    result = plan_of(
        nodes=[node("n1")],
        projects=[
            project("a").quota("H100", 4, 8),
            project("b").quota("H100", 4, 8).usage(100 * DAY),
        ],
        pending=[
            job("a1").project("a").gpus(4).submitted(0),
            job("a2").project("a").gpus(4).submitted(1),
            job("b1").project("b").gpus(4).submitted(2),
        ],
    )
    assert admitted_ids(result) == ["a1", "b1"]


def test_arrival_ordering_ignores_share_and_priority():
    result = plan_of(
        nodes=ONE_NODE,
        projects=[borrower("a").usage(100 * DAY), borrower("b")],
        pending=[
            job("a1").project("a").gpus(8).submitted(0),
            job("b1").project("b").gpus(8).submitted(1).priority(9),
        ],
        policy=Policy.gpupool(ordering=Ordering.ARRIVAL),
    )
    assert admitted_ids(result) == ["a1"]


def test_half_life_of_the_policy_is_used():
    # With a one-second half-life, usage recorded a day ago is gone; with the default it counts.
    projects = [borrower("a").usage(1e6, at=0), borrower("b").usage(1e3, at=DAY)]
    jobs = [job("a1").project("a").gpus(8), job("b1").project("b").gpus(8).submitted(9)]
    fast = plan_of(
        nodes=ONE_NODE,
        projects=projects,
        pending=jobs,
        now=DAY,
        policy=Policy.gpupool(half_life_s=1.0),
    )
    slow = plan_of(nodes=ONE_NODE, projects=projects, pending=jobs, now=DAY)
    assert admitted_ids(fast) == ["a1"]
    assert admitted_ids(slow) == ["b1"]
