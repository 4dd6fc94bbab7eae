"""What node agents send: their reports (with the node's own token).

The one route called thousands of times a second by machines rather than people, so it
parses its body itself (pydantic's JSON parser, a fraction of the cost of FastAPI's
decode-then-validate) and answers with the acknowledgement already serialized; the
OpenAPI schema and the 422 answers are the same as for any other route."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.types import Scope

from agents.schema import ReportAck, ReportBatch
from web.api.deps import PoolDep
from web.pool import Pool
from web.services.errors import Unauthenticated

router = APIRouter(prefix="/agents", tags=["agents"])

BODY_SCHEMA = {
    "security": [{"HTTPBearer": []}],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ReportBatch"}}},
    },
}


def component_schemas() -> dict[str, object]:
    """ReportBatch and the models in it, for the OpenAPI document's components (FastAPI
    adds a body's models itself only when it parses the body)."""
    schema = ReportBatch.model_json_schema(ref_template="#/components/schemas/{model}")
    found: dict[str, object] = dict(schema.pop("$defs", {}))
    found["ReportBatch"] = schema
    return found


REPORTS_PATH = "/api/v1/agents/reports"


@router.post("/reports", response_model=ReportAck, openapi_extra=BODY_SCHEMA)
async def report(request: Request, pool: PoolDep) -> Response:
    """Take a batch of one node's reports (oldest first; body: ReportBatch), with the node's
    own token. Answered once they are stored; reports taken before (same boot, seq at or
    below the last taken) are acknowledged and not counted again, so an agent resends
    whatever got no answer. (Served by web.api.app.AgentReportsFastPath, through the same
    functions as here.)"""
    node = await node_of(pool, bearer_token(request.scope))
    return await take_reports(pool, node, await request.body())


def bearer_token(scope: Scope) -> str | None:
    """The token of the request's `Authorization: Bearer ...` header, if it has one."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


async def node_of(pool: Pool, token: str | None) -> str:
    """The node whose agent is calling (its node token names it)."""
    if not token:
        raise Unauthenticated("missing token: send 'Authorization: Bearer <node token>'")
    now, directory = pool.clock.now(), pool.node_tokens
    if directory.needs_reading(token, now):  # reads the database: not on the event loop
        return await run_in_threadpool(directory.authenticate, pool.read_session, token, now)
    return directory.authenticate(pool.read_session, token, now)


async def take_reports(pool: Pool, node: str, body: bytes) -> Response:
    try:
        batch = ReportBatch.model_validate_json(body)
    except ValidationError as err:
        raise RequestValidationError(err.errors(include_url=False)) from None
    ack = await asyncio.wrap_future(pool.telemetry.submit(node, batch, pool.clock.now()))
    return Response(ack.model_dump_json(), media_type="application/json")
