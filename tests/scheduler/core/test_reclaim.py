"""Reclaim: an in-quota job preempts the fewest, newest borrowers of other projects."""

from __future__ import annotations

import pytest

from scheduler.core import Policy, ReasonCode, SchedulerState, plan, run_cycle

from .builders import (
    admitted_ids,
    assumed,
    job,
    node,
    pieces_of,
    plan_of,
    preempted_ids,
    project,
    running,
    same_decisions,
    snapshot,
)

GRACE = Policy().grace_period_s

OWNER = project("a").quota("H100", guaranteed=8, limit=16)  # lends what it does not use
BORROWER = project("b").quota("H100", guaranteed=0, limit=16)  # everything it holds is borrowed


def borrowed(job_id: str, node_name: str, gpus: int, start: float):
    return running(job_id).project("b").on(node_name, gpus).started(start).runtime(10_000)


def test_in_quota_job_preempts_a_borrower_with_a_grace_period():
    mine = job("a1").project("a").gpus(8)
    result = plan_of(
        nodes=[node("n1")],
        projects=[OWNER, BORROWER],
        running=[borrowed("b1", "n1", 8, start=0)],
        pending=[mine],
        now=50,
    )
    assert admitted_ids(result) == []
    [p] = result.preemptions
    assert (p.job_id, p.for_job, p.stop_at) == ("b1", "a1", 50 + GRACE)
    assert "a1" in p.reason
    reason = result.reason_for(mine.build())
    assert reason.code is ReasonCode.RECLAIMING
    assert reason.est_start == 50 + GRACE


def test_grace_period_comes_from_the_policy():
    result = plan_of(
        nodes=[node("n1")],
        projects=[OWNER, BORROWER],
        running=[borrowed("b1", "n1", 8, start=0)],
        pending=[job("a1").project("a").gpus(8)],
        policy=Policy.gpupool(grace_period_s=30),
        now=10,
    )
    assert [p.stop_at for p in result.preemptions] == [40]


@pytest.mark.parametrize(
    ("holders", "gpus", "victims"),
    [
        pytest.param(
            [("b1", "b", "n1", 4, 0), ("b2", "b", "n1", 4, 10), ("b3", "b", "n2", 8, 5)],
            8,
            ["b3"],
            id="fewest-preemptions",
        ),
        pytest.param(
            [("b1", "b", "n1", 4, 0), ("b2", "b", "n1", 4, 10), ("b3", "b", "n2", 8, 5)],
            4,
            ["b2"],
            id="fewest-gpus-then-newest-on-the-node",
        ),
        pytest.param(
            [
                ("b1", "b", "n1", 2, 0),
                ("b2", "b", "n1", 2, 10),
                ("b3", "b", "n1", 2, 20),
                ("b4", "b", "n1", 2, 30),
                ("c1", "c", "n2", 8, 40),  # c is within its guarantee: not a candidate
            ],
            4,
            ["b3", "b4"],
            id="newest-first-on-a-node",
        ),
        pytest.param(
            [("b-old", "b", "n1", 8, 0), ("b-new", "b", "n2", 8, 10)],
            8,
            ["b-new"],
            id="equal-cost-newest-first",
        ),
        pytest.param(
            [("b1", "b", "n1", 8, 0), ("b2", "b", "n2", 8, 10)],
            16,
            ["b1", "b2"],
            id="gang-preempts-on-each-node",
        ),
        pytest.param(
            [("b1", "b", "n1", 8, 0), ("c1", "c", "n2", 8, 10)],
            16,
            [],
            id="gang-needs-a-non-borrower-too-so-nothing",
        ),
    ],
)
def test_which_borrowers_are_preempted(holders, gpus, victims):
    result = plan_of(
        nodes=[node("n1"), node("n2")],
        projects=[project("a").quota("H100", 16, 16), BORROWER, project("c").quota("H100", 8)],
        running=[
            running(i).project(p).on(n, g).started(t).runtime(10_000) for i, p, n, g, t in holders
        ],
        pending=[job("a1").project("a").gpus(gpus)],
        now=100,
    )
    assert sorted(preempted_ids(result)) == victims


def test_only_the_allocations_above_the_guarantee_are_borrowed():
    # b is guaranteed 4 and holds two 4-GPU jobs: only the newest one borrows.
    result = plan_of(
        nodes=[node("n1"), node("n2")],
        projects=[project("a").quota("H100", 12, 12), project("b").quota("H100", 4, 16)],
        running=[
            running("c-run").project("a").on("n2", 8),
            running("b-old").project("b").on("n1", 4).started(0),
            running("b-new").project("b").on("n1", 4).started(10),
        ],
        pending=[job("a1").project("a").gpus(4)],
        now=100,
    )
    assert preempted_ids(result) == ["b-new"]


