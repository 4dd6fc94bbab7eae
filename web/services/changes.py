"""The record of who changed what and when (quotas, credits, states, roles, members)."""

from __future__ import annotations

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
