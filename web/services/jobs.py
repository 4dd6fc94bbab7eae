"""Jobs: submit (single or array, idempotent), cancel, list and read, scoped by who asks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, true, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from scheduler.core import ANY_FLAVOR
from web.enums import ACTIVE_JOB_STATE_VALUES, FINAL_JOB_STATE_VALUES
from web.models import (
    LATEST_END,
    Allocation,
    AllocationPublic,
    Job,
    JobCreate,
    JobPage,
    JobPublic,
    JobState,
    JobUsage,
    JobUsagePublic,
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

JOBS = Job.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class SubmitLimits:
    default_max_runtime_s: float
    max_array_size: int


@dataclass(frozen=True, slots=True)
class Submitted:
    jobs: list[Job]
    duplicate: bool  # the idempotency key was seen before; these are the jobs it made


@dataclass(frozen=True, slots=True)
class Reference:
    """What a submission is checked against: projects, quotas and the pool's shape."""

    projects: dict[str, tuple[str, float | None]]  # name -> (state, default max runtime)
    limits: dict[str, dict[str, int]]  # project -> flavor -> limit
    capacity: dict[str, tuple[int, int, int]]  # flavor -> (GPUs, largest node, nodes), not down


def load_reference(session: Session) -> Reference:
    projects = {
        name: (state, runtime)
        for name, state, runtime in session.exec(
            select(Project.name, Project.state, Project.default_max_runtime_s)
        ).all()
    }
    limits: dict[str, dict[str, int]] = {}
    for project, flavor, limit in session.exec(
        select(Quota.project, Quota.flavor, Quota.limit)
    ).all():
        limits.setdefault(project, {})[flavor] = limit
    capacity = {
        f: (int(total), int(largest), int(n))
        for f, total, largest, n in session.exec(
            select(Node.flavor, func.sum(Node.gpus), func.max(Node.gpus), func.count())
            .where(Node.state != NodeStateName.DOWN.value)
            .group_by(col(Node.flavor))
        ).all()
    }
    return Reference(projects, limits, capacity)


def submit(
    session: Session, asker: Principal, spec: JobCreate, now: float, limits: SubmitLimits
) -> Submitted:
    """Validate and queue a job (or `count` of them). The same idempotency key from the same
    user returns the jobs it made the first time."""
    if spec.idempotency_key is not None:
        earlier = by_idempotency_key(session, asker.name, spec.idempotency_key)
        if earlier:
            return resent(asker, earlier)
    jobs = prepare(load_reference(session), asker, spec, now, limits)
    try:
        store(session, [jobs])
    except IntegrityError:
        # The same key raced in from another request: answer with what it made.
        session.rollback()
        assert spec.idempotency_key is not None
        earlier = by_idempotency_key(session, asker.name, spec.idempotency_key)
        if not earlier:
            raise
        return resent(asker, earlier)
    return Submitted(jobs, duplicate=False)


def resent(asker: Principal, earlier: list[Job]) -> Submitted:
    """The answer to a resent idempotency key: the jobs it made, if the asker may still see
    them. A member removed from the project since gets no job of it back by resending."""
    if not all(asker.sees(job.project) for job in earlier):
        raise Conflict(
            "this key was used for jobs of a project you are no longer a member of; "
            "send the submission with a new key",
            field="idempotency_key",
        )
    return Submitted(earlier, duplicate=True)


