"""Jobs: submit, list, read, cancel, logs."""

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
from web.api.errors import refusals
from web.api.links import job_links
from web.models import (
    MAX_ID,
    JobCreate,
    JobPage,
    JobPublic,
    JobState,
    JobUsagePublic,
    SubmitResult,
)
from web.pool import Pool
from web.services import jobs
from web.services.logs import read_logs

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.post(
    "",
    response_model=SubmitResult,
    status_code=status.HTTP_201_CREATED,
    responses={
        201: {"links": job_links("$response.body#/jobs/0/id")},
        200: {
            "model": SubmitResult,
            "description": "A resend: the jobs its idempotency key made",
            "links": job_links("$response.body#/jobs/0/id"),
        },
        **refusals(403, 409),
    },
)
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
    pool: PoolDep,
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
        idle_flag_before=idle_flag_before(pool),
    )


def idle_flag_before(pool: Pool) -> float:
    """Running jobs idle since before this are flagged (GPUPOOL_IDLE_FLAG_AFTER_S)."""
    return pool.clock.now() - pool.settings.idle_flag_after_s


@router.get("/{job_id}", response_model=JobPublic, responses=refusals(404))
def get_job(job_id: IdPath, session: ReadSessionDep, user: CurrentUser, pool: PoolDep) -> JobPublic:
    job = jobs.get_job(session, user, job_id)
    return jobs.public_jobs(session, [job], idle_flag_before(pool))[0]


@router.post("/{job_id}/cancel", response_model=JobPublic, responses=refusals(403, 404, 409))
def cancel_job(job_id: IdPath, session: SessionDep, user: CurrentUser, pool: PoolDep) -> JobPublic:
    job = jobs.cancel(session, user, job_id, pool.clock.now())
    session.commit()
    pool.job_submitted()
    return jobs.public_jobs(session, [job], idle_flag_before(pool))[0]


LOG_HEADERS = {
    "X-Gpupool-Attempt": "the attempt these logs are of (0: the job has not been admitted yet)",
    "X-Gpupool-Job-Attempt": "the job's latest attempt",
    "X-Gpupool-Job-State": "the job's state",
    "X-Gpupool-Log-End": "the offset after this answer: ask from there for what follows",
    "X-Gpupool-Log-Size": "the log's length now (more to read while End < Size)",
    "X-Gpupool-Log-Done": "1 once the attempt is over: its log will not grow",
}


@router.get(
    "/{job_id}/logs",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "The attempt's output (bytes from `offset`, at most 4 MiB)",
            "headers": {name: {"description": text} for name, text in LOG_HEADERS.items()},
        },
        **refusals(404, 503),
    },
)
def job_logs(
    job_id: IdPath,
    user: CurrentUser,
    pool: PoolDep,
    attempt: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    offset: Annotated[int, Query(ge=0, le=2**53)] = 0,
) -> Response:
    """A job's output: of its latest attempt, or of `attempt`; from byte `offset` on. A
    follower (`gpupool logs -f`) asks again from X-Gpupool-Log-End until
    X-Gpupool-Log-Done, then goes on to the next attempt until the job has ended."""
    found = read_logs(pool.engine, pool.settings, user, job_id, attempt, offset)
    headers = {
        "X-Gpupool-Attempt": str(found.attempt),
        "X-Gpupool-Job-Attempt": str(found.job_attempt),
        "X-Gpupool-Job-State": found.state,
        "X-Gpupool-Log-End": str(found.end),
        "X-Gpupool-Log-Size": str(found.size),
        "X-Gpupool-Log-Done": "1" if found.done else "0",
        "Cache-Control": "no-store",
    }
    return Response(found.text, media_type="text/plain; charset=utf-8", headers=headers)


@router.get("/{job_id}/usage", response_model=list[JobUsagePublic], responses=refusals(404))
def job_usage(job_id: IdPath, session: ReadSessionDep, user: CurrentUser) -> list[JobUsagePublic]:
    """What the node agents saw each attempt use: GPU-seconds, mean utilization, energy,
    peak memory on one GPU."""
    return jobs.job_usage(session, user, job_id)
