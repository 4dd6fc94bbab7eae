"""Users and their roles (admins manage them; everyone may read themselves)."""

from __future__ import annotations

from sqlalchemy import ColumnElement, func, or_
from sqlmodel import Session, col, select

from web.models import Role, User, UserCreate, UserUpdate
from web.services.auth import Principal, end_sessions
from web.services.changes import record_change
from web.services.errors import Conflict, NotFound


def create_user(session: Session, asker: Principal, spec: UserCreate, now: float) -> User:
    asker.require(Role.ADMIN)
    if session.get(User, spec.name) is not None:
        raise Conflict(f"user {spec.name!r} exists already", field="name")
    user = User(**spec.model_dump(), created_at=now)
    user.role = spec.role.value
    session.add(user)
    record_change(session, asker.name, f"user:{spec.name}", "created", "", spec.role.value, now)
    return user


def get_user(session: Session, asker: Principal, name: str) -> User:
    if name != asker.name and not asker.reads_all:
        raise NotFound(f"no user {name!r}", field="user")
    user = session.get(User, name)
    if user is None:
        raise NotFound(f"no user {name!r}", field="user")
    return user


def list_users(session: Session, asker: Principal) -> list[User]:
    asker.require(Role.ADMIN, Role.OPERATOR)
    return list(session.exec(select(User).order_by(col(User.name))).all())


def page_users(
    session: Session,
    asker: Principal,
    role: Role | None = None,
    contains: str | None = None,
    active: bool | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[User], int]:
    """One page of users by name, filtered by role, activity and a piece of the name, full
    name or email; and how many match in all."""
    asker.require(Role.ADMIN, Role.OPERATOR)
    conditions: list[ColumnElement[bool]] = []
    if role is not None:
        conditions.append(col(User.role) == role.value)
    if active is not None:
        conditions.append(col(User.active) == active)
    if contains:
        piece = contains.lower()
        conditions.append(
            or_(
                col(User.name).contains(piece, autoescape=True),
                func.lower(col(User.full_name)).contains(piece, autoescape=True),
                func.lower(col(User.email)).contains(piece, autoescape=True),
            )
        )
    total = session.exec(select(func.count()).select_from(User).where(*conditions)).one()
    rows = session.exec(
        select(User).where(*conditions).order_by(col(User.name)).limit(limit).offset(offset)
    ).all()
    return list(rows), int(total)


def users_by_role(session: Session, asker: Principal) -> dict[str, int]:
    """How many active users have each role (one aggregate)."""
    asker.require(Role.ADMIN, Role.OPERATOR)
    rows = session.exec(
        select(User.role, func.count()).where(col(User.active)).group_by(col(User.role))
    ).all()
    return {role: int(count) for role, count in rows}


def update_user(
    session: Session, asker: Principal, name: str, change: UserUpdate, now: float
) -> User:
    """Deactivating a user also ends their portal sessions for good (activated again, they
    sign in afresh)."""
    asker.require(Role.ADMIN)
    user = get_user(session, asker, name)
    if name == asker.name:  # so that a slip never leaves the pool without an administrator
        if change.role not in (None, Role.ADMIN):
            raise Conflict("you cannot take away your own administrator role", field="role")
        if change.active is False:
            raise Conflict("you cannot deactivate yourself", field="active")
    for key, value in change.model_dump(exclude_unset=True, exclude_none=True).items():
        value = value.value if isinstance(value, Role) else value
        if getattr(user, key) != value:
            record_change(session, asker.name, f"user:{name}", key, getattr(user, key), value, now)
            setattr(user, key, value)
    if not user.active:
        end_sessions(session, name)
    session.add(user)
    return user