def test_never_preempts_a_project_within_its_guarantee():
    result = plan_of(
        nodes=[node("n1")],
        projects=[OWNER, project("b").quota("H100", 8, 16)],
        running=[running("b1").project("b").on("n1", 8)],
        pending=[job("a1").project("a").gpus(8)],
    )
    assert result.preemptions == []


def test_does_not_preempt_when_the_borrowed_gpus_would_not_be_enough():
    # Only b-new borrows; its 4 GPUs would not make room for 8.
    result = plan_of(
        nodes=[node("n1")],
        projects=[OWNER, project("b").quota("H100", 4, 16)],
        running=[
            running("b-old").project("b").on("n1", 4).started(0),
            running("b-new").project("b").on("n1", 4).started(10),
        ],
        pending=[job("a1").project("a").gpus(8)],
    )
    assert result.preemptions == []


def test_a_borrowing_job_never_preempts():
    result = plan_of(
        nodes=[node("n1")],
        projects=[project("a").quota("H100", 0, 8), BORROWER],
        running=[borrowed("b1", "n1", 8, start=0)],
        pending=[job("a1").project("a").gpus(8)],
    )
    assert result.preemptions == []


def test_no_reclaim_when_the_policy_says_so():
    result = plan_of(
        nodes=[node("n1")],
        projects=[OWNER, BORROWER],
        running=[borrowed("b1", "n1", 8, start=0)],
        pending=[job("a1").project("a").gpus(8)],
        policy=Policy.gpupool(reclaim=False),
    )
    assert result.preemptions == []


def test_stopping_borrowers_are_not_preempted_twice():
    result = plan_of(
        nodes=[node("n1")],
        projects=[OWNER, BORROWER],
        running=[borrowed("b1", "n1", 8, start=0).stopping(120)],
        pending=[job("a1").project("a").gpus(8)],
        now=60,
    )
    assert result.preemptions == []


def test_two_in_quota_jobs_do_not_preempt_the_same_borrower():
    result = plan_of(
        nodes=[node("n1"), node("n2")],
        projects=[project("a").quota("H100", 16, 16), BORROWER],
        running=[borrowed("b1", "n1", 8, 0), borrowed("b2", "n2", 8, 10)],
        pending=[
            job("a1").project("a").gpus(8).submitted(0),
            job("a2").project("a").gpus(8).submitted(1),
        ],
    )
    assert sorted(p.job_id for p in result.preemptions) == ["b1", "b2"]
    assert sorted(p.for_job for p in result.preemptions) == ["a1", "a2"]


def test_in_quota_job_behind_a_borrowing_head_of_its_queue_still_reclaims():
    # a's queue: "big" (higher priority, beyond a's guarantee of 4) then "small" (in quota).
    # b borrows the whole node; small is entitled to 4 of those GPUs.
    small = job("small").project("a").gpus(4).submitted(1)
    result = plan_of(
        nodes=[node("n1")],
        projects=[project("a").quota("H100", 4, 16), BORROWER],
        running=[borrowed("b1", "n1", 8, start=0)],
        pending=[job("big").project("a").gpus(8).priority(1), small],
    )
    assert [p.for_job for p in result.preemptions] == ["small"]
    assert result.reason_for(small.build()).code is ReasonCode.RECLAIMING


# -- across cycles ------------------------------------------------------------------------


def reclaim_scenario():
    return snapshot(
        nodes=[node("n1"), node("n2")],
        projects=[OWNER, BORROWER, project("c").quota("H100", 0, 16)],
        running=[borrowed("b1", "n1", 8, start=0), borrowed("b2", "n2", 8, start=10)],
        pending=[job("a1").project("a").gpus(8)],
    )


def test_second_cycle_waits_for_the_victims_instead_of_preempting_again():
    state = SchedulerState(reclaim_scenario(), Policy.gpupool())
    first = run_cycle(state, now=100)
    [victim] = preempted_ids(first)
    assert state.running[victim].stopping_at == 100 + GRACE

    second = run_cycle(state, now=160)
    assert second.preemptions == []
    reason = second.reason_for(job("a1").project("a").gpus(8).build())
    assert reason.code is ReasonCode.RECLAIMING
    assert reason.est_start == 100 + GRACE

    # The victim stops; a newcomer of a third project does not get the freed GPUs.
    freed = state.running[victim].pieces
    state.finish(victim)
    state.add_job(job("c1").project("c").gpus(8).submitted(200).build())
    third = run_cycle(state, now=100 + GRACE)
    assert admitted_ids(third) == ["a1"]
    assert pieces_of(third, "a1") == freed
    assert third.preemptions == []


