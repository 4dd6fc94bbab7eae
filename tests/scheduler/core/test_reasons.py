"""Reasons: every pending job not admitted says why; impossible jobs are rejected by name."""

from __future__ import annotations

import pytest

from scheduler.core import ANY_FLAVOR, CreditsExhausted, Policy, ReasonCode

from .builders import (
    admitted_ids,
    job,
    node,
    plan_of,
    project,
    running,
)

NODES = [node("n1"), node("n2"), node("a1").gpus(4, "A100")]
P = project("p").quota("H100", guaranteed=8, limit=12).quota("A100", guaranteed=4, limit=4)
Q = project("q").quota("H100", guaranteed=0, limit=32).quota("A100", guaranteed=0, limit=2)
R = project("r").quota("H100", guaranteed=0, limit=16).usage(1e9)  # borrows, served last


# -- never fits ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pending", "words"),
    [
        pytest.param(job("j").gpus(0), ["at least 1", "got 0"], id="zero-gpus"),
        pytest.param(job("j").gpus(-2), ["at least 1", "got -2"], id="negative-gpus"),
        pytest.param(
            job("j").flavor("B200"), ["unknown flavor", "'B200'", "A100, H100"], id="unknown-flavor"
        ),
        pytest.param(
            job("j").gpus(24).project("q"),
            ["24 GPUs", "2 H100 nodes", "(16 GPUs", "at most 8 a node"],
            id="larger-than-the-pool",
        ),
        pytest.param(
            job("j").gpus(9).project("q").nodes(1),
            ["9 GPUs over 1 nodes", "at most 8 a node"],
            id="piece-larger-than-any-node",
        ),
        pytest.param(
            job("j").gpus(3).project("q").nodes(3),
            ["over 3 nodes", "2 H100 nodes"],
            id="more-nodes-than-the-pool",
        ),
        pytest.param(
            job("j").gpus(16), ["16 GPUs", "project p", "limit of 12 H100"], id="larger-than-limit"
        ),
        pytest.param(
            job("j").project("q").gpus(3).flavor("A100"),
            ["limit of 2 A100"],
            id="larger-than-flavor-limit",
        ),
        pytest.param(
            job("j").gpus(6).nodes(4), ["6 GPUs", "split evenly", "4 nodes"], id="uneven-split"
        ),
        pytest.param(job("j").gpus(4).nodes(0), ["split evenly", "0 nodes"], id="zero-nodes"),
        pytest.param(
            job("j").gpus(13).flavor(ANY_FLAVOR),
            ["A100", "H100", "limit of 12"],
            id="any-flavor-fits-none",
        ),
    ],
)
def test_jobs_that_can_never_fit_are_rejected(pending, words):
    result = plan_of(nodes=NODES, projects=[P, Q], pending=[pending])
    assert admitted_ids(result) == []
    reason = result.rejections["j"]
    assert reason.code is ReasonCode.NEVER_FITS
    for word in words:
        assert word in reason.message
    assert result.reason_for(pending.build()) == reason


def test_guarantee_is_the_ceiling_without_borrowing():
    result = plan_of(
        nodes=NODES,
        projects=[P],
        pending=[job("j").gpus(10)],
        policy=Policy.gpupool(borrowing=False),
    )
    assert "guarantee of 8 H100" in result.rejections["j"].message


def test_a_job_that_fits_one_flavor_is_not_rejected():
    result = plan_of(nodes=NODES, projects=[P], pending=[job("j").gpus(8).flavor(ANY_FLAVOR)])
    assert result.rejections == {}
    assert admitted_ids(result) == ["j"]


def test_rejections_are_not_admitted_and_do_not_block_others():
    result = plan_of(
        nodes=NODES,
        projects=[P],
        pending=[job("bad").gpus(0).priority(9), job("good").gpus(2)],
    )
    assert admitted_ids(result) == ["good"]
    assert list(result.rejections) == ["bad"]


# -- every waiting job has a reason ---------------------------------------------------------


