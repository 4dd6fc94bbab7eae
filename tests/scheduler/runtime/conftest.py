"""The live loop over the real database: a clock the test moves, rows seeded directly with
the models, and a harness wiring DbSnapshotSource, DbDecisionSink, the in-process dispatcher
and SchedulingLoop the way web.pool does.

    rows.pool(nodes=2)                                  # flavor H100, sector, two 8-GPU nodes
    rows.project("a", guaranteed=8, limit=16)           # active, with user "a-user" as a member
    a1 = rows.job("a", gpus=4)                          # queued, submitted now, 1 h limit
    live.tick()                                         # one loop tick, no threads
    rows.get(a1).state, rows.open_allocations(a1)

Everything runs on both backends through the `engine` fixture (tests/conftest.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import Engine, event, select
from sqlmodel import Session, col

from scheduler.core import Policy
from scheduler.runtime.fake import InProcessDispatcher
from scheduler.runtime.loop import SchedulingLoop, TickReport
from scheduler.runtime.ports import Dispatcher, DispatchError, StartOrder
from tests.conftest import CLOCK_START, ManualClock
from web.db import write_session
from web.models import (
    Allocation,
    Attempt,
    Flavor,
    Job,
    JobState,
    MemberRole,
    Membership,
    Node,
    Project,
    ProjectState,
    Quota,
    Role,
    Sector,
    User,
)
from web.services.auth import Principal
from web.services.scheduling import DbDecisionSink, DbSnapshotSource

T0 = CLOCK_START  # the clock's start
GRACE = 120.0  # preemption and cancel grace period, as Settings.grace_period_s
HOUR = 3600.0


class AlwaysLeader:
    """A Leadership that always leads (tick tests have one loop)."""

    def try_acquire(self) -> bool:
        return True

    def held(self) -> bool:
        return True

    def release(self) -> None:
        pass


# --- rows ----------------------------------------------------------------------------------


class PoolRows:
    """Small builders for the rows a scheduling test needs, and readers for what it checks.
    Each call is its own committed transaction, as a request to the API would be."""

    def __init__(self, engine: Engine, clock: ManualClock) -> None:
        self.engine, self.clock = engine, clock

    def _add(self, *items: Any) -> None:
        with write_session(self.engine) as s:
            for item in items:
                s.add(item)
                s.flush()

    def pool(self, nodes: int = 2, gpus: int = 8, flavor: str = "H100") -> None:
        """A flavor, the sector "research" and `nodes` nodes h1, h2, ... of `gpus` GPUs."""
        self._add(Flavor(name=flavor), Sector(name="research"))
        for i in range(1, nodes + 1):
            self.node(f"h{i}", gpus, flavor)

    def node(self, name: str, gpus: int = 8, flavor: str = "H100", group: str = "") -> None:
        self._add(
            Node(name=name, flavor=flavor, gpus=gpus, group=group, registered_at=self.clock.now())
        )

    def project(
        self,
        name: str,
        guaranteed: int = 8,
        limit: int | None = None,
        flavor: str = "H100",
        state: ProjectState = ProjectState.ACTIVE,
        credits: float | None = None,
        sector: str = "research",
    ) -> str:
        """A project with one quota and one member, "<name>-user" (its PI)."""
        user = f"{name}-user"
        self._add(User(name=user, role=Role.RESEARCHER.value, created_at=self.clock.now()))
        self._add(
            Project(
                name=name,
                title=name,
                sector=sector,
                state=state.value,
                pi=user,
                credits=credits,
                created_at=self.clock.now(),
            )
        )
        self._add(
            Quota(
                project=name,
                flavor=flavor,
                guaranteed=guaranteed,
                limit=guaranteed if limit is None else limit,
            ),
            Membership(project=name, user=user, role=MemberRole.PI.value),
        )
        return user

    def job(
        self,
        project: str,
        gpus: int = 1,
        flavor: str = "H100",
        runtime: float = HOUR,
        nodes: int | None = None,
        priority: int = 0,
        submitted: float | None = None,
        runtime_env: dict[str, Any] | None = None,
    ) -> int:
        """A queued job of the project's user; its id."""
        row = Job(
            project=project,
            user=f"{project}-user",
            entrypoint=f"python train.py --gpus {gpus}",
            runtime_env=runtime_env or {},
            gpus=gpus,
            flavor=flavor,
            nodes=nodes,
            max_runtime_s=runtime,
            priority=priority,
            state=JobState.QUEUED.value,
            submitted_at=self.clock.now() if submitted is None else submitted,
        )
        with write_session(self.engine) as s:
            s.add(row)
            s.flush()
            assert row.id is not None
            return row.id

    def principal(self, project: str) -> Principal:
        return Principal(f"{project}-user", Role.RESEARCHER, {project: MemberRole.PI})

    # -- reading -------------------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        with Session(self.engine) as s:
            row = s.get(Job, job_id)
            assert row is not None
            return row

    def node_state(self, name: str) -> tuple[str, str]:
        """The node's state and the reason for it."""
        with Session(self.engine) as s:
            row = s.get(Node, name)
            assert row is not None
            return row.state, row.state_reason

    def project_row(self, name: str) -> Project:
        with Session(self.engine) as s:
            row = s.get(Project, name)
            assert row is not None
            return row

    def allocations(self, job_id: int, attempt: int | None = None) -> list[Allocation]:
        with Session(self.engine) as s:
            q = select(Allocation).where(col(Allocation.job_id) == job_id)
            if attempt is not None:
                q = q.where(col(Allocation.attempt) == attempt)
            return list(s.execute(q.order_by(col(Allocation.id))).scalars())

    def open_allocations(self, job_id: int | None = None) -> list[Allocation]:
        with Session(self.engine) as s:
            q = select(Allocation).where(col(Allocation.end).is_(None))
            if job_id is not None:
                q = q.where(col(Allocation.job_id) == job_id)
            return list(s.execute(q.order_by(col(Allocation.id))).scalars())

    def attempts(self, job_id: int) -> list[Attempt]:
        with Session(self.engine) as s:
            q = select(Attempt).where(col(Attempt.job_id) == job_id)
            return list(s.execute(q.order_by(col(Attempt.number))).scalars())

    def states(self) -> dict[int, str]:
        with Session(self.engine) as s:
            return {j.id: j.state for j in s.execute(select(Job)).scalars()}  # type: ignore[misc]


