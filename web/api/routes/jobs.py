"""Jobs: submit, list, read, cancel."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response, status

from web.api.deps import (
    CurrentUser,
    IdPath,
    PoolDep,
    ReadSessionDep,
    SessionDep,
    refuse_nul,
)
from web.models import MAX_ID, JobCreate, JobPage, JobPublic, JobState, SubmitResult
from web.services import jobs

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.post("", response_model=SubmitResult, status_code=status.HTTP_201_CREATED)
async def submit_job(
    spec: JobCreate,
    user: CurrentUser,
    pool: PoolDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
) -> SubmitResult:
    """Queue a job (or an array of `count` jobs). Resending with the same idempotency key
    (body field or Idempotency-Key header) returns the first jobs, with 200. The answer
    comes once the jobs are committed."""
    if idempotency_key is not None:
        spec.idempotency_key = idempotency_key
    result = await asyncio.wrap_future(pool.intake.submit(user, spec, pool.clock.now()))
    pool.job_submitted()
    if result.duplicate:
        response.status_code = status.HTTP_200_OK
    return SubmitResult(jobs=jobs.fresh_public_jobs(result.jobs), duplicate=result.duplicate)


@router.get("", response_model=JobPage, dependencies=[Depends(refuse_nul)])
def list_jobs(
    session: ReadSessionDep,
    user: CurrentUser,
    project: str | None = None,
    state: Annotated[list[JobState] | None, Query()] = None,
    owner: Annotated[str | None, Query(alias="user")] = None,
    flavor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> JobPage:
    return jobs.list_jobs(
        session,
        user,
        project=project,
        states=state or (),
        user=owner,
        flavor=flavor,
        limit=limit,
        offset=offset,
    )


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: IdPath, session: ReadSessionDep, user: CurrentUser) -> JobPublic:
    return jobs.public_jobs(session, [jobs.get_job(session, user, job_id)])[0]


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel_job(job_id: IdPath, session: SessionDep, user: CurrentUser, pool: PoolDep) -> JobPublic:
    job = jobs.cancel(session, user, job_id, pool.clock.now())
    session.commit()
    pool.job_submitted()
    return jobs.public_jobs(session, [job])[0]
