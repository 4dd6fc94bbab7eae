"""Project services below the API: credits, requests, and the seed's projects and PIs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from tests.web.conftest import POOL_TOML, START, unique
from web.db import write_session
from web.models import (
    Change,
    CreditChange,
    Membership,
    Project,
    ProjectCreate,
    ProjectState,
    Role,
)
from web.services import projects
from web.services.auth import Principal
from web.services.errors import Forbidden, Invalid
from web.services.seed import seed_pool

ADMIN = Principal("admin", Role.ADMIN)


@pytest.fixture(scope="module")
def seeded(module_engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    toml = tmp_path_factory.mktemp("seed") / "pool.toml"
    toml.write_text(POOL_TOML)
    with write_session(module_engine) as session:
        seed_pool(session, toml, START)
    return module_engine


@pytest.fixture
def session(seeded: Engine) -> Iterator[Session]:
    """A session whose work is thrown away after the test."""
    with Session(seeded, expire_on_commit=False) as session:
        try:
            yield session
        finally:
            session.rollback()


def a_project(session: Session, credits: float | None, used: float = 0.0) -> str:
    name = unique("budget")
    session.add(
        Project(
            name=name,
            title=name,
            sector="academia",
            pi="alice",
            state=ProjectState.ACTIVE.value,
            credits=credits,
            credits_used=used,
        )
    )
    session.flush()
    return name


def recorded(session: Session, name: str) -> list[Change]:
    query = select(Change).where(Change.subject == f"project:{name}").order_by(col(Change.id))
    return list(session.exec(query).all())


CREDIT_CHANGES = [
    # id, budget before, used, change, budget after (None: no budget enforced)
    ("grant", 1000.0, 0.0, {"amount": 250}, 1250.0),
    ("take-back", 1000.0, 0.0, {"amount": -400}, 600.0),
    ("take-back-to-what-was-used", 1000.0, 300.0, {"amount": -700}, 300.0),
    ("grant-when-unlimited", None, 0.0, {"amount": 100}, 100.0),
    ("set", 1000.0, 0.0, {"set_to": 50}, 50.0),
    ("set-to-zero", 1000.0, 0.0, {"set_to": 0}, 0.0),
    ("unlimited", 1000.0, 0.0, {"unlimited": True}, None),
]


@pytest.mark.parametrize(
    ("before", "used", "change", "after"),
    [pytest.param(*case[1:], id=case[0]) for case in CREDIT_CHANGES],
)
def test_credit_changes_are_applied_and_recorded_with_who_and_when(
    session: Session, before: float | None, used: float, change: dict[str, Any], after: float | None
) -> None:
    name = a_project(session, before, used)
    project = projects.change_credits(
        session, ADMIN, name, CreditChange(**change, note="board decision"), START + 5
    )
    session.flush()
    assert project.credits == after
    [entry] = recorded(session, name)
    assert (entry.actor, entry.at, entry.field, entry.note) == (
        "admin",
        START + 5,
        "credits",
        "board decision",
    )
    assert (entry.old, entry.new) == (
        "" if before is None else str(before),
        "" if after is None else str(after),
    )


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({}, "amount", "exactly one of amount, set_to or unlimited"),
        ({"amount": 5, "set_to": 5}, "amount", "exactly one of"),
        ({"amount": 5, "unlimited": True}, "amount", "exactly one of"),
        ({"set_to": 5, "unlimited": True}, "amount", "exactly one of"),
        ({"amount": -800}, "amount", "below the 300 already used"),
    ],
    ids=["none", "amount-and-set", "amount-and-unlimited", "set-and-unlimited", "below-used"],
)
def test_bad_credit_changes_change_nothing(
    session: Session, change: dict[str, Any], field: str, says: str
) -> None:
    name = a_project(session, 1000.0, used=300.0)
    with pytest.raises(Invalid) as refused:
        projects.change_credits(session, ADMIN, name, CreditChange(**change), START)
    assert (refused.value.field, says in refused.value.message) == (field, True)
    assert session.get(Project, name).credits == 1000.0  # type: ignore[union-attr]
    assert recorded(session, name) == []


def test_setting_credits_below_what_was_used_is_refused_like_taking_them_back(
    session: Session,
) -> None:
    name = a_project(session, 1000.0, used=300.0)
    with pytest.raises(Invalid) as refused:
        projects.change_credits(session, ADMIN, name, CreditChange(set_to=100), START)
    assert refused.value.field == "set_to"
    assert "below the 300 already used" in refused.value.message
    assert recorded(session, name) == []


@pytest.mark.parametrize("role", [Role.RESEARCHER, Role.OPERATOR])
def test_only_admins_change_credits(session: Session, role: Role) -> None:
    name = a_project(session, 1000.0)
    with pytest.raises(Forbidden):
        projects.change_credits(
            session, Principal("alice", role, {}), name, CreditChange(amount=1), START
        )


def test_a_requested_project_is_stored_with_its_pi_as_member(seeded: Engine) -> None:
    name = unique("asked")
    with write_session(seeded) as session:
        projects.request_project(
            session,
            Principal("bob", Role.RESEARCHER),
            ProjectCreate(name=name, title="T", sector="academia"),
            START,
        )
    with Session(seeded) as session:
        assert session.get(Project, name).state == "requested"  # type: ignore[union-attr]
        assert session.get(Membership, (name, "bob")).role == "pi"  # type: ignore[union-attr]


SEED_WITHOUT_PI = """
[[flavors]]
name = "H100"

[[node_groups]]
flavor = "H100"
count = 1
gpus = 8

[[sectors]]
name = "research"

[[projects]]
name = "orphan"
sector = "research"
quotas = { H100 = { guaranteed = 8, limit = 8 } }

[[users]]
name = "root"
role = "admin"
"""


def test_a_seeded_projects_pi_is_one_of_its_members(module_engine: Engine, tmp_path: Path) -> None:
    toml = tmp_path / "orphan.toml"
    toml.write_text(SEED_WITHOUT_PI)
    with write_session(module_engine) as session:
        seed_pool(session, toml, START)
    with Session(module_engine) as session:
        assert session.get(Project, "orphan").pi == "root"  # type: ignore[union-attr]
        member = session.get(Membership, ("orphan", "root"))
        assert member is not None and member.role == "pi"