SCENARIOS = {
    "pool-full": dict(
        running=[
            running("r1").project("q").on("n1", 8).runtime(500),
            running("r2").project("q").on("n2", 8),
        ],
        pending=[
            job(f"j{i}").project("r").gpus(g).submitted(i)
            for i, g in enumerate([8, 4, 2, 1, 8, 16])
        ],
    ),
    "over-limit": dict(
        running=[running("r1").on("n1", 8)],
        pending=[job("j1").gpus(8), job("j2").gpus(4).submitted(1), job("j3").gpus(1)],
    ),
    "credits": dict(
        projects=[P.credits(0), Q],
        pending=[job("j1").gpus(1), job("j2").gpus(2).submitted(1), job("q1").project("q")],
    ),
    "reclaiming": dict(
        running=[running("b").project("q").on("n1", 8), running("b2").project("q").on("n2", 8)],
        pending=[job("j1").gpus(8), job("j2").gpus(4).submitted(1), job("q1").project("q")],
    ),
    "backfill": dict(
        running=[
            running("r1").project("q").on("n1", 4).runtime(900),
            running("r2").project("q").on("n2", 8),
        ],
        pending=[
            job("big").gpus(8).project("q"),
            job("long").gpus(4).project("r").submitted(1).runtime(1e5),
            job("short").gpus(2).project("r").submitted(2).runtime(60),
        ],
    ),
    "mixed-rejections": dict(
        pending=[job("j0").gpus(0), job("j1").flavor("TPU"), job("j2").gpus(2), job("j3").gpus(99)],
    ),
    "any-flavor": dict(
        running=[
            running("r1").on("n1", 4),
            running("r2").on("n2", 4),
            running("r3").project("q").on("n1", 4),
            running("r4").project("q").on("n2", 4),
            running("r5").flavor("A100").on("a1", 4),
        ],
        pending=[job("j1").flavor(ANY_FLAVOR).gpus(4), job("j2").flavor(ANY_FLAVOR).gpus(2)],
    ),
    "many-small": dict(
        running=[running("r1").on("n1", 7)],
        pending=[job(f"j{i}").gpus(1).submitted(i) for i in range(20)],
    ),
}


@pytest.mark.parametrize(
    "policy",
    [
        pytest.param(Policy.gpupool(), id="gpupool"),
        pytest.param(
            Policy.gpupool(credits_exhausted=CreditsExhausted.BORROW_ONLY), id="borrow-only"
        ),
        pytest.param(Policy.static(), id="static"),
        pytest.param(Policy.fifo(), id="fifo"),
    ],
)
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_waiting_job_has_a_reason(name, policy):
    scenario = {"nodes": NODES, "projects": [P, Q, R], **SCENARIOS[name]}
    result = plan_of(**scenario, policy=policy, now=100)
    for pending in scenario["pending"]:
        j = pending.build()
        reason = result.reason_for(j)
        if j.id in result.admitted:
            assert reason is None
        else:
            assert reason is not None, f"{j.id} waits without a reason"
            assert reason.message.strip()
            assert str(reason) == reason.message
            assert reason.code in set(ReasonCode)


@pytest.mark.parametrize(
    ("scenario", "job_id", "code"),
    [
        pytest.param("over-limit", "j2", ReasonCode.OVER_LIMIT, id="over-limit"),
        pytest.param("credits", "j1", ReasonCode.CREDITS, id="credits"),
        pytest.param("reclaiming", "j1", ReasonCode.RECLAIMING, id="reclaiming"),
        pytest.param("backfill", "big", ReasonCode.RESERVED, id="reserved"),
        pytest.param("backfill", "long", ReasonCode.BACKFILL, id="backfill"),
        pytest.param("backfill", "short", None, id="short-job-backfilled"),
        pytest.param("mixed-rejections", "j1", ReasonCode.NEVER_FITS, id="never-fits"),
        pytest.param("pool-full", "j0", ReasonCode.RESERVED, id="first-blocked-reserves"),
        pytest.param("pool-full", "j1", ReasonCode.CAPACITY, id="capacity"),
    ],
)
def test_reason_codes(scenario, job_id, code):
    setup = {"nodes": NODES, "projects": [P, Q, R], **SCENARIOS[scenario]}
    result = plan_of(**setup, now=100)
    [pending] = [j.build() for j in setup["pending"] if j.build().id == job_id]
    reason = result.reason_for(pending)
    assert (reason and reason.code) is code


def test_estimated_start_is_in_the_future_or_now():
    setup = {"nodes": NODES, "projects": [P, Q, R], **SCENARIOS["backfill"]}
    result = plan_of(**setup, now=100)
    for pending in setup["pending"]:
        reason = result.reason_for(pending.build())
        if reason is not None and reason.est_start is not None:
            assert reason.est_start >= 100
