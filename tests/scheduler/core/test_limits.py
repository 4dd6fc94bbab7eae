"""Limits: the project's per-flavor limit, its credits, its quotas, and whether it exists."""

from __future__ import annotations

import pytest

from scheduler.core import ANY_FLAVOR, CreditsExhausted, Policy, ReasonCode

from .builders import (
    admission,
    admitted_ids,
    job,
    node,
    plan_of,
    project,
    reason_code,
    running,
)

POOL = [node("n1"), node("n2"), node("n3"), node("n4")]  # 32 idle H100 GPUs
P = project("p").quota("H100", guaranteed=4, limit=8)


@pytest.mark.parametrize(
    ("held", "gpus", "admitted"),
    [
        pytest.param(0, 8, True, id="up-to-the-limit"),
        pytest.param(4, 4, True, id="held-plus-job-equals-limit"),
        pytest.param(4, 5, False, id="held-plus-job-over-limit"),
        pytest.param(8, 1, False, id="at-the-limit-already"),
    ],
)
def test_limit_counts_what_the_project_holds(held, gpus, admitted):
    run = [running("r").on("n4", held)] if held else []
    result = plan_of(nodes=POOL, projects=[P], running=run, pending=[job("j").gpus(gpus)])
    assert (admitted_ids(result) == ["j"]) is admitted
    if not admitted:
        reason = result.reason_for(job("j").gpus(gpus).build())
        assert reason.code is ReasonCode.OVER_LIMIT
        assert f"holds {held}" in reason.message
        assert "limit of 8" in reason.message


def test_limit_applies_after_this_cycles_own_admissions():
    result = plan_of(
        nodes=POOL,
        projects=[P],
        pending=[job("a").gpus(6).submitted(0), job("b").gpus(4).submitted(1)],
    )
    assert admitted_ids(result) == ["a"]
    assert reason_code(result, job("b").gpus(4).submitted(1)) is ReasonCode.OVER_LIMIT


def test_a_smaller_job_behind_an_over_limit_one_still_fits():
    result = plan_of(
        nodes=POOL,
        projects=[P],
        running=[running("r").on("n1", 4)],
        pending=[job("big").gpus(6).priority(1), job("small").gpus(2)],
    )
    assert admitted_ids(result) == ["small"]
    assert reason_code(result, job("big").gpus(6).priority(1)) is ReasonCode.OVER_LIMIT


def test_limit_is_per_flavor():
    result = plan_of(
        nodes=[*POOL, node("a1").gpus(8, "A100")],
        projects=[P.quota("A100", guaranteed=0, limit=8)],
        running=[running("r").flavor("A100").on("a1", 8)],
        pending=[job("j").gpus(8)],
    )
    assert admitted_ids(result) == ["j"]


@pytest.mark.parametrize(
    ("held", "borrowed"),
    [pytest.param(0, False, id="within-guarantee"), pytest.param(2, True, id="above-guarantee")],
)
def test_admission_says_whether_it_borrows(held, borrowed):
    run = [running("r").on("n4", held)] if held else []
    result = plan_of(nodes=POOL, projects=[P], running=run, pending=[job("j").gpus(4)])
    assert admission(result, "j").borrowed is borrowed


def test_quotas_not_enforced_means_no_limit():
    result = plan_of(
        nodes=POOL,
        projects=[P],
        pending=[job("j").gpus(24)],
        policy=Policy.gpupool(enforce_quotas=False),
    )
    assert admitted_ids(result) == ["j"]


# -- credits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "credits",
    [pytest.param(None, id="no-budget"), pytest.param(4.0, id="enough-for-its-limit")],
)
def test_credits_left_allow_new_jobs(credits):
    # 4 GPUs x 1 h x rate 1.0: exactly what is left
    result = plan_of(nodes=POOL, projects=[P.credits(credits)], pending=[job("j").gpus(4)])
    assert admitted_ids(result) == ["j"]


@pytest.mark.parametrize(
    "credits", [pytest.param(0.0, id="zero"), pytest.param(-3.0, id="overdrawn")]
)
def test_exhausted_credits_block_every_job_of_the_project(credits):
    jobs = [job("a").gpus(4).submitted(0), job("b").gpus(1).submitted(1)]
    result = plan_of(nodes=POOL, projects=[P.credits(credits)], pending=jobs)
    assert admitted_ids(result) == []
    for j in jobs:
        reason = result.reason_for(j.build())
        assert reason.code is ReasonCode.CREDITS
        assert "credits" in reason.message


