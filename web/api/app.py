"""The HTTP application: /api/v1 (thin routers over web/services), the portal's pages
(web/portal), /healthz, /metrics, /docs."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from web.api.deps import CurrentUser, ReadSessionDep, refuse_nul
from web.api.errors import document_refusals, refusals
from web.api.routes import accounts, agents, jobs, nodes, projects, statements
from web.db import read_session
from web.models import Role
from web.pool import Pool
from web.portal.app import NOT_PORTAL, error_page, is_portal, mount_portal
from web.portal.deps import SignInNeeded
from web.portal.headers import SecurityHeaders
from web.services import signing
from web.services.errors import (
    Busy,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    ServiceError,
    TooManyAttempts,
    Unauthenticated,
    Unavailable,
)
from web.services.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from web.services.metrics import render_metrics

log = logging.getLogger("gpupool.api")

STATUS = {
    Invalid: 422,
    NotFound: 404,
    Forbidden: 403,
    Conflict: 409,
    Unauthenticated: 401,
    Unavailable: 503,
    TooManyAttempts: 429,
}


def create_app(pool: Pool) -> FastAPI:
    """The app over a wired pool. Its lifespan starts and stops the pool's loop."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        signing.pool_key(pool.settings.statement_key_path)  # made on first start
        pool.start()
        try:
            yield
        finally:
            pool.stop()

    app = FastAPI(
        title="gpupool",
        summary="Quota-aware admission, metering and usage statements for a shared GPU pool.",
        version="0.1.0",
        lifespan=lifespan,
        # gpupool exports no OpenTelemetry (operators scrape /metrics); FastAPI's own
        # checks for it read the environment on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.pool = pool
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = default_openapi()
            document.setdefault("components", {}).setdefault("schemas", {}).update(
                agents.component_schemas()
            )
            document_refusals(document)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
    api = APIRouter(prefix="/api/v1")
    api.include_router(jobs.router)  # its routes that take text in a path or query say so
    api.include_router(agents.router)
    for module in (projects, nodes, accounts, statements):  # names in their paths
        api.include_router(
            module.router, dependencies=[Depends(refuse_nul)], responses=refusals(422)
        )
    app.include_router(api)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, object]:
        with read_session(pool.engine) as session:
            session.execute(text("SELECT 1"))
        return {"status": "ok", "leader": pool.leading()}

    @app.get(
        "/metrics",
        tags=["health"],
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
            **refusals(403),
        },
    )
    def metrics(session: ReadSessionDep, user: CurrentUser) -> Response:
        """The pool in Prometheus' text format (dcgm-exporter's GPU metrics and gpupool_*
        gauges), for operators and admins: scrape with an operator's token."""
        user.require(Role.OPERATOR, Role.ADMIN)
        metrics = render_metrics(session, pool.settings.idle_flag_after_s)
        return Response(metrics, media_type=METRICS_CONTENT_TYPE)

    mount_portal(app, pool)

    # Errors on the portal's pages are pages (web/portal/app.py); the API's are JSON.
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, err: ServiceError) -> Response:
        return error_page(request, err) or service_error_response(err)

    @app.exception_handler(SignInNeeded)
    async def sign_in_needed(request: Request, err: SignInNeeded) -> Response:
        return error_page(request, err) or service_error_response(Unauthenticated("sign in"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        return error_page(request, err) or http_error_response(err)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError) -> Response:
        if is_portal(request):  # a path or query a person edited: no such page
            return error_page(request, NotFound("no such page")) or Response(status_code=404)
        return invalid_request_response(err.errors())

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> Response:
        return error_page(request, err) or unexpected_error_response(
            request.method, request.url.path
        )

    app.add_middleware(AgentReportsFastPath, pool=pool)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=pool.settings.max_request_bytes,
        # An agent back from an outage sends what it buffered in few requests.
        larger={
            "/api/v1/agents/reports": pool.settings.max_report_bytes,
            # A statement lists every ledger entry it is built from.
            "/api/v1/statements/verify": pool.settings.max_statement_bytes,
            "/verify": pool.settings.max_statement_bytes,  # the portal's page of the same
        },
    )
    app.add_middleware(SecurityHeaders, not_portal=NOT_PORTAL)  # outermost: on every answer
    return app


# The bodies below are web/api/errors.py's ErrorBody (and InvalidBody for 422), which the
# OpenAPI schema documents; tests/web/api/test_openapi_contract.py holds them to it.


def service_error_response(err: ServiceError) -> JSONResponse:
    code = next((c for kind, c in STATUS.items() if isinstance(err, kind)), 400)
    headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
    if isinstance(err, TooManyAttempts | Busy):
        headers = {"Retry-After": str(err.retry_after_s)}
    body: dict[str, Any] = {"detail": str(err), "field": err.field or None}
    if code == 422:
        body["errors"] = [{"field": err.field, "message": err.message}] if err.field else []
    return JSONResponse(body, status_code=code, headers=headers)