def prepare(
    reference: Reference, asker: Principal, spec: JobCreate, now: float, limits: SubmitLimits
) -> list[Job]:
    """The jobs a valid submission makes (not stored yet); Invalid, Forbidden or Conflict
    naming the field at fault otherwise."""
    default_runtime = _submittable_project(reference, asker, spec.project)
    max_runtime = (
        parse_duration(spec.time)
        if spec.time is not None
        else default_runtime or limits.default_max_runtime_s
    )
    if spec.count > limits.max_array_size:
        raise Invalid(
            f"at most {limits.max_array_size} jobs in one array, got {spec.count}", field="count"
        )
    _check_fits(reference, spec.project, spec)
    return [
        Job(
            project=spec.project,
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


def store(session: Session, submissions: Sequence[list[Job]]) -> None:
    """Insert prepared submissions (ids assigned on return); arrays get their array id.
    One multi-row INSERT ... RETURNING: the ORM's unit of work costs more than the insert."""
    jobs = [job for batch in submissions for job in batch]
    if not jobs:
        return
    ids = session.execute(
        insert(JOBS).returning(JOBS.c.id, sort_by_parameter_order=True),
        [job.model_dump(exclude={"id"}) for job in jobs],
    ).scalars()
    for job, job_id in zip(jobs, ids, strict=True):
        job.id = job_id
    for batch in submissions:
        if len(batch) > 1:
            first = batch[0].id
            session.execute(
                update(JOBS).where(JOBS.c.id.in_([job.id for job in batch])).values(array_id=first)
            )
            for job in batch:
                job.array_id = first


def by_idempotency_key(session: Session, user: str, key: str) -> list[Job]:
    return stored_by_idempotency_keys(session, {(user, key)}).get((user, key), [])


def stored_by_idempotency_keys(
    session: Session, keys: set[tuple[str, str]]
) -> dict[tuple[str, str], list[Job]]:
    """The jobs each (user, idempotency key) made, for the keys that were seen before."""
    found: dict[tuple[str, str], list[Job]] = {}
    if not keys:
        return found
    # Both columns by IN, so the (user, key, index) unique index serves the lookup; ids
    # first, whole jobs only for the keys seen before (rare).
    pairs = session.execute(
        select(JOBS.c.id, JOBS.c.user, JOBS.c.idempotency_key)
        .where(JOBS.c.user.in_({user for user, _ in keys}))
        .where(JOBS.c.idempotency_key.in_({key for _, key in keys}))
    ).all()
    seen = [r.id for r in pairs if (r.user, r.idempotency_key) in keys]
    if not seen:
        return found
    rows = session.exec(
        select(Job).where(col(Job.id).in_(seen)).order_by(col(Job.array_index))
    ).all()
    for job in rows:
        assert job.idempotency_key is not None
        pair = (job.user, job.idempotency_key)
        if pair in keys:
            found.setdefault(pair, []).append(job)
    return found


def _submittable_project(reference: Reference, asker: Principal, name: str) -> float | None:
    """The project's default max runtime, if the asker may submit to it now."""
    found = reference.projects.get(name)
    if found is None or not asker.sees(name):
        mine = ", ".join(sorted(asker.memberships)) or "none"
        raise Invalid(f"no project {name!r} of yours (yours: {mine})", field="project")
    if name not in asker.memberships:
        raise Forbidden(f"only members of {name!r} may submit to it", field="project")
    state, default_runtime = found
    if state != ProjectState.ACTIVE.value:
        raise Conflict(
            f"project {name!r} is {state}; jobs are accepted for active projects only",
            field="project",
        )
    return default_runtime


def _check_fits(reference: Reference, project: str, spec: JobCreate) -> None:
    """Refuse a job that could never run: unknown flavor, more GPUs than the pool or the
    project's limit has, a node count that does not divide the GPUs."""
    limits = reference.limits.get(project, {})
    usable = [f for f, limit in limits.items() if limit > 0]
    capacity = reference.capacity
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
    for flavor in sorted(set(flavors) & set(usable)):
        total, largest, count = capacity.get(flavor, (0, 0, 0))
        fits = spec.gpus <= min(total, limits[flavor])
        if spec.nodes is not None:
            fits = fits and spec.nodes <= count and spec.gpus // spec.nodes <= largest
        if fits:
            return
        best = max(best, min(total, limits[flavor]))
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


# --- reading -------------------------------------------------------------------------------


def get_job(session: Session, asker: Principal, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None or not asker.sees(job.project):
        raise NotFound(f"no job {job_id}", field="job")
    return job


def job_usage(session: Session, asker: Principal, job_id: int) -> list[JobUsagePublic]:
    """What the node agents saw each attempt of the job use (attempts they saw nothing of
    are left out)."""
    get_job(session, asker, job_id)
    rows = session.exec(
        select(JobUsage).where(JobUsage.job_id == job_id).order_by(col(JobUsage.attempt))
    ).all()
    return [
        JobUsagePublic.model_validate(
            {
                "job_id": r.job_id,
                "attempt": r.attempt,
                "gpu_s": r.gpu_s,
                "mean_util_pct": 100.0 * r.busy_gpu_s / r.util_gpu_s if r.util_gpu_s else None,
                "energy_kwh": r.energy_j / 3.6e6,
                "energy_gpu_s": r.energy_gpu_s,
                "peak_mem_bytes": r.peak_mem_bytes,
                "first_at": r.first_at or None,
                "last_at": r.last_at or None,
            }
        )
        for r in rows
    ]


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
    idle_flag_before: float | None = None,
    newest_first: bool = False,
) -> JobPage:
    """A page of the jobs the asker may see, by id (the newest first if asked); running
    jobs idle since before `idle_flag_before` carry `idle_since` (see public_jobs)."""
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
    order = col(Job.id).desc() if newest_first else col(Job.id)
    rows = session.exec(query.order_by(order).limit(limit).offset(offset)).all()
    items = public_jobs(session, rows, idle_flag_before)
    return JobPage(items=items, total=total, limit=limit, offset=offset)


def fresh_public_jobs(jobs: Sequence[Job]) -> list[JobPublic]:
    """Jobs just stored or found by their idempotency key, as callers see them (with no
    allocations: a submission answers before any admission)."""
    return [JobPublic.model_validate(j.model_dump()) for j in jobs]


# A forecast whose range spans more than this, and more than half the wait it forecasts,
# is "rough".
ROUGH_RANGE_S = 3600.0


def start_confidence(job: Job) -> dict[str, Any]:
    """How sure a waiting job's start estimate is: est_confidence and est_note (see JobPublic).

    "rough" when it waits on jobs that have run past everything their history knows (or have
    none), or when its range spans more than an hour and more than half the wait from
    submission to the likely start; "likely" otherwise. A stored value that is not a finite
    number leaves the estimate without a confidence rather than failing the page.
    """
    none = {"est_confidence": "", "est_note": "", "est_unbounded": None}
    if job.state != JobState.QUEUED.value or not _plausible_time(job.est_start):
        return none | {"est_start_earliest": None, "est_start_latest": None}
    start = float(job.est_start or 0.0)
    earliest, latest = job.est_start_earliest, job.est_start_latest
    unbounded = job.est_unbounded if isinstance(job.est_unbounded, int) else 0
    if not (_plausible_time(earliest) and _plausible_time(latest)):
        return none | {"est_start_earliest": None, "est_start_latest": None}
    low, high = min(float(earliest or 0.0), start), max(float(latest or 0.0), start)
    span = high - low
    wait = max(0.0, start - float(job.submitted_at or 0.0))
    if unbounded > 0:
        confidence = "rough"
        note = (
            f"rough: depends on {unbounded} job{'s' if unbounded != 1 else ''} running past "
            "what their history knows"
        )
    elif span > ROUGH_RANGE_S and span > wait / 2:
        confidence, note = "rough", "rough: the jobs it waits on vary widely in run time"
    else:
        confidence, note = "likely", "likely: from the run times of similar jobs"
    return {
        "est_confidence": confidence,
        "est_note": note,
        "est_start_earliest": low,
        "est_start_latest": high,
        "est_unbounded": unbounded,
    }


def _plausible_time(value: object) -> bool:
    """A stored time a page can show (a bad row must not take it down)."""
    return (
        isinstance(value, int | float)
        and math.isfinite(value)
        and 0 <= value < LATEST_END.timestamp()
    )


def public_jobs(
    session: Session, jobs: Sequence[Job], idle_flag_before: float | None = None
) -> list[JobPublic]:
    """Jobs as callers see them, each with its current attempt's allocations; a running job
    whose GPUs have all been idle since before `idle_flag_before` (now less
    GPUPOOL_IDLE_FLAG_AFTER_S; None: since any time) carries `idle_since`: it is flagged."""
    held = [j.id for j in jobs if j.state in ACTIVE_JOB_STATE_VALUES]
    pieces: dict[int, list[AllocationPublic]] = {}
    idle: dict[tuple[int, int], float | None] = {}
    if held:
        rows = session.exec(
            select(Allocation).where(col(Allocation.job_id).in_(held)).order_by(col(Allocation.id))
        ).all()
        for a in rows:
            pieces.setdefault(a.job_id, []).append(AllocationPublic.model_validate(a.model_dump()))
        idle = {
            (job_id, attempt): since
            for job_id, attempt, since in session.exec(
                select(JobUsage.job_id, JobUsage.attempt, JobUsage.idle_since)
                .where(col(JobUsage.job_id).in_(held))
                .where(col(JobUsage.idle_since).is_not(None))
                .where(
                    col(JobUsage.idle_since) <= idle_flag_before
                    if idle_flag_before is not None
                    else true()
                )
            ).all()
        }
    return [
        JobPublic.model_validate(
            j.model_dump()
            | start_confidence(j)
            | {
                "allocations": pieces.get(j.id or 0, []),
                "idle_since": idle.get((j.id or 0, j.attempt))
                if j.state in ACTIVE_JOB_STATE_VALUES
                else None,
            }
        )
        for j in jobs
    ]


# --- cancelling ----------------------------------------------------------------------------
# Cancelling writes by conditional UPDATEs, never by writing back a row read before: the
# scheduling loop may admit a queued job between the read and the write, and a job it
# admitted holds GPUs that only the loop may give back (by stopping it).


def cancel(session: Session, asker: Principal, job_id: int, now: float) -> Job:
    """Cancel a job: at once if it waits; one admitted or running is stopped by the loop."""
    job = get_job(session, asker, job_id)
    if not (job.user == asker.name or asker.leads(job.project) or asker.role is Role.ADMIN):
        raise Forbidden(
            f"job {job_id} is {job.user}'s; only they, the PI or an admin may cancel it"
        )
    if not (
        _cancel_queued(session, JOBS.c.id == job_id, now, f"cancelled by {asker.name} while queued")
        or _request_stop(session, JOBS.c.id == job_id, now, f"cancel requested by {asker.name}")
    ):
        # Neither waiting nor running without a cancel requested: ended, or asked already.
        session.refresh(job)
        if job.state in FINAL_JOB_STATE_VALUES:
            raise Conflict(f"job {job_id} has already ended ({job.state})", field="job")
        return job
    session.refresh(job)
    return job


def cancel_project_jobs(session: Session, project: str, why: str, now: float) -> tuple[int, int]:
    """Cancel every job of a project that is closing: queued ones at once, admitted and
    running ones by asking the loop to stop them. (cancelled, asked to stop)."""
    where = JOBS.c.project == project
    return _cancel_queued(session, where, now, why), _request_stop(session, where, now, why)


def _cancel_queued(session: Session, where: Any, now: float, outcome: str) -> int:
    result = session.execute(
        update(JOBS)
        .where(where)
        .where(JOBS.c.state == JobState.QUEUED.value)
        .values(
            state=JobState.CANCELLED.value,
            ended_at=now,
            reason_code="",
            reason="",
            est_start=None,
            est_start_earliest=None,
            est_start_latest=None,
            est_unbounded=None,
            reserved_flavor=None,
            outcome=outcome,
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _request_stop(session: Session, where: Any, now: float, outcome: str) -> int:
    result = session.execute(
        update(JOBS)
        .where(where)
        .where(JOBS.c.state.in_(ACTIVE_JOB_STATE_VALUES))
        .where(JOBS.c.cancel_requested_at.is_(None))
        .values(cancel_requested_at=now, outcome=outcome)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
