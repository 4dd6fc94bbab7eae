"""Small fluent builders for the frozen dataclasses of scheduler.core.types.

    node("n1").gpus(8, "H100").group("r1")
    project("p").sector("research").quota("H100", guaranteed=8, limit=16).credits(100)
    job("j").gpus(4).project("p").flavor("H100").submitted(10).runtime(3600).priority(1)
    running("r").project("p").on("n1", 4).started(0).runtime(100)
    snapshot(nodes=[...], projects=[...], pending=[...], running=[...])

Every builder is immutable (each call returns a new builder), so a base can be shared:
`big = job("big").gpus(8)` then `big.priority(2)` leaves `big` as it was. `snapshot()` and
`plan_of()` accept builders or built values alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any, Generic, TypeVar

from scheduler.core import (
    FlavorQuota,
    Job,
    Node,
    NodeState,
    Plan,
    Policy,
    Project,
    ReasonCode,
    Running,
    Sector,
    Snapshot,
    plan,
)

T = TypeVar("T")

HOUR = 3600.0


class _Builder(Generic[T]):
    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def _with(self, **changes: Any) -> Any:
        return type(self)(replace(self.value, **changes))  # type: ignore[type-var]

    def build(self) -> T:
        return self.value


class NodeBuilder(_Builder[Node]):
    def gpus(self, n: int, flavor: str | None = None) -> NodeBuilder:
        if flavor is None:
            return self._with(gpus=n)
        return self._with(gpus=n, flavor=flavor)

    def flavor(self, flavor: str) -> NodeBuilder:
        return self._with(flavor=flavor)

    def group(self, group: str) -> NodeBuilder:
        return self._with(group=group)

    def state(self, state: NodeState) -> NodeBuilder:
        return self._with(state=state)

    def draining(self) -> NodeBuilder:
        return self.state(NodeState.DRAINING)

    def down(self) -> NodeBuilder:
        return self.state(NodeState.DOWN)


class SectorBuilder(_Builder[Sector]):
    def weight(self, weight: float) -> SectorBuilder:
        return self._with(weight=weight)


class ProjectBuilder(_Builder[Project]):
    def sector(self, sector: str) -> ProjectBuilder:
        return self._with(sector=sector)

    def quota(
        self, flavor: str, guaranteed: int, limit: int | None = None, rate: float = 1.0
    ) -> ProjectBuilder:
        """`rate`: credits per GPU-hour on this flavor."""
        quotas = dict(self.value.quotas)
        quotas[flavor] = FlavorQuota(guaranteed, guaranteed if limit is None else limit, rate)
        return self._with(quotas=quotas)

    def credits(self, credits_left: float | None) -> ProjectBuilder:
        return self._with(credits_left=credits_left)

    def share(self, share: float | None) -> ProjectBuilder:
        return self._with(share=share)

    def usage(self, gpu_s: float, at: float = 0.0) -> ProjectBuilder:
        return self._with(usage_gpu_s=gpu_s, usage_at=at)


class JobBuilder(_Builder[Job]):
    def gpus(self, n: int) -> JobBuilder:
        return self._with(gpus=n)

    def project(self, name: str) -> JobBuilder:
        return self._with(project=name)

    def flavor(self, flavor: str) -> JobBuilder:
        return self._with(flavor=flavor)

    def submitted(self, t: float) -> JobBuilder:
        return self._with(submit_time=t)

    def runtime(self, seconds: float) -> JobBuilder:
        return self._with(max_runtime=seconds)

    def estimate(self, seconds: float) -> JobBuilder:
        return self._with(estimate=seconds)

    def priority(self, p: int) -> JobBuilder:
        return self._with(priority=p)

    def nodes(self, n: int | None) -> JobBuilder:
        return self._with(nodes=n)

    def user(self, user: str) -> JobBuilder:
        return self._with(user=user)


class RunningBuilder(_Builder[Running]):
    def project(self, name: str) -> RunningBuilder:
        return self._with(project=name)

    def flavor(self, flavor: str) -> RunningBuilder:
        return self._with(flavor=flavor)

    def on(self, node_name: str, gpus: int) -> RunningBuilder:
        return self._with(pieces=(*self.value.pieces, (node_name, gpus)))

    def started(self, t: float) -> RunningBuilder:
        return self._with(start=t)

    def runtime(self, seconds: float) -> RunningBuilder:
        return self._with(max_runtime=seconds)

    def estimate(self, seconds: float) -> RunningBuilder:
        return self._with(estimate=seconds)

    def priority(self, p: int) -> RunningBuilder:
        return self._with(priority=p)

    def stopping(self, at: float, for_job: str | None = None) -> RunningBuilder:
        """Preempted: its GPUs are free at `at`, for the waiting job `for_job`."""
        return self._with(stopping_at=at, preempted_for=for_job)


def node(name: str) -> NodeBuilder:
    """An up node of 8 H100 GPUs unless told otherwise."""
    return NodeBuilder(Node(name=name, flavor="H100", gpus=8))


def sector(name: str) -> SectorBuilder:
    return SectorBuilder(Sector(name))


def project(name: str) -> ProjectBuilder:
    """A project of sector "research" without quotas and without a credit budget."""
    return ProjectBuilder(Project(name=name, sector="research"))


def job(job_id: str) -> JobBuilder:
    """One H100 GPU for an hour, project "p", submitted at 0."""
    return JobBuilder(
        Job(id=job_id, project="p", gpus=1, flavor="H100", submit_time=0.0, max_runtime=HOUR)
    )


def running(job_id: str) -> RunningBuilder:
    """An H100 job of project "p" started at 0 for an hour, with no pieces yet (use .on())."""
    return RunningBuilder(
        Running(job_id=job_id, project="p", flavor="H100", pieces=(), start=0.0, max_runtime=HOUR)
    )


def built(item: Any) -> Any:
    return item.build() if isinstance(item, _Builder) else item


def snapshot(
    nodes: Iterable[Any] = (),
    projects: Iterable[Any] = (),
    pending: Iterable[Any] = (),
    running: Iterable[Any] = (),
    sectors: Iterable[Any] = (),
) -> Snapshot:
    return Snapshot(
        nodes=tuple(built(n) for n in nodes),
        sectors=tuple(built(s) for s in sectors),
        projects=tuple(built(p) for p in projects),
        pending=tuple(built(j) for j in pending),
        running=tuple(built(r) for r in running),
    )


def plan_of(
    nodes: Iterable[Any] = (),
    projects: Iterable[Any] = (),
    pending: Iterable[Any] = (),
    running: Iterable[Any] = (),
    sectors: Iterable[Any] = (),
    policy: Policy | None = None,
    now: float = 0.0,
) -> Plan:
    """plan() over snapshot(...) with the default policy at time 0 unless told otherwise."""
    snap = snapshot(nodes, projects, pending, running, sectors)
    return plan(snap, policy or Policy.gpupool(), now)


# -- reading a plan -----------------------------------------------------------------------


def admitted_ids(p: Plan) -> list[str]:
    """Admitted job ids in the order the plan admitted them."""
    return [a.job_id for a in p.admissions]


def admission(p: Plan, job_id: str) -> Any:
    found = [a for a in p.admissions if a.job_id == job_id]
    assert found, f"{job_id} was not admitted; admitted: {admitted_ids(p)}"
    return found[0]


def pieces_of(p: Plan, job_id: str) -> tuple[tuple[str, int], ...]:
    return admission(p, job_id).pieces


def preempted_ids(p: Plan) -> list[str]:
    return [x.job_id for x in p.preemptions]


def reason_code(p: Plan, pending_job: Any) -> ReasonCode | None:
    reason = p.reason_for(built(pending_job))
    return None if reason is None else reason.code


# -- between cycles -----------------------------------------------------------------------


def assumed(
    snap: Snapshot, result: Plan, finished: Iterable[str] = (), added: Iterable[Any] = ()
) -> Snapshot:
    """The snapshot a fresh plan would see after `result` was carried out, the `finished`
    jobs ended and the `added` jobs arrived: admissions run, preempted jobs are stopping,
    reserved jobs keep their reservations."""
    gone = set(finished)
    jobs = {j.id: j for j in snap.pending}
    admitted = [
        Running(
            job_id=a.job_id,
            project=jobs[a.job_id].project,
            flavor=a.flavor,
            pieces=a.pieces,
            start=result.now,
            max_runtime=jobs[a.job_id].max_runtime,
            priority=jobs[a.job_id].priority,
        )
        for a in result.admissions
    ]
    stopping = {p.job_id: p for p in result.preemptions}
    runs = []
    for r in (*snap.running, *admitted):
        if r.job_id in gone:
            continue
        p = stopping.get(r.job_id)
        runs.append(r if p is None else replace(r, stopping_at=p.stop_at, preempted_for=p.for_job))
    decided = result.admitted | set(result.rejections)
    pending = tuple(j for j in snap.pending if j.id not in decided) + tuple(built(j) for j in added)
    waiting = {j.id for j in pending}
    return Snapshot(
        nodes=snap.nodes,
        sectors=snap.sectors,
        projects=snap.projects,
        pending=pending,
        running=tuple(runs),
        # A reservation is kept by the job that holds it, as the service records it.
        reserved=tuple((r.flavor, r.job_id) for r in result.reservations if r.job_id in waiting),
    )


def _by_job(items: list[Any]) -> list[Any]:
    return sorted(items, key=lambda x: x.job_id)


def same_actions(a: Plan, b: Plan) -> None:
    """The same admissions and preemptions, in any order."""
    assert _by_job(a.admissions) == _by_job(b.admissions)
    assert _by_job(a.preemptions) == _by_job(b.preemptions)


def same_explanations(a: Plan, b: Plan, pending: Iterable[Job]) -> None:
    """The same reservations (in any order), and for every pending job the same reason code
    and estimated start."""

    def codes(p: Plan) -> dict[str, Any]:
        reasons = {j.id: p.reason_for(j) for j in pending}
        return {k: r and (r.code, r.est_start) for k, r in reasons.items()}

    assert _by_job(a.reservations) == _by_job(b.reservations)
    assert codes(a) == codes(b)


def same_decisions(a: Plan, b: Plan, pending: Iterable[Job]) -> None:
    same_actions(a, b)
    same_explanations(a, b, list(pending))
