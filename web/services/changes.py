"""The record of who changed what and when (quotas, credits, states, roles, members)."""

from __future__ import annotations

from sqlalchemy import ColumnElement, func
from sqlmodel import Session, col, select

from web.models import Change


def record_change(
    session: Session,
    actor: str,
    subject: str,
    field: str,
    old: object,
    new: object,
    now: float,
    note: str = "",
) -> None:
    session.add(
        Change(
            at=now,
            actor=actor,
            subject=subject,
            field=field,
            old="" if old is None else str(old),
            new="" if new is None else str(new),
            note=note,
        )
    )


def history(session: Session, subject: str, limit: int = 200) -> list[Change]:
    query = select(Change).where(Change.subject == subject)
    return list(session.exec(query.order_by(col(Change.id).desc()).limit(limit)).all())


def recent_changes(
    session: Session, kind: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[list[Change], int]:
    """The change log across subjects, newest first, one page of it; `kind` keeps those of
    one kind of subject (project, user, sector, node: the part before the colon). And how
    many there are in all."""
    conditions: list[ColumnElement[bool]] = []
    if kind:
        conditions.append(col(Change.subject).startswith(kind + ":", autoescape=True))
    total = session.exec(select(func.count()).select_from(Change).where(*conditions)).one()
    rows = session.exec(
        select(Change)
        .where(*conditions)
        .order_by(col(Change.id).desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return list(rows), int(total)
