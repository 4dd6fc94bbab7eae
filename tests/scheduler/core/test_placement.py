"""Placement: best fit for one-node jobs, fewest whole nodes in one group for gangs."""

from __future__ import annotations

import pytest

from scheduler.core import ANY_FLAVOR, NodeState, Policy
from scheduler.core.placement import FlavorPool, gang_sizes

from .builders import (
    admitted_ids,
    job,
    node,
    pieces_of,
    plan_of,
    project,
    running,
)

ROOMY = project("p").quota("H100", guaranteed=64, limit=64).quota("A100", 64, 64)


def pool(*nodes, used=()):
    """A FlavorPool over built nodes, with (node, GPUs) already taken."""
    p = FlavorPool("H100", [n.build() for n in nodes])
    p.take(used)
    return p


# -- gang_sizes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpus", "nodes", "node_gpus", "expected"),
    [
        pytest.param(4, None, 8, [4], id="fits-one-node"),
        pytest.param(8, None, 8, [8], id="exactly-one-node"),
        pytest.param(16, None, 8, [8, 8], id="two-whole-nodes"),
        pytest.param(20, None, 8, [8, 8, 4], id="whole-nodes-plus-rest"),
        pytest.param(8, 2, 8, [4, 4], id="asked-for-two-nodes"),
        pytest.param(12, 3, 8, [4, 4, 4], id="asked-for-three-nodes"),
        pytest.param(2, 1, 8, [2], id="asked-for-one-node"),
    ],
)
def test_gang_sizes(gpus, nodes, node_gpus, expected):
    assert gang_sizes(gpus, nodes, node_gpus) == expected


# -- FlavorPool ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("used", "gpus", "expected"),
    [
        pytest.param([], 3, "n1", id="all-empty-first-by-name"),
        pytest.param([("n2", 4)], 3, "n2", id="least-free-that-fits"),
        pytest.param([("n2", 4)], 4, "n2", id="exact-fit"),
        pytest.param([("n2", 4)], 5, "n1", id="skips-too-small"),
        pytest.param([("n1", 6), ("n2", 4), ("n3", 5)], 2, "n1", id="tightest-of-three"),
        pytest.param([("n1", 5), ("n3", 5)], 3, "n1", id="tie-goes-to-name-order"),
    ],
)
def test_best_fit_single_node(used, gpus, expected):
    p = pool(node("n1"), node("n2"), node("n3"), used=used)
    assert p.place([gpus]) == ((expected, gpus),)


def test_place_does_not_take():
    p = pool(node("n1"), node("n2"))
    p.place([8, 8])
    assert p.free == [8, 8]
    assert p.total_free == 16


def test_take_and_give_balance():
    p = pool(node("n1"), node("n2"))
    p.take([("n1", 3), ("n2", 8)])
    assert (p.free, p.total_free, p.max_free()) == ([5, 0], 5, 5)
    p.give([("n2", 8), ("gone", 4)])  # a node that left the pool frees nothing
    assert (p.free, p.total_free, p.max_free()) == ([5, 8], 13, 8)


def test_over_taking_a_node_is_an_error():
    p = pool(node("n1"))
    with pytest.raises(ValueError, match="n1"):
        p.take([("n1", 9)])


def test_no_single_node_fits_a_fragmented_pool():
    # 4 GPUs free in total, but 2 on each node: a 4-GPU job is one piece and waits.
    p = pool(node("n1"), node("n2"), used=[("n1", 6), ("n2", 6)])
    assert p.place([4]) is None


def test_gang_prefers_one_topology_group():
    p = pool(node("a1").group("r1"), node("a2").group("r2"), node("a3").group("r2"))
    placed = p.place([8, 8])
    assert sorted(placed) == [("a2", 8), ("a3", 8)]


def test_gang_prefers_the_tightest_group():
    p = pool(
        node("a1").group("r1"),
        node("a2").group("r1"),
        node("b1").group("r2"),
        node("b2").group("r2"),
        node("b3").group("r2"),
    )
    assert sorted(p.place([8, 8])) == [("a1", 8), ("a2", 8)]


def test_gang_spans_groups_when_no_group_can_hold_it():
    p = pool(node("a1").group("r1"), node("b1").group("r2"))
    assert sorted(p.place([8, 8])) == [("a1", 8), ("b1", 8)]


def test_gang_is_all_or_nothing():
    p = pool(node("n1"), node("n2"), node("n3"), used=[("n2", 1), ("n3", 1)])
    assert p.place([8, 8]) is None


def test_gang_pieces_go_to_distinct_best_fitting_nodes():
    p = pool(node("n1"), node("n2"), node("n3"), used=[("n2", 4), ("n3", 3)])
    placed = p.place([4, 4])
    assert sorted(placed) == [("n2", 4), ("n3", 4)]


# -- placement through plan() -------------------------------------------------------------


