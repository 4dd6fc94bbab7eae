"""Reusable dependencies: the pool, database sessions, the caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from web.db import read_session, write_session
from web.pool import Pool
from web.services.auth import Principal, authenticate
from web.services.errors import Unauthenticated


async def get_pool(request: Request) -> Pool:
    pool: Pool = request.app.state.pool
    return pool


PoolDep = Annotated[Pool, Depends(get_pool)]


def get_session(pool: PoolDep) -> Iterator[Session]:
    with write_session(pool.engine) as session:
        yield session


def get_read_session(pool: PoolDep) -> Iterator[Session]:
    with read_session(pool.engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
ReadSessionDep = Annotated[Session, Depends(get_read_session)]

_bearer = HTTPBearer(auto_error=False, description="An API token: gpupool token create")


async def get_current_user(
    pool: PoolDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise Unauthenticated("missing token: send 'Authorization: Bearer <token>'")
    token, now = credentials.credentials, pool.clock.now()
    principal = pool.principals.get(token, now)
    if principal is None:
        principal = await run_in_threadpool(_authenticate, pool, token, now)
        pool.principals.put(token, principal, now)
    return principal


def _authenticate(pool: Pool, token: str, now: float) -> Principal:
    with read_session(pool.engine) as session:
        return authenticate(session, token, now)


CurrentUser = Annotated[Principal, Depends(get_current_user)]
