"""Property tests: the invariants of DESIGN.md over random small pools.

    no GPU allocated twice, no node over capacity, new work on up nodes only
    gang all-or-nothing
    no project over its limit (per flavor) after the plan
    preemptions hit only other projects' borrowers, down to their guarantee
    an in-quota job is never blocked by a borrower: it reclaims (or could not fit anyway)
    work-conserving: a job waiting for capacity could not have been placed
    every waiting job has a reason, and the reason is true
    deterministic: same snapshot, same plan, whatever the order it is given in

The checks below recompute everything from the snapshot and the plan with their own,
deliberately simple code: they do not trust the scheduler's indices.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

from hypothesis import example, given
from hypothesis import strategies as st

from scheduler.core import (
    ANY_FLAVOR,
    CreditsExhausted,
    Job,
    NodeState,
    Plan,
    Policy,
    ReasonCode,
    Snapshot,
    plan,
)

from .builders import job, node, project, running, snapshot
from .strategies import NOW, property_settings, snapshots

SETTINGS = property_settings(examples=150)

POLICIES = {
    "gpupool": Policy.gpupool(),
    "borrow-only": Policy.gpupool(credits_exhausted=CreditsExhausted.BORROW_ONLY),
    "static": Policy.static(),
    "fifo": Policy.fifo(),
}
policies = st.sampled_from(sorted(POLICIES)).map(POLICIES.__getitem__)

# Counterexamples found before (by these properties or by hand), kept as regressions.
BEHIND_A_BORROWING_HEAD = snapshot(  # an in-quota job queued behind its project's borrower
    nodes=[node("n1")],
    projects=[project("a").quota("H100", 4, 16), project("b").quota("H100", 0, 16)],
    running=[running("b1").project("b").on("n1", 8).runtime(10_000)],
    pending=[
        job("big").project("a").gpus(8).priority(1),
        job("small").project("a").gpus(4).submitted(1),
    ],
)
BEHIND_A_RESERVATION = snapshot(  # the reserved job's queue-mate only waits for it
    nodes=[node("n1")],
    projects=[project("p").quota("H100", 0, 64)],
    running=[running("r1").on("n1", 4).runtime(2 * NOW)],
    pending=[job("big").gpus(8), job("long").gpus(4).submitted(5).runtime(5 * NOW)],
)
ANY_FLAVOR_QUEUE = snapshot(  # the head may only use a full flavor; the next job fits another
    nodes=[node("a1").gpus(8, "A100"), node("h1")],
    projects=[project("p").quota("A100", 0, 4).quota("H100", 0, 16)],
    running=[running("rh").on("h1", 8)],
    pending=[
        job("head").flavor(ANY_FLAVOR).gpus(8).priority(1),
        job("small").flavor(ANY_FLAVOR).gpus(2),
    ],
)
ANY_FLAVOR_LIMITS = snapshot(  # the head is over both limits; the next job is not
    nodes=[node("a1").gpus(8, "A100"), node("h1")],
    projects=[project("p").quota("A100", 0, 4).quota("H100", 0, 8)],
    running=[running("ra").flavor("A100").on("a1", 4), running("rh").on("h1", 6)],
    pending=[
        job("head").flavor(ANY_FLAVOR).gpus(4).priority(1),
        job("small").flavor(ANY_FLAVOR).gpus(2),
    ],
)
SMALLER_GANG_AFTER_A_LARGER_ONE = snapshot(  # [4, 4] finds no victims; [4, 1] would
    nodes=[node("n0").gpus(2), node("n1").gpus(2), node("n2").gpus(4)],
    projects=[project("a").quota("H100", 8, 8), project("b").quota("H100", 0, 4)],
    running=[running("b1").project("b").on("n0", 2).on("n1", 2).runtime(10_000)],
    pending=[job("a-big").project("a").gpus(8), job("a-small").project("a").gpus(5).submitted(1)],
)
SHORT_OF_CREDITS = snapshot(  # 5 credits: one 4-GPU hour fits, the second does not
    nodes=[node("n1")],
    projects=[project("p").quota("H100", 0, 8).credits(5.0)],
    running=[running("r1").on("n1", 1).runtime(60).started(NOW - 30)],
    pending=[job("a").gpus(4), job("b").gpus(2).submitted(1), job("c").gpus(1).submitted(2)],
)
REGRESSIONS = [
    SHORT_OF_CREDITS,
    SMALLER_GANG_AFTER_A_LARGER_ONE,
    BEHIND_A_BORROWING_HEAD,
    BEHIND_A_RESERVATION,
    ANY_FLAVOR_QUEUE,
    ANY_FLAVOR_LIMITS,
]


def regressions(test):
    """Run `test` on every regression snapshot under the default policy, then at random."""
    for snap in REGRESSIONS:
        test = example(snap=snap, policy=POLICIES["gpupool"])(test)
    return test


# -- an independent model of the pool after a plan ------------------------------------------


@dataclass
class Allocation:
    job_id: str
    project: str
    flavor: str
    pieces: tuple[tuple[str, int], ...]
    start: float
    stopping: bool
    end: float  # when it must have ended: its limit, or its stop

    @property
    def gpus(self) -> int:
        return sum(n for _, n in self.pieces)


@dataclass
class After:
    """The pool once the plan's admissions and preemptions are applied."""

    snap: Snapshot
    result: Plan
    policy: Policy
    allocations: list[Allocation] = field(default_factory=list)

    def __post_init__(self) -> None:
        preempted = {p.job_id: p.stop_at for p in self.result.preemptions}
        for r in self.snap.running:
            self.allocations.append(
                Allocation(
                    r.job_id,
                    r.project,
                    r.flavor,
                    r.pieces,
                    r.start,
                    r.stopping_at is not None or r.job_id in preempted,
                    preempted.get(r.job_id, r.latest_end),
                )
            )
        jobs = {j.id: j for j in self.snap.pending}
        for a in self.result.admissions:
            j = jobs[a.job_id]
            self.allocations.append(
                Allocation(j.id, j.project, a.flavor, a.pieces, NOW, False, NOW + j.max_runtime)
            )
        self.nodes = {n.name: n for n in self.snap.nodes}
        self.projects = {p.name: p for p in self.snap.projects}
        self.used: dict[str, int] = defaultdict(int)
        self.held: dict[tuple[str, str], int] = defaultdict(int)
        for a in self.allocations:
            for name, n in a.pieces:
                self.used[name] += n
            self.held[(a.project, a.flavor)] += a.gpus

    # the pool

    def up_nodes(self, flavor: str) -> list[str]:
        return sorted(
            n.name for n in self.snap.nodes if n.flavor == flavor and n.state is NodeState.UP
        )

    def flavors(self) -> list[str]:
        return sorted({n.flavor for n in self.snap.nodes if n.state is NodeState.UP})

    def free(self, flavor: str) -> dict[str, int]:
        return {n: self.nodes[n].gpus - self.used[n] for n in self.up_nodes(flavor)}

    def sizes(self, j: Job, flavor: str) -> list[int]:
        largest = max(self.nodes[n].gpus for n in self.up_nodes(flavor))
        if j.nodes:
            return [j.gpus // j.nodes] * j.nodes
        whole, rest = divmod(j.gpus, largest)
        return [largest] * whole + ([rest] if rest else [])

    # quotas

    def quota(self, project: str, flavor: str) -> tuple[int, int]:
        p = self.projects.get(project)
        q = p.quotas.get(flavor) if p else None
        return (q.guaranteed, q.limit) if q else (0, 0)

    def ceiling(self, project: str, flavor: str) -> int:
        guaranteed, limit = self.quota(project, flavor)
        return limit if self.policy.borrowing else guaranteed

    # credits: a job commits GPUs x rate x its whole limit at admission

    def rate(self, project: str, flavor: str) -> float:
        p = self.projects.get(project)
        q = p.quotas.get(flavor) if p else None
        return q.credit_rate if q else 1.0

    def need(self, j: Job, flavor: str) -> float:
        return j.gpus * j.max_runtime / 3600.0 * self.rate(j.project, flavor)

    def budget(self, project: str) -> float | None:
        p = self.projects.get(project)
        return None if p is None else p.credits_left

    def committed(self, project: str, running: bool = True, admitted: bool = True) -> float:
        """Credits the project's jobs are committed to after the plan: the running ones up
        to their limit or stop, and (with `admitted`) the plan's admissions."""
        admissions = self.result.admitted
        return sum(
            a.gpus * (a.end - a.start) / 3600.0 * self.rate(project, a.flavor)
            for a in self.allocations
            if a.project == project
            and ((a.job_id in admissions and admitted) or (a.job_id not in admissions and running))
        )

    def committed_before(self, project: str) -> float:
        """What the snapshot's running jobs were committed to, before any preemption."""
        return sum(
            r.gpus * (r.latest_end - r.start) / 3600.0 * self.rate(project, r.flavor)
            for r in self.snap.running
            if r.project == project
        )

    def tolerance(self, project: str) -> float:
        return 1e-6 * max(1.0, abs(self.budget(project) or 0.0))

    def may_afford(self, j: Job, flavor: str) -> bool:
        """At some moment of the plan, might the project have paid for j on flavor?"""
        budget = self.budget(j.project)
        if budget is None:
            return True
        least = self.committed(j.project, admitted=False)
        return least + self.need(j, flavor) <= budget + self.tolerance(j.project)

    def surely_affords(self, j: Job, flavor: str) -> bool:
        """Could the project pay for j on flavor at every moment of the plan?"""
        budget = self.budget(j.project)
        if budget is None:
            return True
        most = self.committed_before(j.project) + self.committed(j.project, running=False)
        return most + self.need(j, flavor) <= budget - self.tolerance(j.project)

    def may_use(self, j: Job, flavor: str) -> bool:
        """Limits allow j on flavor, given what the project holds after the plan."""
        if not self.policy.enforce_quotas:
            return True
        if j.project not in self.projects:
            return False
        if not self.may_afford(j, flavor):
            return False
        return self.held[(j.project, flavor)] + j.gpus <= self.ceiling(j.project, flavor)

    def borrowed(self, flavor: str) -> list[Allocation]:
        """Allocations above their project's guarantee: newest first down to the guarantee.

        Stopping allocations are left out (their GPUs are on their way back already). This
        is the narrowest reading of "borrowed": any reclaim rule must allow these.
        """
        found = []
        by_project: dict[str, list[Allocation]] = defaultdict(list)
        for a in self.allocations:
            if a.flavor == flavor and not a.stopping:
                by_project[a.project].append(a)
        for owner, allocations in by_project.items():
            guaranteed, _ = self.quota(owner, flavor)
            total = 0
            for a in sorted(allocations, key=lambda a: (a.start, a.job_id)):
                total += a.gpus
                if total > guaranteed:  # it and everything older exceed the guarantee
                    found.append(a)
        return found

    def excess(self, project: str, flavor: str) -> int:
        """GPUs the project holds above its guarantee, not counting stopping jobs."""
        guaranteed, _ = self.quota(project, flavor)
        held = sum(
            a.gpus
            for a in self.allocations
            if (a.project, a.flavor) == (project, flavor) and not a.stopping
        )
        return held - guaranteed


def fits(free: dict[str, int], sizes: list[int]) -> bool:
    """Pieces on distinct nodes: largest piece to the tightest node that holds it (optimal)."""
    left = sorted(free.items(), key=lambda kv: (kv[1], kv[0]))
    for size in sorted(sizes, reverse=True):
        pick = next((i for i, (_, f) in enumerate(left) if f >= size), None)
        if pick is None:
            return False
        del left[pick]
    return True


def waiting(snap: Snapshot, result: Plan) -> list[Job]:
    """Pending jobs the plan neither admitted nor rejected."""
    decided = result.admitted | set(result.rejections)
    return [j for j in snap.pending if j.id not in decided]


# -- the invariants ----------------------------------------------------------------------------


@SETTINGS
@given(snap=snapshots(), policy=policies)
@regressions
def test_no_gpu_is_allocated_twice_and_no_node_is_over_capacity(snap, policy):
    result = plan(snap, policy, NOW)
    after = After(snap, result, policy)
    for name, used in after.used.items():
        assert used <= after.nodes[name].gpus, f"node {name} over capacity"
    for a in result.admissions:
        for name, n in a.pieces:
            assert after.nodes[name].state is NodeState.UP, f"{a.job_id} on {name}"
            assert after.nodes[name].flavor == a.flavor
            assert n > 0


@SETTINGS
@given(snap=snapshots(), policy=policies)
@regressions
def test_gangs_are_all_or_nothing(snap, policy):
    result = plan(snap, policy, NOW)
    jobs = {j.id: j for j in snap.pending}
    ids = [a.job_id for a in result.admissions]
    assert len(ids) == len(set(ids)) and set(ids) == result.admitted
    assert not result.admitted & set(result.rejections)
    for a in result.admissions:
        j = jobs[a.job_id]
        names = [name for name, _ in a.pieces]
        assert len(names) == len(set(names)), f"{j.id} has two pieces on one node"
        assert sum(n for _, n in a.pieces) == j.gpus
        assert j.flavor in (ANY_FLAVOR, a.flavor)
        if j.nodes:
            assert sorted(n for _, n in a.pieces) == [j.gpus // j.nodes] * j.nodes


@SETTINGS
@given(snap=snapshots(), policy=policies)
@regressions
def test_no_project_goes_over_its_limit(snap, policy):
    result = plan(snap, policy, NOW)
    after = After(snap, result, policy)
    jobs = {j.id: j for j in snap.pending}
    if not policy.enforce_quotas:
        return
    for a in result.admissions:
        owner = jobs[a.job_id].project
        assert owner in after.projects
        assert after.held[(owner, a.flavor)] <= after.ceiling(owner, a.flavor), (
            f"{owner} holds {after.held[(owner, a.flavor)]} {a.flavor} after the plan"
        )
    # Credits: the project can pay for the whole limit of what it was admitted (borrowing
    # last, under borrow_only, excepted) on top of what it is committed to.
    for owner in {jobs[a.job_id].project for a in result.admissions}:
        budget = after.budget(owner)
        if budget is None:
            continue
        paid = after.committed(owner, admitted=False) + sum(
            after.need(jobs[a.job_id], a.flavor)
            for a in result.admissions
            if jobs[a.job_id].project == owner
            and (policy.credits_exhausted is CreditsExhausted.BLOCK or not a.borrowed)
        )
        assert paid <= budget + after.tolerance(owner), (
            f"{owner} is committed to {paid} credits of its {budget} after the plan"
        )


@SETTINGS
@given(snap=snapshots(), policy=policies)
@regressions
def test_every_waiting_job_has_a_reason(snap, policy):
    result = plan(snap, policy, NOW)
    for j in snap.pending:
        reason = result.reason_for(j)
        if j.id in result.admitted:
            assert reason is None
        else:
            assert reason is not None, f"{j.id} waits without a reason"
            assert reason.message
    for reason in result.rejections.values():
        assert reason.code is ReasonCode.NEVER_FITS


@SETTINGS
@given(snap=snapshots(), policy=policies)
@regressions
def test_reasons_tell_the_truth(snap, policy):
    """A reason's code matches the facts the plan and the snapshot show."""
    result = plan(snap, policy, NOW)
    after = After(snap, result, policy)
    reserved = {r.job_id: r for r in result.reservations}
    reclaimed_for = {p.for_job for p in result.preemptions}
    for j in waiting(snap, result):
        reason = result.reason_for(j)
        flavors = after.flavors() if j.flavor == ANY_FLAVOR else [j.flavor]
        match reason.code:
            case ReasonCode.NEVER_FITS:
                raise AssertionError(f"{j.id}: NEVER_FITS but not among the rejections")
            case ReasonCode.PROJECT:
                assert policy.enforce_quotas and j.project not in after.projects
            case ReasonCode.CREDITS:
                assert policy.enforce_quotas
                assert policy.credits_exhausted is CreditsExhausted.BLOCK
                every = (
                    sorted({n.flavor for n in snap.nodes}) if j.flavor == ANY_FLAVOR else flavors
                )
                assert not any(after.surely_affords(j, f) for f in every), (
                    f"{j.id}: CREDITS ({reason.message!r}) but its project can pay for it"
                )
            case ReasonCode.OVER_LIMIT:
                assert policy.enforce_quotas
                within = [
                    f
                    for f in flavors
                    if after.held[(j.project, f)] + j.gpus <= after.ceiling(j.project, f)
                ]
                assert not within, f"{j.id}: OVER_LIMIT ({reason.message!r}) but {within} allow it"
            case ReasonCode.RECLAIMING:
                assert j.id in reclaimed_for, f"{j.id}: RECLAIMING but nothing is preempted for it"
            case ReasonCode.RESERVED:
                assert j.id in reserved, f"{j.id}: RESERVED without a reservation"
                assert reason.est_start == reserved[j.id].start
            case ReasonCode.BACKFILL:
                assert any(r.flavor in flavors for r in result.reservations), (
                    f"{j.id}: BACKFILL but no reservation of {flavors}"
                )
    for job_id in reserved:
        assert job_id not in result.admitted
        assert result.reason_for(next(j for j in snap.pending if j.id == job_id)).code is (
            ReasonCode.RESERVED
        )


@SETTINGS
@given(snap=snapshots(), policy=policies)
@regressions
def test_preemptions_only_hit_borrowers_of_other_projects(snap, policy):
    """Victims are other projects' jobs, taken down to their guarantee and no further.

    As in Kueue, the last victim of a project may straddle its guarantee: without it the
    project must still be above its guarantee.
    """
    result = plan(snap, policy, NOW)
    if not policy.reclaim:
        assert result.preemptions == []
        return
    before = After(snap, Plan(now=NOW), policy)
    running = {r.job_id: r for r in snap.running}
    jobs = {j.id: j for j in snap.pending}
    victims = [p.job_id for p in result.preemptions]
    assert len(victims) == len(set(victims))
    taken: dict[tuple[str, str], list[int]] = defaultdict(list)
    for p in result.preemptions:
        victim = running[p.job_id]
        assert victim.stopping_at is None, f"{p.job_id} was stopping already"
        assert victim.project != jobs[p.for_job].project
        assert p.stop_at == NOW + policy.grace_period_s
        assert p.for_job not in result.admitted
        assert result.reason_for(jobs[p.for_job]).code is ReasonCode.RECLAIMING
        taken[(victim.project, victim.flavor)].append(victim.gpus)
    for (owner, flavor), gpus in taken.items():
        excess = before.excess(owner, flavor)
        assert sum(gpus) - max(gpus) < excess, (
            f"{owner} was {excess} {flavor} GPUs above its guarantee; preempted {gpus}"
        )


@SETTINGS
@given(snap=snapshots())
@example(snap=BEHIND_A_BORROWING_HEAD)
@example(snap=SMALLER_GANG_AFTER_A_LARGER_ONE)
def test_an_in_quota_job_is_not_blocked_by_borrowers(snap):
    """If releasing other projects' borrowed GPUs would let an in-quota job fit, it reclaims."""
    policy = Policy.gpupool()
    result = plan(snap, policy, NOW)
    after = After(snap, result, policy)
    left = waiting(snap, result)

    def reason(j: Job) -> ReasonCode:
        return result.reason_for(j).code

    # The flavor each reclaiming job's victims free GPUs of (an any-flavor job claims one).
    running_flavor = {r.job_id: r.flavor for r in snap.running}
    claim_flavor = {p.for_job: running_flavor[p.job_id] for p in result.preemptions}
    claim_flavor.update(
        {r.preempted_for: r.flavor for r in snap.running if r.preempted_for is not None}
    )

    def in_quota(j: Job, flavor: str) -> bool:
        claimed = sum(
            k.gpus
            for k in left
            if k.id != j.id
            and k.project == j.project
            and claim_flavor.get(k.id, k.flavor) == flavor
            and reason(k) is ReasonCode.RECLAIMING
        )
        guaranteed, _ = after.quota(j.project, flavor)
        return after.held[(j.project, flavor)] + claimed + j.gpus <= guaranteed

    pending = {j.id: j for j in snap.pending}
    for j in left:
        f = j.flavor
        if f not in after.flavors() or not after.surely_affords(j, f):
            continue
        if not in_quota(j, f) or reason(j) is ReasonCode.RECLAIMING:
            continue
        if any(
            r.flavor == f and r.job_id != j.id and in_quota(pending[r.job_id], f)
            for r in result.reservations
        ):
            continue  # GPUs held for an earlier in-quota job
        released = after.free(f)
        original = {r.job_id for r in snap.running}
        for a in after.borrowed(f):
            if a.project != j.project and not a.stopping and a.job_id in original:
                for name, n in a.pieces:
                    if name in released:
                        released[name] += n
        assert not fits(released, after.sizes(j, f)), (
            f"{j.id} ({j.gpus} {f}, in quota) waits with {reason(j)}: "
            f"{result.reason_for(j).message!r} although borrowers hold the GPUs it needs"
        )


@SETTINGS
@given(snap=snapshots(), policy=policies)
@regressions
def test_work_conserving(snap, policy):
    """A job waiting for capacity could not start on what is free after the plan."""
    result = plan(snap, policy, NOW)
    after = After(snap, result, policy)
    for j in waiting(snap, result):
        reason = result.reason_for(j)
        if reason.code is not ReasonCode.CAPACITY:
            continue  # RESERVED, BACKFILL, RECLAIMING, limits: exempt
        flavors = after.flavors() if j.flavor == ANY_FLAVOR else [j.flavor]
        for f in flavors:
            if f in after.flavors() and after.may_use(j, f):
                assert not fits(after.free(f), after.sizes(j, f)), (
                    f"{j.id} ({j.gpus} {f}, nodes={j.nodes}) waits with "
                    f"{reason.message!r} but fits the free GPUs {after.free(f)}"
                )


@SETTINGS
@given(snap=snapshots(), policy=policies)
@regressions
def test_same_snapshot_same_plan(snap, policy):
    assert plan(snap, policy, NOW) == plan(snap, policy, NOW)


@SETTINGS
@given(snap=snapshots(), policy=policies, seed=st.integers(0, 2**32 - 1))
def test_order_of_the_snapshot_does_not_matter(snap, policy, seed):
    rng = random.Random(seed)

    def shuffled(items: tuple) -> tuple:
        items = list(items)
        rng.shuffle(items)
        return tuple(items)

    other = Snapshot(
        nodes=shuffled(snap.nodes),
        sectors=shuffled(snap.sectors),
        projects=shuffled(snap.projects),
        pending=shuffled(snap.pending),
        running=shuffled(snap.running),
    )
    a, b = plan(snap, policy, NOW), plan(other, policy, NOW)
    assert a.admissions == b.admissions
    assert a.preemptions == b.preemptions
    assert a.reservations == b.reservations
    assert {j.id: a.reason_for(j) for j in snap.pending} == {
        j.id: b.reason_for(j) for j in snap.pending
    }
