"""EASY backfill: the first blocked job reserves its earliest start; others may not delay it."""

from __future__ import annotations

import pytest

from scheduler.core import Policy, ReasonCode, Reservation

from .builders import (
    admitted_ids,
    job,
    node,
    pieces_of,
    plan_of,
    project,
    reason_code,
    running,
)

# Nothing is in quota (no guarantee), so no reclaim: only backfill decides.
P = project("p").quota("H100", guaranteed=0, limit=64).quota("A100", guaranteed=0, limit=64)
NOW = 100.0


def busy(job_id: str, node_name: str, gpus: int, ends: float, flavor: str = "H100"):
    return running(job_id).flavor(flavor).on(node_name, gpus).started(0).runtime(ends)


BIG = job("big").gpus(8).submitted(0)


def test_first_blocked_job_reserves_its_earliest_start():
    result = plan_of(
        nodes=[node("n1")],
        projects=[P],
        running=[busy("r1", "n1", 4, ends=1000)],
        pending=[BIG],
        now=NOW,
    )
    assert result.reservations == [Reservation("big", "H100", 1000, (("n1", 8),))]
    reason = result.reason_for(BIG.build())
    assert reason.code is ReasonCode.RESERVED
    assert reason.est_start == 1000
    assert "15m00s" in reason.message  # 900 s from now


@pytest.mark.parametrize(
    ("running_jobs", "gpus", "start", "pieces"),
    [
        pytest.param(
            [busy("r1", "n1", 4, 1000), busy("r2", "n1", 4, 500)],
            4,
            500,
            (("n1", 4),),
            id="first-end-that-makes-room",
        ),
        pytest.param(
            [busy("r1", "n1", 4, 1000), busy("r2", "n1", 4, 500)],
            8,
            1000,
            (("n1", 8),),
            id="needs-both-ends",
        ),
        pytest.param(
            [busy("r1", "n1", 8, 3000), busy("r2", "n2", 6, 2000)],
            4,
            2000,
            (("n2", 4),),
            id="earliest-node",
        ),
        pytest.param(
            [busy("r1", "n1", 8, 1000), busy("r2", "n2", 8, 2000)],
            16,
            2000,
            (("n1", 8), ("n2", 8)),
            id="gang-waits-for-its-last-node",
        ),
        pytest.param(
            [busy("r1", "n1", 8, 50)],
            8,
            NOW,
            (("n1", 8),),
            id="overdue-job-means-now",
        ),
        pytest.param(
            [busy("r1", "n1", 8, 10_000).stopping(300)],
            8,
            300,
            (("n1", 8),),
            id="stopping-job-ends-at-its-grace-period",
        ),
    ],
)
def test_earliest_start_comes_from_running_max_runtime(running_jobs, gpus, start, pieces):
    blocked = job("blocked").gpus(gpus)
    if not any(piece[0] == "n2" for r in running_jobs for piece in r.build().pieces):
        running_jobs = [*running_jobs, busy("filler", "n2", 8, ends=99_999)]
    result = plan_of(
        nodes=[node("n1"), node("n2")],
        projects=[P],
        running=running_jobs,
        pending=[blocked],
        now=NOW,
    )
    assert admitted_ids(result) == []
    [reservation] = result.reservations
    assert (reservation.job_id, reservation.start) == ("blocked", start)
    assert sorted(reservation.pieces) == sorted(pieces)
    assert result.reason_for(blocked.build()).est_start == start


def test_short_job_may_use_reserved_gpus():
    short = job("short").gpus(4).submitted(5).runtime(500)  # ends at 600 < 1000
    result = plan_of(
        nodes=[node("n1")],
        projects=[P],
        running=[busy("r1", "n1", 4, ends=1000)],
        pending=[BIG, short],
        now=NOW,
    )
    assert admitted_ids(result) == ["short"]
    assert pieces_of(result, "short") == (("n1", 4),)
    assert reason_code(result, BIG) is ReasonCode.RESERVED


@pytest.mark.parametrize(
    "runtime",
    [pytest.param(900, id="ends-exactly-at-the-reservation"), pytest.param(899, id="ends-before")],
)
def test_short_job_boundary(runtime):
    short = job("short").gpus(4).submitted(5).runtime(runtime)
    result = plan_of(
        nodes=[node("n1")],
        projects=[P],
        running=[busy("r1", "n1", 4, ends=1000)],
        pending=[BIG, short],
        now=NOW,
    )
    assert admitted_ids(result) == ["short"]


@pytest.mark.parametrize(
    "owner",
    [
        pytest.param("p", id="same-project-as-the-reserved-job"),
        pytest.param("q", id="another-project"),
    ],
)
def test_long_job_may_not_use_reserved_gpus(owner):
    long = job("long").project(owner).gpus(4).submitted(5).runtime(5000)
    result = plan_of(
        nodes=[node("n1")],
        projects=[P, project("q").quota("H100", guaranteed=0, limit=64).usage(1e9)],
        running=[busy("r1", "n1", 4, ends=1000)],
        pending=[BIG, long],
        now=NOW,
    )
    assert admitted_ids(result) == []
    reason = result.reason_for(long.build())
    assert reason.code is ReasonCode.BACKFILL
    assert "big" in reason.message


