"""Credits committed at admission: a job starts only if its project can pay for its whole
limit (GPUs x max_runtime x rate) on top of what its running jobs are committed to."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from scheduler.core import (
    ANY_FLAVOR,
    CreditsExhausted,
    Policy,
    ReasonCode,
    SchedulerState,
    plan,
    run_cycle,
)

from .builders import (
    HOUR,
    admission,
    admitted_ids,
    assumed,
    job,
    node,
    plan_of,
    project,
    running,
    same_decisions,
    snapshot,
)

POOL = [node(f"n{i}") for i in range(4)]  # 32 idle H100 GPUs
P = project("p").quota("H100", guaranteed=16, limit=32)
BORROW_ONLY = Policy.gpupool(credits_exhausted=CreditsExhausted.BORROW_ONLY)
BIG = job("big").gpus(8).runtime(14.4 * HOUR)  # 8 x 14.4 x 1.0 = 115.2 credits


# -- who starts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credits", "runs", "pending", "admitted"),
    [
        pytest.param(None, [], [BIG], ["big"], id="no-budget-unaffected"),
        pytest.param(1.0, [], [BIG], [], id="one-credit-left-a-big-job-waits"),
        pytest.param(115.2, [], [BIG], ["big"], id="exactly-its-limit"),
        pytest.param(115.1, [], [BIG], [], id="a-little-short"),
        pytest.param(
            16.0,
            [running("r").on("n3", 8).runtime(HOUR)],
            [job("j").gpus(8)],
            ["j"],
            id="running-commitment-plus-job-fits",
        ),
        pytest.param(
            15.9,
            [running("r").on("n3", 8).runtime(HOUR)],
            [job("j").gpus(8)],
            [],
            id="running-commitment-counted",
        ),
        pytest.param(
            # r is preempted and stops at 600 s: it is committed only up to then (0.2 x 8)
            9.6,
            [running("r").on("n3", 8).runtime(HOUR).stopping(600.0)],
            [job("j").gpus(8)],
            ["j"],
            id="a-stopping-job-commits-only-to-its-stop",
        ),
        pytest.param(
            20.0,
            [],
            [job("a").gpus(8), job("b").gpus(8).submitted(1), job("c").gpus(8).submitted(2)],
            ["a", "b"],
            id="admissions-of-the-same-cycle-are-committed",
        ),
        pytest.param(
            10.0,
            [],
            [job("a").gpus(16), job("b").gpus(8).submitted(1), job("c").gpus(2).submitted(2)],
            ["b", "c"],
            id="a-cheaper-job-behind-one-it-cannot-pay-for",
        ),
        pytest.param(
            -3.0, [], [job("a").gpus(1).runtime(1.0)], [], id="overdrawn-blocks-even-a-tiny-job"
        ),
    ],
)
def test_a_job_starts_only_if_its_whole_limit_is_paid_for(credits, runs, pending, admitted):
    result = plan_of(nodes=POOL, projects=[P.credits(credits)], running=runs, pending=pending)
    assert admitted_ids(result) == admitted
    for j in pending:
        if j.build().id not in admitted:
            assert result.reason_for(j.build()).code is ReasonCode.CREDITS


def test_other_projects_commitments_do_not_count():
    result = plan_of(
        nodes=POOL,
        projects=[P.credits(8.0), project("q").quota("H100", 16, 32).credits(0.0)],
        running=[running("q1").project("q").on("n3", 8).runtime(100 * HOUR)],
        pending=[job("j").gpus(8)],
    )
    assert admitted_ids(result) == ["j"]


@pytest.mark.parametrize(
    ("rate", "credits", "admitted"),
    [
        pytest.param(2.0, 16.0, True, id="rate-2-enough"),
        pytest.param(2.0, 15.0, False, id="rate-2-short"),
        pytest.param(0.5, 4.0, True, id="rate-half"),
        pytest.param(0.0, 0.0, True, id="a-free-flavor-with-nothing-left"),
    ],
)
def test_the_rate_of_the_flavor_weighs_the_commitment(rate, credits, admitted):
    result = plan_of(
        nodes=POOL,
        projects=[project("p").quota("H100", 16, 32, rate=rate).credits(credits)],
        pending=[job("j").gpus(8)],  # 8 GPU-hours
    )
    assert (admitted_ids(result) == ["j"]) is admitted


# -- any-flavor jobs pay the rate of the flavor they are placed on -------------------------

MIXED = [node("h1"), node("a1").gpus(8, "A100")]
# Without credits in the way, an any-flavor job goes to A100 (flavors in name order).
DEAR_A100 = project("p").quota("H100", 8, 16, rate=1.0).quota("A100", 8, 8, rate=4.0)
ANY = job("j").flavor(ANY_FLAVOR)


@pytest.mark.parametrize(
    ("credits", "flavor"),
    [
        pytest.param(None, "A100", id="no-budget"),
        pytest.param(4.0, "A100", id="both-affordable"),
        pytest.param(3.0, "H100", id="only-the-cheap-one"),
    ],
)
def test_an_any_flavor_job_is_placed_where_it_can_pay(credits, flavor):
    result = plan_of(nodes=MIXED, projects=[DEAR_A100.credits(credits)], pending=[ANY])
    assert admission(result, "j").flavor == flavor


def test_an_any_flavor_job_waits_for_the_flavor_it_can_pay_for():
    # 31 credits pay for 8 H100 GPU-hours (8) but not 8 A100 GPU-hours at rate 4 (32); the
    # H100 node is full, the A100 node idle.
    result = plan_of(
        nodes=MIXED,
        projects=[DEAR_A100.credits(31.0)],
        running=[running("r").on("h1", 8)],
        pending=[ANY.gpus(8)],
    )
    assert admitted_ids(result) == []
    reason = result.reason_for(ANY.gpus(8).build())
    assert reason.code is not ReasonCode.CREDITS
    assert "H100" in reason.message


def test_an_any_flavor_job_no_flavor_can_pay_for_names_the_cheapest():
    result = plan_of(nodes=MIXED, projects=[DEAR_A100.credits(7.0)], pending=[ANY.gpus(8)])
    reason = result.reason_for(ANY.gpus(8).build())
    assert reason.code is ReasonCode.CREDITS
    assert "needs up to 8.0 (8 GPUs x 1.0 h x 1.0 on H100)" in reason.message


# -- the reason ---------------------------------------------------------------------------


def test_the_reason_says_what_is_committed_and_what_the_job_needs():
    # 100 credits; r (8 GPUs for up to 10 h, started at 0) is committed to 80, of which
    # 8 h x 8 GPUs = 64 are still ahead at 2 h (16 used): 20 left after 64 committed.
    runs = [running("r").on("n3", 8).runtime(10 * HOUR)]
    result = plan_of(
        nodes=POOL, projects=[P.credits(100.0)], running=runs, pending=[BIG], now=2 * HOUR
    )
    reason = result.reason_for(BIG.build())
    assert reason.code is ReasonCode.CREDITS
    assert reason.message == (
        "credits: 20.0 left after 64.0 committed to running jobs; "
        "this job needs up to 115.2 (8 GPUs x 14.4 h x 1.0)"
    )


def test_the_reason_says_how_far_overdrawn():
    result = plan_of(nodes=POOL, projects=[P.credits(-3.0)], pending=[job("j")])
    assert result.reason_for(job("j").build()).message.startswith(
        "credits: 3.0 overdrawn after 0.0 committed to running jobs; this job needs up to 1.0"
    )


def test_a_queue_no_job_of_which_can_be_paid_for_waits_as_a_whole():
    jobs = [BIG, job("small").gpus(2).runtime(4 * HOUR).submitted(1)]  # 115.2 and 8.0
    result = plan_of(nodes=POOL, projects=[P.credits(5.0)], pending=jobs)
    assert admitted_ids(result) == []
    assert set(result.queue_reasons) == {("p", "H100")}
    assert "each job here needs up to 8.0 or more" in result.queue_reasons[("p", "H100")].message
    # The job the cycle looked at still says what it needs itself.
    assert "this job needs up to 115.2" in result.reason_for(BIG.build()).message
    assert "each job here" in result.reason_for(jobs[1].build()).message


@pytest.mark.parametrize("rate", [math.nan, math.inf])
def test_a_rate_that_is_no_number_holds_the_projects_jobs_back(rate):
    # A bad row (rates are validated on input): nothing the project could be said to pay
    # for, and no crash.
    dear = project("p").quota("H100", 16, 32, rate=rate).credits(100.0)
    result = plan_of(
        nodes=POOL, projects=[dear], running=[running("r").on("n3", 8)], pending=[job("j")]
    )
    assert admitted_ids(result) == []
    reason = result.reason_for(job("j").build())
    assert reason.code is ReasonCode.CREDITS
    assert reason.message.startswith("credits: an unknown amount left after ")


# -- released at the end ------------------------------------------------------------------


def test_a_commitment_is_released_when_its_job_ends():
    snap = snapshot(
        nodes=POOL,
        projects=[P.credits(16.0)],
        running=[running("r").on("n3", 8).runtime(2 * HOUR)],  # committed: 16
        pending=[job("j").gpus(8)],
    )
    policy = Policy.gpupool()
    state = SchedulerState(snap, policy)
    first = run_cycle(state, now=60)
    assert admitted_ids(first) == []
    assert first.reason_for(job("j").gpus(8).build()).code is ReasonCode.CREDITS
    state.finish("r")
    state.charge("p", 8 * 60 / 3600)  # what r used: the ledger's charge
    second = run_cycle(state, now=70)  # a quick pass: the freed credits are looked at
    assert admitted_ids(second) == ["j"]
    charged = (P.credits(16.0 - 8 * 60 / 3600).build(),)
    fresh = replace(assumed(snap, first, finished={"r"}), projects=charged)
    same_decisions(second, plan(fresh, policy, 70), fresh.pending)


def test_the_state_keeps_commitments_as_a_rebuild_counts_them():
    snap = snapshot(
        nodes=POOL,
        projects=[P.credits(100.0), project("q").quota("H100", 0, 32)],
        running=[
            running("r1").on("n0", 4).runtime(3 * HOUR),
            running("r2").on("n1", 2).runtime(HOUR).started(600.0),
            running("q1").project("q").on("n2", 8),
        ],
    )
    state = SchedulerState(snap, Policy.gpupool())
    assert state.credits_free("p") == pytest.approx(100.0 - 12.0 - 2.0)
    assert state.credits_free("q") is None
    state.mark_stopping("r1", stop_at=HOUR)
    assert state.credits_free("p") == pytest.approx(100.0 - 4.0 - 2.0)
    state.finish("r2")
    assert state.credits_free("p") == pytest.approx(100.0 - 4.0)
    assert state.committed_from("p", now=HOUR / 2) == pytest.approx(2.0)


# -- borrow_only --------------------------------------------------------------------------


def test_borrow_only_a_job_its_credits_cannot_pay_for_borrows_preemptibly():
    result = plan_of(nodes=POOL, projects=[P.credits(50.0)], pending=[BIG], policy=BORROW_ONLY)
    assert admitted_ids(result) == ["big"]
    assert admission(result, "big").borrowed is True  # in quota, but not paid for


def test_borrow_only_what_a_borrowing_job_commits_counts_too():
    # BIG (115.2) borrows: the 50 credits are committed past their end, so the next job,
    # which they would have paid for (4.0), borrows as well.
    result = plan_of(
        nodes=POOL,
        projects=[P.credits(50.0)],
        pending=[BIG, job("small").gpus(4).submitted(1)],
        policy=BORROW_ONLY,
    )
    assert admitted_ids(result) == ["big", "small"]
    assert admission(result, "small").borrowed is True


def test_borrow_only_jobs_go_after_other_projects_borrowers():
    # One node: q borrows (no guarantee) with a budget; p has credits, not enough for 8 GPUs.
    result = plan_of(
        nodes=[node("n1")],
        projects=[
            project("p").quota("H100", 8, 8).credits(7.0),
            project("q").quota("H100", 0, 8).usage(1e9),
        ],
        pending=[job("p1").project("p").gpus(8), job("q1").project("q").gpus(8).submitted(9)],
        policy=BORROW_ONLY,
    )
    assert admitted_ids(result) == ["q1"]


def test_borrow_only_the_reason_says_it_borrows_last():
    result = plan_of(
        nodes=[node("n1")],
        projects=[project("p").quota("H100", 8, 8).credits(7.0), project("q").quota("H100", 4)],
        running=[running("r").project("q").on("n1", 4)],
        pending=[job("p1").gpus(8)],
        policy=Policy.gpupool(credits_exhausted=CreditsExhausted.BORROW_ONLY, backfill=False),
    )
    reason = result.reason_for(job("p1").gpus(8).build())
    assert reason.code is ReasonCode.CAPACITY
    assert "borrowing last, preemptible: its credits do not cover its max_runtime" in (
        reason.message
    )


def test_borrow_only_a_job_that_is_paid_for_is_not_borrowed():
    result = plan_of(
        nodes=POOL, projects=[P.credits(8.0)], pending=[job("j").gpus(8)], policy=BORROW_ONLY
    )
    assert admission(result, "j").borrowed is False