def pieces_of(allocations: list[Allocation]) -> set[tuple[str, int]]:
    return {(a.node, a.gpus) for a in allocations}


# --- the loop ------------------------------------------------------------------------------


@dataclass
class Live:
    """One scheduling loop over the test's database, ticked by hand."""

    engine: Engine
    clock: ManualClock
    policy: Policy
    dispatcher: InProcessDispatcher
    source: DbSnapshotSource
    sink: DbDecisionSink
    loop: SchedulingLoop
    refusals: list[StartOrder] = field(default_factory=list)

    def tick(self) -> TickReport:
        return self.loop.tick()

    def new_loop(self, dispatcher: Dispatcher | None = None) -> SchedulingLoop:
        """A fresh loop (a new leader): its own source and sink, the same database."""
        return SchedulingLoop(
            DbSnapshotSource(self.engine),
            DbDecisionSink(self.engine, GRACE, self.policy.half_life_s),
            dispatcher or self.dispatcher,
            self.clock,
            self.policy,
            AlwaysLeader(),
        )

    def refuse_with(self, decide: Callable[[StartOrder], DispatchError | None]) -> None:
        def refuse(order: StartOrder) -> DispatchError | None:
            error = decide(order)
            if error is not None:
                self.refusals.append(order)
            return error

        self.dispatcher.refuse = refuse


def make_live(engine: Engine, clock: ManualClock, dispatcher: InProcessDispatcher) -> Live:
    policy = Policy.gpupool(grace_period_s=GRACE)
    source = DbSnapshotSource(engine)
    sink = DbDecisionSink(engine, GRACE, policy.half_life_s)
    sink.claim("tests", clock.now())  # tests that record by hand lead, as the loop would
    loop = SchedulingLoop(source, sink, dispatcher, clock, policy, AlwaysLeader())
    return Live(engine, clock, policy, dispatcher, source, sink, loop)


@pytest.fixture
def manual_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def rows(engine: Engine, manual_clock: ManualClock) -> PoolRows:
    return PoolRows(engine, manual_clock)


@pytest.fixture
def live(engine: Engine, manual_clock: ManualClock) -> Live:
    return make_live(engine, manual_clock, InProcessDispatcher(manual_clock))


class StatementLog:
    """The SQL statements an engine runs while `recording` is set (executemany: one entry
    with all its parameter sets)."""

    def __init__(self) -> None:
        self.recording = False
        self.statements: list[tuple[str, list[Any]]] = []

    def __call__(self, conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: bool):
        if self.recording:
            sets = list(params) if many else [params]
            self.statements.append((" ".join(statement.split()), sets))

    def job_updates(self, column: str) -> list[Any]:
        """The parameter sets of UPDATEs of jobs that set `column`."""
        found: list[Any] = []
        for statement, sets in self.statements:
            head = statement.upper()
            sets_column = re.search(rf"\b{column.upper()}=", head.replace(" ", ""))
            if head.startswith("UPDATE JOBS SET") and sets_column:
                found += sets
        return found


@pytest.fixture
def statements(engine: Engine) -> Iterator[StatementLog]:
    log = StatementLog()
    event.listen(engine, "before_cursor_execute", log)
    try:
        yield log
    finally:
        event.remove(engine, "before_cursor_execute", log)