def test_a_fresh_plan_does_not_preempt_again_while_victims_are_stopping():
    # The same second cycle, planned from a snapshot: b2 is already stopping for a1.
    snap = snapshot(
        nodes=[node("n1"), node("n2")],
        projects=[OWNER, BORROWER],
        running=[
            borrowed("b1", "n1", 8, start=0),
            borrowed("b2", "n2", 8, start=10).stopping(100 + GRACE, for_job="a1"),
        ],
        pending=[job("a1").project("a").gpus(8)],
    )
    result = plan(snap, Policy.gpupool(), now=160)
    assert result.preemptions == []
    reason = result.reason_for(snap.pending[0])
    assert reason.code is ReasonCode.RECLAIMING
    assert reason.est_start == 100 + GRACE


def test_the_state_and_a_fresh_plan_agree_while_victims_are_stopping():
    policy = Policy.gpupool()
    snap = reclaim_scenario()
    state = SchedulerState(snap, policy)
    first = run_cycle(state, now=100)
    assert len(first.preemptions) == 1
    second = run_cycle(state, now=160)
    fresh = assumed(snap, first)
    same_decisions(second, plan(fresh, policy, 160), fresh.pending)


@pytest.mark.parametrize(
    "first",
    [
        pytest.param([], id="alone"),
        pytest.param([job("a-big").project("a").gpus(8)], id="after-a-larger-gang-found-nothing"),
    ],
)
def test_a_smaller_gang_reclaims_after_a_larger_one_could_not(first):
    # n0, n1 have 2 GPUs, n2 has 4; b borrows n0 and n1. a-big needs [4, 4]: preempting b
    # still leaves no second 4-GPU node. a-small needs [4, 1]: preempting b makes room.
    small = job("a-small").project("a").gpus(5).submitted(1)
    result = plan_of(
        nodes=[node("n0").gpus(2), node("n1").gpus(2), node("n2").gpus(4)],
        projects=[project("a").quota("H100", 8, 8), project("b").quota("H100", 0, 4)],
        running=[running("b1").project("b").on("n0", 2).on("n1", 2).runtime(10_000)],
        pending=[*first, small],
    )
    assert [(p.job_id, p.for_job) for p in result.preemptions] == [("b1", "a-small")]
    assert result.reason_for(small.build()).code is ReasonCode.RECLAIMING


def test_a_gang_reclaim_leaves_each_project_its_guarantee_across_all_pieces():
    # q is 4 GPUs over its guarantee, in two 4-GPU jobs on n2 and n3. Clearing both nodes
    # for a's 16-GPU gang would take q down to 0: one of them, at most, may go.
    result = plan_of(
        nodes=[node("n0"), node("n1"), node("n2"), node("n3")],
        projects=[
            project("a").quota("H100", guaranteed=16, limit=16),
            project("b").quota("H100", guaranteed=12, limit=16),
            project("q").quota("H100", guaranteed=4, limit=16),
        ],
        running=[
            running("b1").project("b").on("n0", 8),
            running("b2").project("b").on("n1", 4),
            running("q1").project("q").on("n2", 4).started(0),
            running("q2").project("q").on("n3", 4).started(10),
        ],
        pending=[job("big").project("a").gpus(16)],
    )
    assert not {"q1", "q2"} <= set(preempted_ids(result))


def test_a_claimant_does_not_start_on_gpus_held_for_another_claim():
    # b1 counts on X's 3 free GPUs plus c1's 5; a1's victim c2 (on Y) ends early. a1 must
    # start on Y, not on the GPUs held for b1 on X, so that b1 fits X once c1 has stopped.
    snap = snapshot(
        nodes=[node("X"), node("Y")],
        projects=[
            project("A").quota("H100", 8, 16),
            project("B").quota("H100", 8, 16),
            project("C").quota("H100", 0, 16),
        ],
        running=[
            running("c1").project("C").on("X", 5).started(0),
            running("a0").project("A").on("Y", 4).started(0),
            running("c2").project("C").on("Y", 4).started(1),
        ],
        pending=[job("b1").project("B").gpus(8), job("a1").project("A").gpus(2)],
    )
    state = SchedulerState(snap, Policy.gpupool())
    first = run_cycle(state, now=0)
    assert sorted((p.job_id, p.for_job) for p in first.preemptions) == [("c1", "b1"), ("c2", "a1")]
    state.finish("c2")  # ends on its own during the grace period
    assert pieces_of(run_cycle(state, now=50), "a1") == (("Y", 2),)
    state.finish("c1")
    assert pieces_of(run_cycle(state, now=GRACE), "b1") == (("X", 8),)
