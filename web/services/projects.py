"""Projects through their lifecycle (requested -> approved -> active -> expired|closed),
their members, per-flavor quotas, credits and sectors. Every change is recorded."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import ColumnElement, func, or_, update
from sqlmodel import Session, col, select

from web.models import (
    MAX_CREDITS,
    Allocation,
    CreditChange,
    Flavor,
    Job,
    MemberCreate,
    MemberPublic,
    MemberRole,
    Membership,
    Project,
    ProjectCreate,
    ProjectPublic,
    ProjectState,
    ProjectUpdate,
    Quota,
    QuotaPublic,
    QuotaUpdate,
    Role,
    Sector,
    SectorUpdate,
    User,
)
from web.services.auth import Principal
from web.services.changes import record_change
from web.services.errors import Conflict, Forbidden, Invalid, NotFound
from web.services.jobs import cancel_project_jobs
from web.services.ledger import append

# action -> (states it may start from, state it leads to)
TRANSITIONS: dict[str, tuple[tuple[ProjectState, ...], ProjectState]] = {
    "approve": ((ProjectState.REQUESTED,), ProjectState.APPROVED),
    "activate": ((ProjectState.APPROVED, ProjectState.EXPIRED), ProjectState.ACTIVE),
    "deny": ((ProjectState.REQUESTED,), ProjectState.CLOSED),
    "close": (
        (ProjectState.APPROVED, ProjectState.ACTIVE, ProjectState.EXPIRED),
        ProjectState.CLOSED,
    ),
}


def request_project(session: Session, asker: Principal, spec: ProjectCreate, now: float) -> Project:
    if session.get(Project, spec.name) is not None:
        raise Conflict(f"project {spec.name!r} exists already; choose another name", field="name")
    if session.get(Sector, spec.sector) is None:
        raise Invalid(
            f"unknown sector {spec.sector!r}; one of: {_names(session, Sector)}", field="sector"
        )
    pi = spec.pi or asker.name
    if pi != asker.name and not asker.is_admin:
        raise Forbidden("only an administrator may request a project for another PI", field="pi")
    if session.get(User, pi) is None:
        raise Invalid(f"no user {pi!r}", field="pi")
    project = Project(
        name=spec.name,
        title=spec.title,
        sector=spec.sector,
        pi=pi,
        justification=spec.justification,
        requested_gpus=spec.requested_gpus,
        requested_gpu_hours=spec.requested_gpu_hours,
        created_at=now,
    )
    session.add(project)
    session.flush()  # the membership refers to it
    session.add(Membership(project=spec.name, user=pi, role=MemberRole.PI.value))
    record_change(session, asker.name, f"project:{spec.name}", "state", "", "requested", now)
    return project


def get_project(session: Session, asker: Principal, name: str) -> Project:
    project = session.get(Project, name)
    if project is None or not asker.sees(name):
        raise NotFound(f"no project {name!r}", field="project")
    return project


def list_projects(
    session: Session, asker: Principal, state: ProjectState | None = None
) -> list[Project]:
    query = select(Project).order_by(col(Project.name))
    visible = asker.visible_projects()
    if visible is not None:
        query = query.where(col(Project.name).in_(visible))
    if state is not None:
        query = query.where(Project.state == state.value)
    return list(session.exec(query).all())


def page_projects(
    session: Session,
    asker: Principal,
    states: Sequence[ProjectState] = (),
    sector: str | None = None,
    contains: str | None = None,
    limit: int = 50,
    offset: int = 0,
    oldest_first: bool = False,
) -> tuple[list[Project], int]:
    """One page of the projects `asker` sees, by name (or oldest first: a queue of
    requests), filtered by state, sector and a piece of the name or title; and how many
    match in all."""
    conditions: list[ColumnElement[bool]] = []
    visible = asker.visible_projects()
    if visible is not None:
        conditions.append(col(Project.name).in_(visible))
    if states:
        conditions.append(col(Project.state).in_([s.value for s in states]))
    if sector:
        conditions.append(col(Project.sector) == sector)
    if contains:
        conditions.append(
            or_(
                col(Project.name).contains(contains.lower(), autoescape=True),
                func.lower(col(Project.title)).contains(contains.lower(), autoescape=True),
            )
        )
    total = session.exec(select(func.count()).select_from(Project).where(*conditions)).one()
    order = (col(Project.created_at), col(Project.name)) if oldest_first else (col(Project.name),)
    rows = session.exec(
        select(Project).where(*conditions).order_by(*order).limit(limit).offset(offset)
    ).all()
    return list(rows), int(total)


def projects_by_state(session: Session) -> dict[str, int]:
    """How many projects are in each state (one aggregate)."""
    rows = session.exec(select(Project.state, func.count()).group_by(col(Project.state))).all()
    return {state: int(count) for state, count in rows}


def sector_project_counts(session: Session) -> dict[str, tuple[int, int]]:
    """Per sector: its projects in all, and those active (one aggregate)."""
    found: dict[str, tuple[int, int]] = {}
    rows = session.exec(
        select(Project.sector, Project.state, func.count()).group_by(
            col(Project.sector), col(Project.state)
        )
    ).all()
    for sector, state, count in rows:
        every, active = found.get(sector, (0, 0))
        found[sector] = (
            every + int(count),
            active + (int(count) if state == ProjectState.ACTIVE.value else 0),
        )
    return found


def decide(
    session: Session,
    asker: Principal,
    name: str,
    action: str,
    now: float,
    note: str = "",
    expires_at: datetime | None = None,
) -> Project:
    """approve | activate | deny | close, by an administrator, with a note. A project that
    is closed (or denied) takes its jobs with it: queued ones are cancelled, running ones
    stopped by the loop."""
    asker.require(Role.ADMIN)
    project = get_project(session, asker, name)
    sources, target = TRANSITIONS[action]
    if ProjectState(project.state) not in sources:
        allowed = ", ".join(s.value for s in sources)
        raise Conflict(
            f"cannot {action} project {name!r}: it is {project.state}; {action} needs {allowed}",
            field="state",
        )
    # An active project past its end date expires at the next scheduling cycle: activating
    # one (an expired one, say) needs an end date after now.
    ends = expires_at.timestamp() if expires_at is not None else None
    if target is ProjectState.ACTIVE and ends is None:
        ends = project.expires_at
    if target is not ProjectState.CLOSED and ends is not None and ends <= now:
        given = "the end date given" if expires_at is not None else "its end date"
        raise Invalid(
            f"{given} ({_iso(ends)}) has passed; give a new end date after now ({_iso(now)})",
            field="expires_at",
        )
    subject = f"project:{name}"
    record_change(session, asker.name, subject, "state", project.state, target, now, note)
    project.state = target.value
    project.decided_by, project.decided_at, project.decision_note = asker.name, now, note
    if expires_at is not None:
        project.expires_at = expires_at.timestamp()
    session.add(project)
    if target is ProjectState.CLOSED:
        why = f"project {'denied' if action == 'deny' else 'closed'} by {asker.name}"
        cancelled, stopping = cancel_project_jobs(session, name, why, now)
        if cancelled or stopping:
            record_change(
                session,
                asker.name,
                subject,
                "jobs",
                f"{cancelled} queued, {stopping} admitted or running",
                f"{cancelled} cancelled, {stopping} asked to stop",
                now,
                why,
            )
    return project


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def update_project(
    session: Session, asker: Principal, name: str, change: ProjectUpdate, now: float
) -> Project:
    project = get_project(session, asker, name)
    if not (asker.is_admin or asker.leads(name)):
        raise Forbidden(f"only an administrator or the PI may change project {name!r}")
    for key, value in change.model_dump(exclude_unset=True).items():
        if key in ("share", "expires_at") and not asker.is_admin:
            raise Forbidden(f"only an administrator may change {key}", field=key)
        value = value.timestamp() if isinstance(value, datetime) else value
        if getattr(project, key) != value:
            record_change(
                session, asker.name, f"project:{name}", key, getattr(project, key), value, now
            )
            setattr(project, key, value)
    session.add(project)
    return project


def expire_projects(session: Session, now: float) -> int:
    """Active projects past their end date become expired; their queued jobs stay, waiting."""
    result = session.execute(
        update(Project)
        .where(col(Project.state) == ProjectState.ACTIVE.value)
        .where(col(Project.expires_at) <= now)
        .values(state=ProjectState.EXPIRED.value)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# --- members -------------------------------------------------------------------------------


def add_member(
    session: Session, asker: Principal, name: str, spec: MemberCreate, now: float
) -> Membership:
    project = _require_admin_or_pi(session, asker, name)
    if session.get(User, spec.user) is None:
        raise Invalid(f"no user {spec.user!r}", field="user")
    member = session.get(Membership, (name, spec.user))
    old = member.role if member else ""
    if spec.user == project.pi and spec.role is not MemberRole.PI:
        _hand_over_pi(session, asker, project, now)
    member = member or Membership(project=name, user=spec.user)
    member.role = spec.role.value
    session.add(member)
    record_change(
        session, asker.name, f"project:{name}", f"member:{spec.user}", old, spec.role.value, now
    )
    return member


def _hand_over_pi(session: Session, asker: Principal, project: Project, now: float) -> None:
    """The recorded PI stops being one: only an administrator may say so, and the project's
    PI becomes another member who is a PI (a co-PI could otherwise demote the PI who
    answers for the project)."""
    if not asker.is_admin:
        raise Forbidden(
            f"{project.pi!r} is the PI of {project.name!r}: only an administrator may change "
            "their role",
            field="user",
        )
    others = session.exec(
        select(Membership.user)
        .where(Membership.project == project.name)
        .where(Membership.role == MemberRole.PI.value)
        .where(Membership.user != project.pi)
        .order_by(col(Membership.user))
    ).first()
    if others is None:
        raise Conflict(
            f"{project.pi!r} is the only PI of {project.name!r}; make another member PI first",
            field="role",
        )
    record_change(session, asker.name, f"project:{project.name}", "pi", project.pi, others, now)
    project.pi = others
    session.add(project)


def remove_member(session: Session, asker: Principal, name: str, user: str, now: float) -> None:
    project = _require_admin_or_pi(session, asker, name)
    member = session.get(Membership, (name, user))
    if member is None:
        raise NotFound(f"{user!r} is not a member of {name!r}", field="user")
    if user == project.pi:
        raise Conflict(
            f"{user!r} is the PI of {name!r}; make another member PI and this one a member first",
            field="user",
        )
    session.delete(member)
    record_change(session, asker.name, f"project:{name}", f"member:{user}", member.role, "", now)


def members_of(session: Session, name: str) -> list[MemberPublic]:
    rows = session.exec(
        select(Membership).where(Membership.project == name).order_by(col(Membership.user))
    ).all()
    return [MemberPublic(user=m.user, role=MemberRole(m.role)) for m in rows]


def memberships_of(session: Session, user: str) -> list[tuple[str, MemberRole]]:
    """The projects `user` belongs to, and as what, by project."""
    rows = session.exec(
        select(Membership).where(Membership.user == user).order_by(col(Membership.project))
    ).all()
    return [(m.project, MemberRole(m.role)) for m in rows]


def _require_admin_or_pi(session: Session, asker: Principal, name: str) -> Project:
    project = get_project(session, asker, name)
    if not (asker.is_admin or asker.leads(name)):
        raise Forbidden(f"only an administrator or the PI of {name!r} may change its members")
    return project


# --- quotas and credits --------------------------------------------------------------------


def set_quota(
    session: Session, asker: Principal, name: str, flavor: str, spec: QuotaUpdate, now: float
) -> Quota:
    asker.require(Role.ADMIN)
    get_project(session, asker, name)
    if session.get(Flavor, flavor) is None:
        raise Invalid(
            f"unknown flavor {flavor!r}; one of: {_names(session, Flavor)}", field="flavor"
        )
    if spec.limit < spec.guaranteed:
        raise Invalid(
            f"must be at least the guarantee ({spec.guaranteed}), got {spec.limit}", field="limit"
        )
    quota = session.get(Quota, (name, flavor)) or Quota(project=name, flavor=flavor)
    subject = f"project:{name}"
    for key in ("guaranteed", "limit", "credit_rate"):
        old, new = getattr(quota, key), getattr(spec, key)
        if old != new:
            record_change(
                session, asker.name, subject, f"{key}[{flavor}]", old, new, now, spec.note
            )
            setattr(quota, key, new)
    session.add(quota)
    return quota


def change_credits(
    session: Session, asker: Principal, name: str, spec: CreditChange, now: float
) -> Project:
    asker.require(Role.ADMIN)
    project = get_project(session, asker, name)
    given = [spec.amount is not None, spec.set_to is not None, spec.unlimited]
    if sum(given) != 1:
        raise Invalid("give exactly one of amount, set_to or unlimited", field="amount")
    old = project.credits
    record_change(
        session,
        asker.name,
        f"project:{name}",
        "credits",
        old,
        None if spec.unlimited else _granted_after(project, spec),
        now,
        spec.note,
    )
    if spec.unlimited:  # no budget: nothing moves in the ledger, usage is still charged
        project.credits = None
        session.add(project)
        return project
    new = _granted_after(project, spec)
    grant = {
        "at": now,
        "kind": "grant",
        "project": name,
        "amount": new - (old or 0.0),
        "actor": asker.name,
        "note": spec.note,
    }
    session.flush()
    append(session, [grant])
    session.refresh(project)
    return project


def _granted_after(project: Project, spec: CreditChange) -> float:
    """The credits granted once `spec` (amount or set_to) is done; Invalid if that is fewer
    than the project has used net of what it earned, or over the most a budget may be."""
    field = "set_to" if spec.set_to is not None else "amount"
    new = (
        spec.set_to if spec.set_to is not None else (project.credits or 0.0) + (spec.amount or 0.0)
    )
    spent = project.credits_used - project.credits_earned
    if new < spent:
        raise Invalid(
            f"would leave {new:g} credits, below the {spent:g} already used (net of earned)",
            field=field,
        )
    if new > MAX_CREDITS:
        raise Invalid(
            f"would leave {new:g} credits, over the most a budget may be ({MAX_CREDITS:g})",
            field=field,
        )
    return new


class Budget(Protocol):
    """A project's credit totals: its row, or a row of a query that selects them."""

    @property
    def credits(self) -> float | None: ...
    @property
    def credits_used(self) -> float: ...
    @property
    def credits_earned(self) -> float: ...


