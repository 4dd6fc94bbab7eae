"""What a portal view needs, as dependencies: the page's context (session, language,
formats, the signed-in user) and the guard that sends the signed-out to the sign-in page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from jinja2 import Environment
from starlette.responses import HTMLResponse, RedirectResponse, Response

from web.db import read_session
from web.models import without_surrogates
from web.pool import Pool
from web.portal.headers import PORTAL_ANSWER
from web.portal.i18n import LANGUAGES, Formats, language_name, negotiate, translations
from web.portal.sessions import COOKIE, PortalSession, SessionCodec
from web.services.auth import Principal, session_principal
from web.services.errors import Unauthenticated

SESSION_KEY_PREFIX = "\x00portal:"  # the principal cache's keys for sessions: never a token


class SignInNeeded(Exception):
    """Raised by a view's guard: the page needs a signed-in user (see app.py)."""


@dataclass
class Portal:
    """The portal's parts, wired once (app.state.portal)."""

    pool: Pool
    codec: SessionCodec
    environments: dict[str, Environment]


@dataclass
class Page:
    """One request's view of the portal: render pages and redirects through it, so the
    session cookie is written when it changed."""

    request: Request
    portal: Portal
    session: PortalSession
    language: str
    user: Principal | None

    @property
    def pool(self) -> Pool:
        return self.portal.pool

    @property
    def who(self) -> Principal:
        """The signed-in user (a page behind SignedIn always has one)."""
        if self.user is None:
            raise SignInNeeded()
        return self.user

    @property
    def now(self) -> float:
        return self.pool.clock.now()

    @property
    def address(self) -> str | None:
        """The client's address (a proxy's, unless uvicorn is told to trust its
        X-Forwarded-For): what sign-ins are throttled by."""
        return self.request.client.host if self.request.client else None

    def gettext(self, message: str) -> str:
        return translations(self.language).gettext(message)

    _ = gettext

    def render(self, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        env = self.portal.environments[self.language]
        body = env.get_template(template).render(
            page=self,
            user=self.user,
            csrf_token=self.session.csrf,
            f=Formats(self.language, self.pool.settings.timezone),
            lang=self.language,
            languages=[(code, language_name(code)) for code in LANGUAGES],
            flash=self.session.take_flash(),
            path=self.request.url.path,
            full_path=_full_path(self.request),
            **context,
        )
        # A stored text no UTF-8 page can carry (a lone surrogate, kept from before the
        # intake refused them) is shown replaced, not the page failed.
        response = HTMLResponse(without_surrogates(body), status_code=status_code)
        self.finish(response)
        return response

    def redirect(self, url: str) -> Response:
        return self.finish(RedirectResponse(url, status_code=303))

    def finish(self, response: Response) -> Response:
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["Content-Language"] = self.language
        response.headers["Vary"] = "Accept-Language, Cookie"
        for name, value in PORTAL_ANSWER.items():  # the middleware's, for error pages too
            response.headers.setdefault(name, value)
        https = self.request.url.scheme == "https"
        self.portal.codec.write(self.session, response, https=https)
        return response


def _full_path(request: Request) -> str:
    query = request.url.query
    return request.url.path + ("?" + query if query else "")


def sign_in_url(request: Request) -> str:
    return "/signin?next=" + quote(_full_path(request), safe="")


async def get_page(request: Request) -> Page:
    portal: Portal = request.app.state.portal
    pool = portal.pool
    now = pool.clock.now()
    session = portal.codec.read(request.cookies.get(COOKIE), now)
    language = session.language or negotiate(request.headers.get("accept-language"))
    user = None
    if session.user is not None and session.session_id is not None:
        # Cached a few seconds; whatever ends sessions clears the cache of its server
        # (Pool.sessions_ended), other replicas follow within the cache's lifetime.
        key = f"{SESSION_KEY_PREFIX}{session.session_id}"
        user = pool.principals.get(key, now)
        if user is None:
            generation = pool.principals.generation
            try:
                user = await run_in_threadpool(_principal, pool, session.session_id, now)
            except Unauthenticated:
                session.sign_out()
            else:
                pool.principals.put(key, user, now, generation)
        if user is not None and user.name != session.user:  # never, but never trust it
            user = None
            session.sign_out()
    page = Page(request, portal, session, language, user)
    request.state.portal_page = page  # for the error pages (app.py)
    return page


def _principal(pool: Pool, session_id: str, now: float) -> Principal:
    with read_session(pool.engine) as session:
        return session_principal(session, session_id, now)


PageDep = Annotated[Page, Depends(get_page)]


async def get_signed_in(page: PageDep) -> Page:
    if page.user is None:
        raise SignInNeeded()
    return page


SignedIn = Annotated[Page, Depends(get_signed_in)]