def test_best_fit_keeps_a_whole_node_free_for_a_large_job():
    result = plan_of(
        nodes=[node("n1"), node("n2")],
        projects=[ROOMY],
        running=[running("r").on("n1", 2)],
        pending=[job("small").gpus(4).submitted(0), job("whole").gpus(8).submitted(1)],
    )
    assert pieces_of(result, "small") == (("n1", 4),)
    assert pieces_of(result, "whole") == (("n2", 8),)


def test_running_jobs_gpus_are_not_handed_out_again():
    result = plan_of(
        nodes=[node("n1"), node("n2")],
        projects=[ROOMY],
        running=[running("r").on("n1", 6)],
        pending=[job("j").gpus(4)],
    )
    assert pieces_of(result, "j") == (("n2", 4),)


def test_large_job_takes_the_fewest_whole_nodes():
    result = plan_of(
        nodes=[node("n1"), node("n2"), node("n3")],
        projects=[ROOMY],
        running=[running("r").on("n2", 1)],
        pending=[job("big").gpus(16)],
    )
    assert sorted(pieces_of(result, "big")) == [("n1", 8), ("n3", 8)]


def test_large_job_stays_in_one_group():
    result = plan_of(
        nodes=[node("a").group("r1"), node("b").group("r2"), node("c").group("r2")],
        projects=[ROOMY],
        pending=[job("big").gpus(16)],
    )
    assert sorted(pieces_of(result, "big")) == [("b", 8), ("c", 8)]


def test_job_with_node_count_is_spread_evenly():
    result = plan_of(
        nodes=[node("n1"), node("n2"), node("n3")],
        projects=[ROOMY],
        pending=[job("spread").gpus(6).nodes(3)],
    )
    pieces = pieces_of(result, "spread")
    assert sorted(pieces) == [("n1", 2), ("n2", 2), ("n3", 2)]


def test_gang_that_does_not_fit_takes_nothing():
    result = plan_of(
        nodes=[node("n1"), node("n2")],
        projects=[ROOMY],
        running=[running("r").on("n2", 1)],
        pending=[job("big").gpus(16)],
        policy=Policy.gpupool(backfill=False),
    )
    assert admitted_ids(result) == []


@pytest.mark.parametrize("state", [NodeState.DOWN, NodeState.DRAINING], ids=str)
def test_only_up_nodes_take_new_jobs(state):
    result = plan_of(
        nodes=[node("n1").state(state), node("n2").gpus(4)],
        projects=[ROOMY],
        pending=[job("a").gpus(4).submitted(0), job("b").gpus(4).submitted(1)],
    )
    assert admitted_ids(result) == ["a"]
    assert pieces_of(result, "a") == (("n2", 4),)
    assert result.reason_for(job("b").gpus(4).submitted(1).build()) is not None


@pytest.mark.parametrize("state", [NodeState.DOWN, NodeState.DRAINING], ids=str)
def test_a_flavor_whose_nodes_are_all_unavailable_makes_its_jobs_wait(state):
    # The job is not rejected (the nodes may come back) and the cycle must not fail.
    result = plan_of(
        nodes=[node("n1").state(state), node("a1").gpus(8, "A100")],
        projects=[ROOMY],
        pending=[job("j").gpus(4), job("other").flavor("A100").gpus(4)],
    )
    assert admitted_ids(result) == ["other"]
    reason = result.reason_for(job("j").gpus(4).build())
    assert reason is not None
    assert reason.message


def test_jobs_go_to_their_own_flavor():
    result = plan_of(
        nodes=[node("a").gpus(8, "A100"), node("h").gpus(8, "H100")],
        projects=[ROOMY],
        pending=[job("ja").flavor("A100").gpus(2), job("jh").flavor("H100").gpus(2)],
    )
    assert {a.job_id: a.flavor for a in result.admissions} == {"ja": "A100", "jh": "H100"}
    assert {a.job_id: a.pieces for a in result.admissions} == {
        "ja": (("a", 2),),
        "jh": (("h", 2),),
    }


def test_any_flavor_job_runs_where_there_is_room():
    result = plan_of(
        nodes=[node("a").gpus(8, "A100"), node("h").gpus(8, "H100")],
        projects=[ROOMY],
        running=[running("r").on("a", 8).flavor("A100")],
        pending=[job("any").flavor(ANY_FLAVOR).gpus(4)],
    )
    assert result.admissions[0].flavor == "H100"
    assert pieces_of(result, "any") == (("h", 4),)


def test_node_order_in_the_snapshot_does_not_matter():
    nodes = [node("n3"), node("n1"), node("n2")]
    forward = plan_of(nodes=nodes, projects=[ROOMY], pending=[job("j").gpus(2)])
    backward = plan_of(nodes=nodes[::-1], projects=[ROOMY], pending=[job("j").gpus(2)])
    assert pieces_of(forward, "j") == pieces_of(backward, "j") == (("n1", 2),)