def credits_left(project: Budget) -> float | None:
    """What a budgeted project may still spend (None: no budget): the ledger's balance,
    granted plus earned less used. The scheduler, the API and /metrics all ask this."""
    if project.credits is None:
        return None
    return project.credits + project.credits_earned - project.credits_used


def quotas_of(session: Session, names: Sequence[str]) -> dict[str, list[QuotaPublic]]:
    """Quotas of these projects, each with the GPUs its jobs hold now (two queries)."""
    rates = {f.name: f.credit_rate for f in session.exec(select(Flavor)).all()}
    in_use: dict[tuple[str, str], int] = {}
    held = session.exec(
        select(Job.project, Allocation.flavor, func.sum(Allocation.gpus))
        .join(Job, col(Job.id) == col(Allocation.job_id))
        .where(col(Allocation.end).is_(None))
        .where(col(Job.project).in_(names))
        .group_by(col(Job.project), col(Allocation.flavor))
    ).all()
    for project, flavor, gpus in held:
        in_use[(project, flavor)] = int(gpus or 0)
    result: dict[str, list[QuotaPublic]] = {name: [] for name in names}
    rows = session.exec(
        select(Quota).where(col(Quota.project).in_(names)).order_by(col(Quota.flavor))
    ).all()
    for q in rows:
        rate = q.credit_rate if q.credit_rate is not None else rates.get(q.flavor, 1.0)
        result[q.project].append(
            QuotaPublic(
                flavor=q.flavor,
                guaranteed=q.guaranteed,
                limit=q.limit,
                credit_rate=rate,
                in_use=in_use.get((q.project, q.flavor), 0),
            )
        )
    return result


