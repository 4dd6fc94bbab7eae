"""Jobs: submit (single or array, idempotent), cancel, list and read, scoped by who asks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from web.models import (
    ACTIVE_JOB_STATES,
    FINAL_JOB_STATES,
    Allocation,
    AllocationPublic,
    Job,
    JobCreate,
    JobPage,
    JobPublic,
    JobState,
    Node,
    NodeStateName,
    Project,
    ProjectState,
    Quota,
    Role,
)
from web.services.auth import Principal
from web.services.durations import parse_duration
from web.services.errors import Conflict, Forbidden, Invalid, NotFound

ANY_FLAVOR = "*"


@dataclass(frozen=True, slots=True)
class SubmitLimits:
    default_max_runtime_s: float
    max_array_size: int


@dataclass(frozen=True, slots=True)
class Submitted:
    jobs: list[Job]
    duplicate: bool  # the idempotency key was seen before; these are the jobs it made


def submit(
    session: Session, asker: Principal, spec: JobCreate, now: float, limits: SubmitLimits
) -> Submitted:
    """Validate and queue a job (or `count` of them). The same idempotency key from the same
    user returns the jobs it made the first time."""
    if spec.idempotency_key is not None:
        earlier = _by_idempotency_key(session, asker.name, spec.idempotency_key)
        if earlier:
            return Submitted(earlier, duplicate=True)
    project = _submittable_project(session, asker, spec.project)
    max_runtime = (
        parse_duration(spec.time)
        if spec.time is not None
        else project.default_max_runtime_s or limits.default_max_runtime_s
    )
    if spec.count > limits.max_array_size:
        raise Invalid(
            f"at most {limits.max_array_size} jobs in one array, got {spec.count}", field="count"
        )
    _check_fits(session, project.name, spec)
    jobs = [
        Job(
            project=project.name,
            user=asker.name,
            name=spec.name,
            entrypoint=spec.entrypoint,
            runtime_env=spec.runtime_env,
            gpus=spec.gpus,
            flavor=spec.flavor,
            nodes=spec.nodes,
            max_runtime_s=max_runtime,
            priority=spec.priority,
            submitted_at=now,
            idempotency_key=spec.idempotency_key,
            array_index=i,
            reason_code="new",
            reason="submitted; waiting for the next scheduling cycle",
        )
        for i in range(spec.count)
    ]
    try:
        session.add_all(jobs)
        session.flush()
        if spec.count > 1:
            for job in jobs:
                job.array_id = jobs[0].id
            session.flush()
    except IntegrityError:
        # The same key raced in from another request: answer with what it made.
        session.rollback()
        assert spec.idempotency_key is not None
        earlier = _by_idempotency_key(session, asker.name, spec.idempotency_key)
        if not earlier:
            raise
        return Submitted(earlier, duplicate=True)
    return Submitted(jobs, duplicate=False)


def _by_idempotency_key(session: Session, user: str, key: str) -> list[Job]:
    query = select(Job).where(Job.user == user).where(Job.idempotency_key == key)
    return list(session.exec(query.order_by(col(Job.array_index))).all())


def _submittable_project(session: Session, asker: Principal, name: str) -> Project:
    project = session.get(Project, name)
    if project is None or not asker.sees(name):
        mine = ", ".join(sorted(asker.memberships)) or "none"
        raise Invalid(f"no project {name!r} of yours (yours: {mine})", field="project")
    if name not in asker.memberships:
        raise Forbidden(f"only members of {name!r} may submit to it", field="project")
    if project.state != ProjectState.ACTIVE.value:
        raise Conflict(
            f"project {name!r} is {project.state}; jobs are accepted for active projects only",
            field="project",
        )
    return project


def _check_fits(session: Session, project: str, spec: JobCreate) -> None:
    """Refuse a job that could never run: unknown flavor, more GPUs than the pool or the
    project's limit has, a node count that does not divide the GPUs."""
    quotas = {q.flavor: q for q in session.exec(select(Quota).where(Quota.project == project))}
    usable = [f for f, q in quotas.items() if q.limit > 0]
    capacity = _capacity(session)
    if spec.flavor != ANY_FLAVOR and spec.flavor not in capacity:
        allowed = ", ".join([ANY_FLAVOR, *sorted(capacity)])
        raise Invalid(f"unknown flavor {spec.flavor!r}; one of: {allowed}", field="flavor")
    flavors = usable if spec.flavor == ANY_FLAVOR else [spec.flavor]
    if not set(flavors) & set(usable):
        raise Invalid(
            f"project {project!r} has no quota for {spec.flavor!r}; "
            f"it has: {', '.join(sorted(usable)) or 'none yet'}",
            field="flavor",
        )
    if spec.nodes is not None and spec.gpus % spec.nodes:
        raise Invalid(
            f"{spec.gpus} GPUs do not split evenly over {spec.nodes} nodes", field="nodes"
        )
    best = 0
    for flavor in set(flavors) & set(usable):
        total, largest, count = capacity.get(flavor, (0, 0, 0))
        fits = spec.gpus <= min(total, quotas[flavor].limit)
        if spec.nodes is not None:
            fits = fits and spec.nodes <= count and spec.gpus // spec.nodes <= largest
        if fits:
            return
        best = max(best, min(total, quotas[flavor].limit))
    if spec.nodes is not None and spec.gpus <= best:
        raise Invalid(
            f"no {spec.flavor} layout has {spec.nodes} nodes with {spec.gpus // spec.nodes} "
            "GPUs each",
            field="nodes",
        )
    raise Invalid(
        f"at most {best} GPUs of {spec.flavor} for project {project!r} (its limit, or the "
        f"pool's size), got {spec.gpus}",
        field="gpus",
    )


