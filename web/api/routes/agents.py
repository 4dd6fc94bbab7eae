"""What node agents send: their reports (with the node's own token).

The one route called thousands of times a second by machines rather than people, so it
parses its body itself (pydantic's JSON parser, a fraction of the cost of FastAPI's
decode-then-validate) and answers with the acknowledgement already serialized; the
OpenAPI schema and the 422 answers are the same as for any other route."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from functools import cache
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.types import Scope

from agents.schema import ReportAck, ReportBatch
from web.api.deps import PoolDep
from web.api.errors import refusals
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


@router.post(
    "/reports",
    response_model=ReportAck,
    openapi_extra=BODY_SCHEMA,
    responses=refusals(403, 409, 422),
)
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
        errors = err.errors(include_url=False)
        raise RequestValidationError(with_allowed_ranges(_named(body, errors))) from None
    ack = await asyncio.wrap_future(pool.telemetry.submit(node, batch, pool.clock.now()))
    return Response(ack.model_dump_json(), media_type="application/json")


def _named(body: bytes, errors: list[Any]) -> list[Any]:
    """JSON pydantic's parser refuses as a whole (a lone surrogate escape such as "\\ud800",
    NaN) but Python's takes: the errors of its validation, which name the field at fault.
    Only for a refused body: the fast parser stays the one for every other."""
    if not any(error.get("type") == "json_invalid" for error in errors):
        return errors
    try:
        ReportBatch.model_validate(json.loads(body))
    except ValidationError as err:
        return err.errors(include_url=False)
    except (ValueError, RecursionError):  # not JSON at all, too deep, digits past Python's limit
        pass
    return errors


BOUND_ERRORS = {"less_than_equal", "greater_than_equal", "less_than", "greater_than"}


def with_allowed_ranges(errors: list[Any]) -> list[Any]:
    """The errors, a number out of its bounds saying both (pydantic names only the one
    crossed): "... (allowed: 0 to 10000)"."""
    for error in errors:
        if error.get("type") in BOUND_ERRORS:
            found = allowed_range(error.get("loc", ()))
            if found is not None:
                error["msg"] = f"{error['msg']} (allowed: {found[0]:,} to {found[1]:,})"
    return errors


@cache
def _report_schema() -> dict[str, Any]:
    return ReportBatch.model_json_schema()


def allowed_range(loc: Sequence[int | str]) -> tuple[float, float] | None:
    """The minimum and maximum the schema gives the number at `loc`, when it gives both."""
    schema = _report_schema()
    node: dict[str, Any] = schema
    for part in loc:
        node = _resolved(schema, node)
        if isinstance(part, int):
            node = node.get("items", {})
        else:
            node = node.get("properties", {}).get(part, {})
    for choice in [node, *node.get("anyOf", [])]:
        if "minimum" in choice and "maximum" in choice:
            return choice["minimum"], choice["maximum"]
    return None


def _resolved(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """`node` with its $ref followed (or the one object of its anyOf that is not null)."""
    for choice in [node, *node.get("anyOf", [])]:
        ref = choice.get("$ref")
        if ref:
            found: dict[str, Any] = schema["$defs"][ref.rsplit("/", 1)[-1]]
            return found
        if "items" in choice or "properties" in choice:
            return dict(choice)
    return node