def test_exhausted_credits_with_borrow_only_still_use_idle_gpus_as_borrowed():
    result = plan_of(
        nodes=POOL,
        projects=[P.credits(0)],
        pending=[job("j").gpus(4)],
        policy=Policy.gpupool(credits_exhausted=CreditsExhausted.BORROW_ONLY),
    )
    assert admitted_ids(result) == ["j"]
    assert admission(result, "j").borrowed is True


def test_borrow_only_jobs_go_last():
    # One node: q borrows (no guarantee) but has credits; p is broke but in quota.
    result = plan_of(
        nodes=[node("n1")],
        projects=[
            project("p").quota("H100", 8, 8).credits(0),
            project("q").quota("H100", 0, 8).usage(1e9),
        ],
        pending=[job("p1").project("p").gpus(8), job("q1").project("q").gpus(8).submitted(9)],
        policy=Policy.gpupool(credits_exhausted=CreditsExhausted.BORROW_ONLY),
    )
    assert admitted_ids(result) == ["q1"]


def test_borrow_only_jobs_do_not_reclaim():
    result = plan_of(
        nodes=[node("n1")],
        projects=[project("p").quota("H100", 8, 8).credits(0), project("q").quota("H100", 0, 8)],
        running=[running("q-run").project("q").on("n1", 8)],
        pending=[job("p1").project("p").gpus(8)],
        policy=Policy.gpupool(credits_exhausted=CreditsExhausted.BORROW_ONLY),
    )
    assert result.preemptions == []
    assert admitted_ids(result) == []


# -- quotas and projects ------------------------------------------------------------------


def test_no_quota_for_the_flavor_means_the_job_never_fits():
    result = plan_of(
        nodes=[*POOL, node("a1").gpus(8, "A100")],
        projects=[P],
        pending=[job("j").flavor("A100").gpus(1)],
    )
    assert admitted_ids(result) == []
    reason = result.rejections["j"]
    assert reason.code is ReasonCode.NEVER_FITS
    assert "limit of 0 A100" in reason.message


def test_unknown_project_waits_with_a_project_reason():
    # The project may not be set up yet (or be suspended): PROJECT, "project ... not active".
    result = plan_of(nodes=POOL, projects=[P], pending=[job("j").project("ghost").gpus(1)])
    assert admitted_ids(result) == []
    reason = result.reason_for(job("j").project("ghost").gpus(1).build())
    assert reason.code is ReasonCode.PROJECT
    assert "ghost" in reason.message


def test_unknown_project_is_fine_without_quotas():
    result = plan_of(
        nodes=POOL,
        projects=[P],
        pending=[job("j").project("ghost").gpus(1)],
        policy=Policy.fifo(),
    )
    assert admitted_ids(result) == ["j"]


# -- any-flavor jobs: limits are per flavor, so one queue may span several ceilings ---------


def test_any_flavor_job_within_another_flavors_limit_is_not_held_back_by_the_queue_head():
    # p holds all 4 of its A100 limit and 6 of its 8 H100; the head asks for 4 (over both),
    # the next job for 2, which the H100 limit still allows and h1 has room for.
    head = job("head").flavor(ANY_FLAVOR).gpus(4).priority(1)
    small = job("small").flavor(ANY_FLAVOR).gpus(2)
    result = plan_of(
        nodes=[node("a1").gpus(8, "A100"), node("h1")],
        projects=[project("p").quota("A100", 0, 4).quota("H100", 0, 8)],
        running=[
            running("ra").flavor("A100").on("a1", 4),
            running("rh").flavor("H100").on("h1", 6),
        ],
        pending=[head, small],
    )
    assert admitted_ids(result) == ["small"]
    assert reason_code(result, head) is ReasonCode.OVER_LIMIT


def test_any_flavor_job_that_only_another_flavor_allows_is_not_held_back():
    # The head may only use H100 (too big for p's A100 limit) and H100 is full; the next job
    # is small enough for p's A100 limit, and the A100 node is idle.
    head = job("head").flavor(ANY_FLAVOR).gpus(8).priority(1)
    small = job("small").flavor(ANY_FLAVOR).gpus(2)
    result = plan_of(
        nodes=[node("a1").gpus(8, "A100"), node("h1")],
        projects=[project("p").quota("A100", 0, 4).quota("H100", 0, 16)],
        running=[running("rh").flavor("H100").on("h1", 8)],
        pending=[head, small],
    )
    assert admitted_ids(result) == ["small"]
    assert admission(result, "small").flavor == "A100"
