"""The named policies: gpupool (the default), static (Philly's quotas) and fifo (one queue)."""

from __future__ import annotations

import pytest

from scheduler.core import Ordering, Policy, ReasonCode

from .builders import (
    admitted_ids,
    job,
    node,
    plan_of,
    project,
    reason_code,
    running,
)

POOL = [node("n1"), node("n2")]  # 16 idle H100 GPUs


@pytest.mark.parametrize(
    ("name", "ordering", "quotas", "borrowing", "reclaim", "backfill"),
    [
        pytest.param("gpupool", Ordering.FAIR_SHARE, True, True, True, True, id="gpupool"),
        pytest.param("static", Ordering.ARRIVAL, True, False, False, False, id="static"),
        pytest.param("fifo", Ordering.ARRIVAL, False, True, False, False, id="fifo"),
    ],
)
def test_named_policies(name, ordering, quotas, borrowing, reclaim, backfill):
    policy = Policy.named(name)
    assert policy.name == name
    assert (
        policy.ordering,
        policy.enforce_quotas,
        policy.borrowing,
        policy.reclaim,
        policy.backfill,
    ) == (ordering, quotas, borrowing, reclaim, backfill)


def test_unknown_policy_name():
    with pytest.raises(ValueError, match="gpupool, static, fifo"):
        Policy.named("lottery")


def test_overrides_keep_the_rest():
    policy = Policy.static(grace_period_s=5)
    assert (policy.name, policy.grace_period_s, policy.borrowing) == ("static", 5, False)


# -- static -------------------------------------------------------------------------------


def test_static_confines_a_project_to_its_guarantee_even_when_gpus_are_idle():
    first, second = job("a").gpus(4).submitted(0), job("b").gpus(4).submitted(1)
    result = plan_of(
        nodes=POOL,
        projects=[project("p").quota("H100", guaranteed=4, limit=16)],
        pending=[first, second],
        policy=Policy.static(),
    )
    assert admitted_ids(result) == ["a"]
    assert result.admissions[0].borrowed is False
    reason = result.reason_for(second.build())
    assert reason.code is ReasonCode.OVER_LIMIT
    assert "guarantee of 4" in reason.message


def test_static_counts_running_jobs_against_the_guarantee():
    result = plan_of(
        nodes=POOL,
        projects=[project("p").quota("H100", guaranteed=4, limit=16)],
        running=[running("r").on("n1", 3)],
        pending=[job("j").gpus(2)],
        policy=Policy.static(),
    )
    assert admitted_ids(result) == []


def test_static_rejects_jobs_larger_than_the_guarantee():
    result = plan_of(
        nodes=POOL,
        projects=[project("p").quota("H100", guaranteed=4, limit=16)],
        pending=[job("j").gpus(8)],
        policy=Policy.static(),
    )
    assert result.rejections["j"].code is ReasonCode.NEVER_FITS
    assert "guarantee of 4 H100" in result.rejections["j"].message


@pytest.mark.parametrize(
    ("policy", "first"),
    [
        pytest.param(Policy.gpupool(), "b1", id="gpupool-fair-share"),
        pytest.param(Policy.static(), "a1", id="static-arrival"),
    ],
)
def test_static_goes_in_arrival_order(policy, first):
    result = plan_of(
        nodes=[node("n1")],
        projects=[
            project("a").quota("H100", 8, 8).usage(1e8),
            project("b").quota("H100", 8, 8),
        ],
        pending=[
            job("a1").project("a").gpus(8).submitted(0),
            job("b1").project("b").gpus(8).submitted(5).priority(1),
        ],
        policy=policy,
    )
    assert admitted_ids(result) == [first]


def test_static_neither_reclaims_nor_reserves():
    # An overcommitted guarantee: b holds a's share within its own guarantee.
    result = plan_of(
        nodes=[node("n1")],
        projects=[project("a").quota("H100", 8, 8), project("b").quota("H100", 8, 8)],
        running=[running("rb").project("b").on("n1", 8)],
        pending=[job("a1").project("a").gpus(8)],
        policy=Policy.static(),
    )
    assert (result.preemptions, result.reservations) == ([], [])
    assert reason_code(result, job("a1").project("a").gpus(8)) is ReasonCode.CAPACITY


# -- fifo ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "owner",
    [
        pytest.param(project("p"), id="no-quota-at-all"),
        pytest.param(project("p").quota("H100", 0, 2), id="above-its-limit"),
        pytest.param(project("p").quota("H100", 8, 16).credits(0), id="no-credits"),
        pytest.param(project("other"), id="unknown-project"),
    ],
)
def test_fifo_ignores_quotas(owner):
    result = plan_of(
        nodes=POOL, projects=[owner], pending=[job("j").gpus(12)], policy=Policy.fifo()
    )
    assert admitted_ids(result) == ["j"]
    assert result.admissions[0].borrowed is False


def test_fifo_goes_in_arrival_order_whatever_the_priority_and_usage():
    result = plan_of(
        nodes=POOL,
        projects=[project("a").usage(1e9), project("b")],
        pending=[
            job("b-late").project("b").gpus(8).submitted(30).priority(9),
            job("a-first").project("a").gpus(8).submitted(10),
            job("a-second").project("a").gpus(8).submitted(20),
        ],
        policy=Policy.fifo(),
    )
    assert admitted_ids(result) == ["a-first", "a-second"]


def test_fifo_neither_reclaims_nor_reserves():
    result = plan_of(
        nodes=[node("n1")],
        projects=[project("a").quota("H100", 8, 8), project("b")],
        running=[running("rb").project("b").on("n1", 6).runtime(100)],
        pending=[job("a1").project("a").gpus(8), job("b1").project("b").gpus(2).submitted(1)],
        policy=Policy.fifo(),
    )
    assert (result.preemptions, result.reservations) == ([], [])
    assert admitted_ids(result) == ["b1"]  # first fit: nothing holds GPUs for a1