def own_credit_rates(session: Session, name: str) -> dict[str, float | None]:
    """A project's quotas' own credit rates by flavor (None: the flavor's rate applies), as
    set, where QuotaPublic gives the rate in force."""
    rows = session.exec(select(Quota.flavor, Quota.credit_rate).where(Quota.project == name))
    return {flavor: rate for flavor, rate in rows.all()}


def project_public(session: Session, project: Project) -> ProjectPublic:
    return public_projects(session, [project])[0]


def public_projects(session: Session, projects: Sequence[Project]) -> list[ProjectPublic]:
    names = [p.name for p in projects]
    quotas = quotas_of(session, names)
    members: dict[str, list[MemberPublic]] = {name: [] for name in names}
    for m in session.exec(
        select(Membership).where(col(Membership.project).in_(names)).order_by(col(Membership.user))
    ).all():
        members[m.project].append(MemberPublic(user=m.user, role=MemberRole(m.role)))
    return [
        ProjectPublic.model_validate(
            p.model_dump()
            | {
                "credits_left": credits_left(p),
                "members": members[p.name],
                "quotas": quotas[p.name],
            }
        )
        for p in projects
    ]


# --- sectors and flavors -------------------------------------------------------------------


def list_sectors(session: Session) -> list[Sector]:
    return list(session.exec(select(Sector).order_by(col(Sector.name))).all())


def set_sector(
    session: Session, asker: Principal, name: str, spec: SectorUpdate, now: float
) -> Sector:
    asker.require(Role.ADMIN)
    sector = session.get(Sector, name) or Sector(name=name)
    if sector.weight != spec.weight or session.get(Sector, name) is None:
        record_change(
            session, asker.name, f"sector:{name}", "weight", sector.weight, spec.weight, now
        )
    sector.weight = spec.weight
    session.add(sector)
    return sector


def _names(session: Session, table: type[Sector] | type[Flavor]) -> str:
    names = session.exec(select(table.name).order_by(table.name)).all()
    return ", ".join(names) or "(none defined)"