def invalid_request_response(errors: Sequence[Mapping[str, Any]]) -> JSONResponse:
    fields = [_field_error(e) for e in errors]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in fields)
    first = fields[0]["field"] if fields else None
    return JSONResponse({"detail": detail, "field": first, "errors": fields}, status_code=422)


UNREADABLE_BODY = (
    "must be JSON text in UTF-8, with arrays and objects nested at most a few hundred deep"
)


def http_error_response(err: StarletteHTTPException) -> Response:
    """The API's answer to an HTTP error of the framework's own: no such route (404), method
    (405), or a body it could not read (400 from FastAPI, for a body that is not UTF-8 or
    nests deeper than Python's parser goes: answered as the 422 any other unreadable JSON
    body gets, naming the body)."""
    if err.status_code == 400:
        return invalid_request_response([{"loc": ("body",), "msg": UNREADABLE_BODY}])
    if err.status_code in (204, 304):
        return Response(status_code=err.status_code, headers=err.headers)
    body = {"detail": str(err.detail), "field": None}
    return JSONResponse(body, status_code=err.status_code, headers=err.headers)


def unexpected_error_response(method: str, path: str) -> JSONResponse:
    """500 naming an incident id; the error itself goes to the log (call from an except)."""
    incident = uuid.uuid4().hex[:12]
    log.exception("unexpected error %s on %s %s", incident, method, path)
    return JSONResponse(
        {"detail": f"internal error; the server logged it as {incident}"}, status_code=500
    )


class AgentReportsFastPath:
    """POST /api/v1/agents/reports without FastAPI's per-request machinery (dependency
    resolution, body decoding, response validation), which costs more than taking the
    report: thousands of agents call it every few seconds. It authenticates, parses and
    answers exactly as the route in web/api/routes/agents.py (which documents it in the
    OpenAPI schema), through the same functions."""

    def __init__(self, app: ASGIApp, pool: Pool) -> None:
        self.app, self.pool = app, pool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != agents.REPORTS_PATH
            or scope["method"] != "POST"
        ):
            await self.app(scope, receive, send)
            return
        try:
            node = await agents.node_of(self.pool, agents.bearer_token(scope))
            response: Response = await agents.take_reports(self.pool, node, await _body(receive))
        except RequestValidationError as err:
            response = invalid_request_response(err.errors())
        except ServiceError as err:
            response = service_error_response(err)
        except Exception:
            response = unexpected_error_response("POST", agents.REPORTS_PATH)
        await response(scope, receive, send)


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _field_error(error: Mapping[str, Any]) -> dict[str, str]:
    if error.get("type") == "json_invalid":
        # FastAPI's loc is ("body", character offset) and its msg says nothing more: the
        # body is at fault, and the parser's own words say where.
        reason = str((error.get("ctx") or {}).get("error", "")) or str(error.get("msg", ""))
        offset = [part for part in error.get("loc", ()) if isinstance(part, int)]
        at = f" (at character {offset[0]})" if offset else ""
        return {"field": "body", "message": f"not valid JSON: {reason}{at}"[:300]}
    where = ("body", "query", "path", "header")
    loc = [str(part) for part in error.get("loc", ()) if part not in where]
    message = str(error.get("msg", "invalid"))
    message = message.removeprefix("Value error, ")
    if error.get("type") == "extra_forbidden":
        message = "not a field this request takes (misspelled?)"
    if "input" in error and error.get("type") != "missing":
        message += f" (got {error['input']!r})"[:200]
    return {"field": ".".join(loc) or "body", "message": message}


class BodySizeLimit:
    """Refuse request bodies over max_bytes (or the limit `larger` sets for a path) with
    413, before anything reads them."""

    def __init__(self, app: ASGIApp, max_bytes: int, larger: dict[str, int] | None = None) -> None:
        self.app, self.max_bytes, self.larger = app, max_bytes, larger or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope["path"], self.max_bytes)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit():
            if int(length) > limit:
                await self._refuse(send, limit)
            else:  # the server reads no more than the length said
                await self.app(scope, receive, send)
            return
        # No length given (chunked): read up to the limit here, then hand the body on.
        messages: list[Message] = []
        seen = 0
        while True:
            message = await receive()
            messages.append(message)
            seen += len(message.get("body", b""))
            if seen > limit:
                await self._refuse(send, limit)
                return
            if message["type"] != "http.request" or not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, limit: int) -> None:
        response = JSONResponse(
            {"detail": f"request body over the limit of {limit} bytes", "field": "body"},
            status_code=413,
        )
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
