"""Mounting the portal on the app: its pages, its static files, and its error pages (a
page in the user's language, never a traceback; signed-out users are sent to sign in)."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from web.pool import Pool
from web.portal.deps import Page, Portal, SignInNeeded, sign_in_url
from web.portal.i18n import negotiate
from web.portal.rendering import make_environments
from web.portal.sessions import COOKIE, SessionCodec, session_secret
from web.portal.views import account, admin, operator, researcher
from web.services import signing
from web.services.errors import (
    Busy,
    Forbidden,
    NotFound,
    ServiceError,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger("gpupool.portal")
STATIC = Path(__file__).parent / "static"
# Paths that are not the portal's: their errors are the API's JSON.
NOT_PORTAL = ("/api/", "/metrics", "/healthz", "/docs", "/redoc", "/openapi.json")


def mount_portal(app: FastAPI, pool: Pool) -> None:
    settings = pool.settings
    secret = session_secret(signing.pool_key(settings.statement_key_path))
    codec = SessionCodec(
        secret, settings.portal_session_hours * 3600, settings.portal_secure_cookies
    )
    app.state.portal = Portal(pool, codec, make_environments())
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for module in (account, researcher, admin, operator):
        app.include_router(module.router, include_in_schema=False)


def is_portal(request: Request) -> bool:
    path = request.url.path
    return hasattr(request.app.state, "portal") and not path.startswith(NOT_PORTAL)


def error_page(request: Request, err: Exception) -> Response | None:
    """The portal's answer to an error on one of its pages (None: not a portal page)."""
    if not is_portal(request):
        return None
    page = _page_of(request)
    _ = page.gettext
    if isinstance(err, SignInNeeded | Unauthenticated):
        if isinstance(err, Unauthenticated):
            page.session.sign_out()
        return page.redirect(sign_in_url(request))
    if isinstance(err, NotFound) or (
        isinstance(err, StarletteHTTPException) and err.status_code == 404
    ):
        return page.render(
            "error.html",
            status_code=404,
            title=_("Not found"),
            message=_("There is no such page, or it is not one you may see."),
        )
    if isinstance(err, Forbidden):
        return page.render(
            "error.html",
            status_code=403,
            title=_("Not allowed"),
            message=_("Your role does not allow this page."),
        )
    if isinstance(err, StarletteHTTPException):
        return page.render(
            "error.html", status_code=err.status_code, title=str(err.detail), message=""
        )
    if isinstance(err, Unavailable):  # Ray, say, not answering: the same page later works
        answer = page.render(
            "error.html", status_code=503, title=_("Not available now"), message=err.message
        )
        if isinstance(err, Busy):
            answer.headers["Retry-After"] = str(err.retry_after_s)
        return answer
    if isinstance(err, ServiceError):
        return page.render(
            "error.html", status_code=400, title=_("Not accepted"), message=err.message
        )
    incident = uuid.uuid4().hex[:12]
    log.error("portal error %s on %s %s", incident, request.method, request.url.path, exc_info=err)
    return page.render(
        "error.html",
        status_code=500,
        title=_("Something went wrong"),
        message=_("The server logged it as %(incident)s. Please try again, or tell the operators.")
        % {"incident": incident},
    )


def _page_of(request: Request) -> Page:
    page: Page | None = getattr(request.state, "portal_page", None)
    if page is not None:
        return page
    # The error came before the page was made (a path that did not parse, say).
    portal: Portal = request.app.state.portal
    session = portal.codec.read(request.cookies.get(COOKIE), portal.pool.clock.now())
    language = session.language or negotiate(request.headers.get("accept-language"))
    return Page(request, portal, session, language, None)