def _capacity(session: Session) -> dict[str, tuple[int, int, int]]:
    """flavor -> (GPUs, GPUs of the largest node, nodes) over nodes not down."""
    rows = session.exec(
        select(Node.flavor, func.sum(Node.gpus), func.max(Node.gpus), func.count())
        .where(Node.state != NodeStateName.DOWN.value)
        .group_by(col(Node.flavor))
    ).all()
    return {f: (int(total), int(largest), int(n)) for f, total, largest, n in rows}


# --- reading -------------------------------------------------------------------------------


def get_job(session: Session, asker: Principal, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None or not asker.sees(job.project):
        raise NotFound(f"no job {job_id}", field="job")
    return job


def list_jobs(
    session: Session,
    asker: Principal,
    *,
    project: str | None = None,
    states: Sequence[JobState] = (),
    user: str | None = None,
    flavor: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> JobPage:
    query = select(Job)
    visible = asker.visible_projects()
    if visible is not None:
        query = query.where(col(Job.project).in_(visible))
    if project is not None:
        query = query.where(Job.project == project)
    if states:
        query = query.where(col(Job.state).in_([s.value for s in states]))
    if user is not None:
        query = query.where(Job.user == user)
    if flavor is not None:
        query = query.where(Job.flavor == flavor)
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(query.order_by(col(Job.id)).limit(limit).offset(offset)).all()
    return JobPage(items=public_jobs(session, rows), total=total, limit=limit, offset=offset)


def public_jobs(session: Session, jobs: Sequence[Job]) -> list[JobPublic]:
    """Jobs as callers see them, each with its current attempt's allocations."""
    held = [j.id for j in jobs if j.state in [s.value for s in ACTIVE_JOB_STATES]]
    pieces: dict[int, list[AllocationPublic]] = {}
    if held:
        rows = session.exec(
            select(Allocation).where(col(Allocation.job_id).in_(held)).order_by(col(Allocation.id))
        ).all()
        for a in rows:
            pieces.setdefault(a.job_id, []).append(AllocationPublic.model_validate(a.model_dump()))
    return [
        JobPublic.model_validate(j.model_dump() | {"allocations": pieces.get(j.id or 0, [])})
        for j in jobs
    ]


# --- cancelling ----------------------------------------------------------------------------


def cancel(session: Session, asker: Principal, job_id: int, now: float) -> Job:
    """Cancel a job: at once if it waits; a running one is stopped by the loop."""
    job = get_job(session, asker, job_id)
    if not (job.user == asker.name or asker.leads(job.project) or asker.role is Role.ADMIN):
        raise Forbidden(
            f"job {job_id} is {job.user}'s; only they, the PI or an admin may cancel it"
        )
    if job.state in [s.value for s in FINAL_JOB_STATES]:
        raise Conflict(f"job {job_id} has already ended ({job.state})", field="job")
    if job.state == JobState.QUEUED.value:
        job.state = JobState.CANCELLED.value
        job.ended_at = now
        job.reason_code, job.reason = "", ""
        job.outcome = f"cancelled by {asker.name} while queued"
    elif job.cancel_requested_at is None:
        job.cancel_requested_at = now
        job.outcome = f"cancel requested by {asker.name}"
    session.add(job)
    return job
