"""Reusable dependencies: the pool, database sessions, the caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from web.db import read_session, write_session
from web.models import MAX_ID
from web.pool import Pool
from web.services.auth import Principal, authenticate
from web.services.errors import Invalid, Unauthenticated

# A job's or token's id in a path: anything out of the ids' range is refused (422) before
# it reaches the database, which would fail on it.
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]


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


# scope="function": the session ends (a write session commits) when the route returns,
# before its answer is sent; so an answer never tells of what a failed commit lost, and a
# caller that reads straight after finds what it wrote. (Routes commit before building
# their answers anyway; the default scope would commit only after the answer was sent.)
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[Session, Depends(get_read_session, scope="function")]

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
        # Read before the lookup: a revoke that lands while it runs keeps it out of the cache.
        generation = pool.principals.generation
        principal = await run_in_threadpool(_authenticate, pool, token, now)
        pool.principals.put(token, principal, now, generation)
    return principal


def _authenticate(pool: Pool, token: str, now: float) -> Principal:
    with read_session(pool.engine) as session:
        return authenticate(session, token, now)


CurrentUser = Annotated[Principal, Depends(get_current_user)]


async def refuse_nul(request: Request) -> None:
    """Text in a path or query with a NUL character (%00) is refused, naming the parameter:
    the database cannot compare it, let alone store it. On the routes that take text in a
    path or query (not on submissions: every dependency costs each request)."""
    if "\x00" not in request.scope["path"] and b"%00" not in request.scope["query_string"]:
        return  # the usual case, without parsing the query
    params = [*request.path_params.items(), *request.query_params.multi_items()]
    for name, value in params:
        if isinstance(value, str) and "\x00" in value:
            raise Invalid("must not contain NUL characters (\\x00)", field=name)