def test_long_job_may_use_gpus_the_reservation_does_not_need():
    # big needs 6 of n1's 8 at t=1000: 2 of the 4 free now are spare even then.
    big6 = job("big").gpus(6).submitted(0)
    wants4 = job("wants4").gpus(4).submitted(5).runtime(5000)
    fits = job("fits").gpus(2).submitted(6).runtime(5000)
    result = plan_of(
        nodes=[node("n1")],
        projects=[P],
        running=[busy("r1", "n1", 4, ends=1000)],
        pending=[big6, wants4, fits],
        now=NOW,
    )
    assert admitted_ids(result) == ["fits"]
    assert pieces_of(result, "fits") == (("n1", 2),)
    assert reason_code(result, wants4) is ReasonCode.BACKFILL


def test_long_job_on_other_nodes_is_not_held_back():
    long = job("long").gpus(4).submitted(5).runtime(5000)
    result = plan_of(
        nodes=[node("n1"), node("n2")],
        projects=[P],
        running=[busy("r1", "n1", 4, ends=1000), busy("r2", "n2", 4, ends=9000)],
        pending=[BIG, long],
        now=NOW,
    )
    assert admitted_ids(result) == ["long"]
    assert pieces_of(result, "long") == (("n2", 4),)
    assert [r.job_id for r in result.reservations] == ["big"]


def test_only_the_first_blocked_job_of_a_flavor_reserves():
    second = job("second").gpus(8).submitted(1)
    result = plan_of(
        nodes=[node("n1")],
        projects=[P],
        running=[busy("r1", "n1", 4, ends=1000)],
        pending=[BIG, second],
        now=NOW,
    )
    assert [r.job_id for r in result.reservations] == ["big"]
    assert reason_code(result, second) in {ReasonCode.BACKFILL, ReasonCode.CAPACITY}


def test_each_flavor_has_its_own_reservation():
    result = plan_of(
        nodes=[node("h1"), node("a1").gpus(8, "A100")],
        projects=[P],
        running=[busy("rh", "h1", 4, ends=1000), busy("ra", "a1", 4, ends=2000, flavor="A100")],
        pending=[BIG, job("big-a").flavor("A100").gpus(8).submitted(1)],
        now=NOW,
    )
    assert sorted((r.job_id, r.flavor, r.start) for r in result.reservations) == [
        ("big", "H100", 1000),
        ("big-a", "A100", 2000),
    ]


def test_without_backfill_there_is_no_reservation():
    long = job("long").gpus(4).submitted(5).runtime(5000)
    result = plan_of(
        nodes=[node("n1")],
        projects=[P],
        running=[busy("r1", "n1", 4, ends=1000)],
        pending=[BIG, long],
        policy=Policy.gpupool(backfill=False),
        now=NOW,
    )
    assert result.reservations == []
    assert admitted_ids(result) == ["long"]
    assert reason_code(result, BIG) is ReasonCode.CAPACITY


def test_reserved_gpus_are_free_again_after_the_cycle():
    # The hold is only for this cycle's decisions: the plan's admissions never count it.
    result = plan_of(
        nodes=[node("n1")],
        projects=[P],
        running=[busy("r1", "n1", 4, ends=1000)],
        pending=[BIG],
        now=NOW,
    )
    assert result.admissions == []
    assert len(result.reservations) == 1


@pytest.mark.parametrize(
    ("estimate", "start"),
    [
        pytest.param(None, 1000, id="no-estimate-its-limit"),
        pytest.param(300, 300, id="expected-back-at-its-estimate"),
        pytest.param(50, 1000, id="past-its-estimate-taken-to-its-limit"),
    ],
)
def test_reservations_use_run_time_estimates(estimate, start):
    runner = busy("r1", "n1", 4, ends=1000)
    if estimate is not None:
        runner = runner.estimate(estimate)
    result = plan_of(nodes=[node("n1")], projects=[P], running=[runner], pending=[BIG], now=NOW)
    assert [r.start for r in result.reservations] == [start]


@pytest.mark.parametrize(
    ("estimate", "backfilled"),
    [
        pytest.param(None, [], id="its-limit-would-delay-the-reservation"),
        pytest.param(200, ["short"], id="its-estimate-ends-before-it"),
    ],
)
def test_backfill_judges_a_job_by_its_estimate(estimate, backfilled):
    short = job("short").gpus(4).submitted(1).runtime(5000)
    if estimate is not None:
        short = short.estimate(estimate)
    result = plan_of(
        nodes=[node("n1")],
        projects=[P],
        running=[busy("r1", "n1", 4, ends=1000).estimate(500)],
        pending=[BIG, short],
        now=NOW,
    )
    assert admitted_ids(result) == backfilled
