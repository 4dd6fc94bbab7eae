"""Reading the ledger: its entries, usage aggregates (sacct/sreport-like) and credit
balances. Everything here is the ledger's, scoped by who asks: researchers see their own
projects' entries, admins and operators every project's.

Usage is what the charges and refunds of the ledger say (GPU-hours allocated, borrowed,
credits net of refunds, energy, utilization, idle time), grouped by project, user, flavor,
job or period; a period filter (YYYY-MM, YYYY-Qn, YYYY) takes the entries whose period
falls in it (an entry without one, a grant, by the month of its `at`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import and_, case, func, or_, select
from sqlmodel import Session

from web.models import LedgerEntryPublic
from web.services.auth import Principal
from web.services.errors import Invalid
from web.services.ledger import KINDS, LEDGER
from web.services.projects import credits_left, get_project
from web.services.statements import parse_period

GROUPINGS = ("project", "user", "flavor", "job", "period")
Grouping = Literal["project", "user", "flavor", "job", "period"]
MAX_PAGE = 10_000


class UsageRow(BaseModel):
    """One group's usage; `key` is the project, user, flavor, job id or period."""

    key: str
    jobs: int
    entries: int
    gpu_hours: float
    borrowed_gpu_hours: float
    credits: float  # charged, net of refunds
    energy_kwh: float
    mean_util_pct: float | None  # over the GPU-seconds whose utilization the agents saw
    idle_gpu_hours: float


class CreditBalance(BaseModel):
    """A project's credits: the project's totals (what the scheduler enforces) and the same
    recomputed from its ledger entries; `agrees` says they match (to 1e-6 credits)."""

    project: str
    budgeted: bool  # False: no budget is enforced (usage is still charged)
    granted: float | None
    used: float
    earned: float
    left: float | None
    ledger_granted: float
    ledger_used: float
    ledger_earned: float
    ledger_sum: float  # the sum of every entry's amount: granted - used + earned
    entries: int
    agrees: bool


def _scope(asker: Principal, project: str | None) -> list[Any]:
    """Conditions limiting entries to what `asker` may see (and to `project`)."""
    conditions: list[Any] = []
    if project is not None:
        if not asker.sees(project):
            return [LEDGER.c.id < 0]  # another's project reads as one with no entries
        conditions.append(LEDGER.c.project == project)
    visible = asker.visible_projects()
    if visible is not None:
        conditions.append(LEDGER.c.project.in_(sorted(visible)))
    return conditions


def _in_period(period: str | None) -> list[Any]:
    if period is None:
        return []
    parsed = parse_period(period)
    return [
        or_(
            LEDGER.c.period.in_(parsed.months),
            and_(LEDGER.c.period == "", LEDGER.c.at >= parsed.start, LEDGER.c.at < parsed.end),
        )
    ]


def list_entries(
    session: Session,
    asker: Principal,
    project: str | None = None,
    kind: str | None = None,
    period: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[LedgerEntryPublic]:
    """Entries in id order, as the asker may see them."""
    if kind is not None and kind not in KINDS:
        raise Invalid(f"unknown kind {kind!r}; one of: {', '.join(KINDS)}", field="kind")
    conditions = _scope(asker, project) + _in_period(period)
    if kind is not None:
        conditions.append(LEDGER.c.kind == kind)
    rows = session.execute(
        select(LEDGER).where(*conditions).order_by(LEDGER.c.id).limit(limit).offset(offset)
    )
    return [LedgerEntryPublic.model_validate(dict(row._mapping)) for row in rows]


def usage(
    session: Session,
    asker: Principal,
    by: Grouping = "project",
    project: str | None = None,
    user: str | None = None,
    flavor: str | None = None,
    period: str | None = None,
) -> list[UsageRow]:
    """Usage of the charges and refunds, grouped (sreport's cluster/account utilization),
    largest GPU-hours first."""
    key_column = {
        "project": LEDGER.c.project,
        "user": LEDGER.c.user,
        "flavor": LEDGER.c.flavor,
        "job": LEDGER.c.job_id,
        "period": LEDGER.c.period,
    }[by]
    conditions = _scope(asker, project) + _in_period(period)
    conditions.append(LEDGER.c.kind.in_(("charge", "refund")))
    if user is not None:
        conditions.append(LEDGER.c.user == user)
    if flavor is not None:
        conditions.append(LEDGER.c.flavor == flavor)
    gpu_s = func.sum(LEDGER.c.gpu_s)
    query = (
        select(
            key_column.label("key"),
            func.count(func.distinct(LEDGER.c.job_id)).label("jobs"),
            func.count().label("entries"),
            gpu_s.label("gpu_s"),
            func.sum(case((LEDGER.c.borrowed, LEDGER.c.gpu_s), else_=0.0)).label("borrowed"),
            func.sum(LEDGER.c.amount).label("amount"),
            func.sum(LEDGER.c.energy_j).label("energy"),
            func.sum(LEDGER.c.util_gpu_s).label("util"),
            func.sum(LEDGER.c.busy_gpu_s).label("busy"),
            func.sum(LEDGER.c.idle_gpu_s).label("idle"),
        )
        .where(*conditions)
        .group_by(key_column)
        .order_by(gpu_s.desc(), key_column)
        .limit(MAX_PAGE)
    )
    return [
        UsageRow(
            key="" if row.key is None else str(row.key),
            jobs=int(row.jobs),
            entries=int(row.entries),
            gpu_hours=float(row.gpu_s or 0) / 3600.0,
            borrowed_gpu_hours=float(row.borrowed or 0) / 3600.0,
            credits=-float(row.amount or 0) + 0.0,
            energy_kwh=float(row.energy or 0) / 3.6e6,
            mean_util_pct=100.0 * float(row.busy) / float(row.util) if row.util else None,
            idle_gpu_hours=float(row.idle or 0) / 3600.0,
        )
        for row in session.execute(query)
    ]


def balance(session: Session, asker: Principal, name: str) -> CreditBalance:
    project = get_project(session, asker, name)
    sums = {
        kind: (float(total or 0.0), int(count))
        for kind, total, count in session.execute(
            select(LEDGER.c.kind, func.sum(LEDGER.c.amount), func.count())
            .where(LEDGER.c.project == name)
            .group_by(LEDGER.c.kind)
        )
    }

    def of(*kinds: str) -> float:
        return sum(sums.get(kind, (0.0, 0))[0] for kind in kinds)

    ledger_granted, ledger_earned = of("grant"), of("reward")
    ledger_used = -of("charge", "refund") + 0.0
    ledger_sum = of(*KINDS)
    granted = project.credits
    # A project made unlimited keeps its past grants in the ledger, with no budget now.
    agrees = (
        (granted is None or abs(granted - ledger_granted) <= 1e-6)
        and abs(project.credits_used - ledger_used) <= 1e-6
        and abs(project.credits_earned - ledger_earned) <= 1e-6
    )
    return CreditBalance(
        project=name,
        budgeted=granted is not None,
        granted=granted,
        used=project.credits_used,
        earned=project.credits_earned,
        left=credits_left(project),
        ledger_granted=ledger_granted,
        ledger_used=ledger_used,
        ledger_earned=ledger_earned,
        ledger_sum=ledger_sum,
        entries=sum(count for _, count in sums.values()),
        agrees=agrees,
    )
