"""Statements, the ledger, usage and credit balances (web/services/statements.py, usage.py).

Statements of a project are for those who may see it; the public key and verification are
for anyone (a funding agency checks a statement without an account): the verifier trusts
neither the statement nor who sends it, and answers with what fails.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel

from web.api.deps import CurrentUser, PoolDep, ReadSessionDep
from web.api.errors import refusals
from web.db import read_session
from web.models import MAX_ID, LedgerEntryPublic
from web.pool import Pool
from web.services import ledger, signing, statements, usage
from web.services.auth import Principal

router = APIRouter(tags=["statements"])
PUBLIC_KEY_PATH = "/statements/public-key"


class VerifyResult(BaseModel):
    valid: bool
    problems: list[str]
    public_key: str  # the id of the key it was checked with (this pool's)


@router.get(
    "/projects/{name}/statements/{period}",
    response_class=Response,
    responses={
        200: {
            "description": "The signed statement: JSON (the form to keep and verify), CSV or "
            "printable HTML (both carry the signature; only the JSON verifies)",
            "content": {"application/json": {}, "text/csv": {}, "text/html": {}},
        },
        **refusals(404),
    },
)
async def statement(
    name: str,
    period: str,
    pool: PoolDep,
    user: CurrentUser,
    format: Literal["json", "csv", "html"] = "json",
) -> Response:
    """A project's usage statement for a period: YYYY-MM, YYYY-Qn or YYYY."""
    body, media_type = await run_in_threadpool(_statement, pool, user, name, period, format)
    suffix = {"json": "json", "csv": "csv", "html": "html"}[format]
    filename = f"statement-{name}-{period}.{suffix}".replace('"', "")
    return Response(
        body,
        media_type=media_type,
        headers={"Content-Disposition": f'inline; filename="{filename}"'},
    )


def _statement(pool: Pool, user: Principal, name: str, period: str, form: str) -> tuple[bytes, str]:
    key = signing.pool_key(pool.settings.statement_key_path)
    return statements.rendered_statement(
        pool.engine, user, name, period, form, key, pool.clock.now()
    )


class PemResponse(PlainTextResponse):
    media_type = "application/x-pem-file"


@router.get(
    PUBLIC_KEY_PATH,
    response_class=PemResponse,
    responses={200: {"headers": {"X-Key-Id": {"description": "the key's id"}}}},
)
def public_key(pool: PoolDep) -> PemResponse:
    """The pool's statement-signing public key (PEM); its id is in the X-Key-Id header.
    No token needed."""
    key = signing.pool_key(pool.settings.statement_key_path).public_key()
    return PemResponse(signing.public_pem(key), headers={"X-Key-Id": signing.key_id(key)})


@router.post(
    "/statements/verify",
    response_model=VerifyResult,
    responses=refusals(503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "A statement's JSON form, as the pool signed it: its exact bytes "
            "are checked (a pretty-printed or re-encoded copy is not the signed document)",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def verify(request: Request, pool: PoolDep) -> Response | VerifyResult:
    """Check a statement: that it is byte for byte the signed form, its signature with this
    pool's key, its figures against its entries, and its entries against the ledger
    (unchanged, none left out, the chain from the first entry to the statement's head).
    Anything that is not a valid statement is `valid: false` with the rule it breaks. No
    token needed; nothing is written. The body may be GPUPOOL_MAX_STATEMENT_BYTES long."""
    limit = pool.settings.max_statement_bytes
    document = await body_within(request, limit)
    if document is None:
        return body_too_large(limit)
    return await run_in_threadpool(_verify, pool, document)


def _verify(pool: Pool, document: bytes) -> VerifyResult:
    key = signing.pool_key(pool.settings.statement_key_path).public_key()
    with pool.verifications.held(), read_session(pool.engine) as session:
        found = statements.verify_statement(document, key, ledger.stream(session))
    return VerifyResult(valid=found.valid, problems=found.problems, public_key=signing.key_id(key))


async def body_within(request: Request, limit: int) -> bytes | None:
    """The request's body, read as it comes; None as soon as it is over `limit` bytes
    (never more than one piece past it is held)."""
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            return None
    return bytes(body)


def body_too_large(limit: int) -> JSONResponse:
    """413 naming the limit, as the app's BodySizeLimit answers before a route runs."""
    return JSONResponse(
        {
            "detail": f"body: a statement to verify may be {limit:,} bytes "
            f"({limit / 2**20:g} MiB) long; verify a larger one offline: gpupool verify FILE "
            "--public-key pool.pem",
            "field": "body",
        },
        status_code=413,
    )


@router.get("/ledger", response_model=list[LedgerEntryPublic])
def ledger_entries(
    session: ReadSessionDep,
    user: CurrentUser,
    project: str | None = None,
    kind: str | None = None,
    period: str | None = None,
    limit: Annotated[int, Query(ge=1, le=usage.MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> list[LedgerEntryPublic]:
    """Ledger entries in chain order (yours: your projects'; admins and operators: all)."""
    return usage.list_entries(session, user, project, kind, period, limit, offset)


@router.get("/usage", response_model=list[usage.UsageRow])
def usage_report(
    session: ReadSessionDep,
    user: CurrentUser,
    by: usage.Grouping = "project",
    project: str | None = None,
    username: Annotated[str | None, Query(alias="user")] = None,
    flavor: str | None = None,
    period: str | None = None,
) -> list[usage.UsageRow]:
    """Usage from the ledger's charges and refunds, grouped by project, user, flavor, job
    or period (as sreport), largest first."""
    return usage.usage(session, user, by, project, username, flavor, period)


@router.get("/projects/{name}/credits", response_model=usage.CreditBalance, responses=refusals(404))
def credit_balance(name: str, session: ReadSessionDep, user: CurrentUser) -> usage.CreditBalance:
    """A project's credits: granted, used, earned, left, and the same from its ledger."""
    return usage.balance(session, user, name)
