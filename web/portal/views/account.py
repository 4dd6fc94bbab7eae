"""Signing in and out, the language, and the user's own account (password, API tokens)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.responses import Response

from web.api.deps import IdPath
from web.db import read_session, write_session
from web.models import TokenCreate, TokenCreated, TokenPublic
from web.portal.deps import Page, PageDep, SignedIn
from web.portal.forms import FORM, Form, Gettext, blank_to_none, read_form
from web.portal.i18n import LANGUAGES
from web.services import auth
from web.services.auth import Principal
from web.services.errors import NotFound, ServiceError, Unauthenticated

router = APIRouter()


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (never another host)."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


@router.get("/signin")
def signin_form(page: PageDep, next: Annotated[str, Query(max_length=2000)] = "/") -> Response:
    if page.user is not None:
        return page.redirect(safe_next(next))
    return page.render("signin.html", form=None, next=safe_next(next))


@router.post("/signin")
async def signin(page: PageDep) -> Response:
    _ = page.gettext
    form = await read_form(page.request, page.session.csrf, _)
    target = safe_next(form.get("next"))
    name, password, token = (
        form.get("user").strip(),
        form.get("password"),
        form.get("token").strip(),
    )
    if form.ok and not token:
        if not name:
            form.error("user", _("Required."))
        if not password:
            form.error("password", _("Required."))
    if form.ok:
        try:
            principal = await run_in_threadpool(_sign_in, page, name, password, token)
        except Unauthenticated:
            if token:
                form.error("token", _("This token is not valid (wrong, revoked or expired)."))
            else:
                form.error(FORM, _("Wrong user name or password."))
        else:
            page.session.sign_in(principal.name, page.now, principal.token_id)
            page.pool.principals.clear()  # the session's user looked up afresh
            return page.redirect(target)
    form.values.pop("password", None)  # never sent back into the page
    form.values.pop("token", None)
    return page.render("signin.html", status_code=400, form=form, next=target)


def _sign_in(page: Page, name: str, password: str, token: str) -> Principal:
    with read_session(page.pool.engine) as session:
        if token:
            return auth.authenticate(session, token, page.now)
        return auth.sign_in(session, name, password)


@router.post("/signout")
async def signout(page: PageDep) -> Response:
    form = await read_form(page.request, page.session.csrf, page.gettext)
    if form.ok:
        page.session.sign_out()
    return page.redirect("/signin")


@router.post("/language")
async def choose_language(page: PageDep) -> Response:
    form = await read_form(page.request, page.session.csrf, page.gettext)
    language = form.get("language")
    if form.ok and language in LANGUAGES:
        page.session.language = language
        page.language = language
        page.session.changed = True
    return page.redirect(safe_next(form.get("next")))


@router.get("/account")
def account(page: SignedIn) -> Response:
    return page.render(
        "account.html", form=None, tokens=_tokens(page), created=None, token_form=None
    )


def _tokens(page: Page) -> list[TokenPublic]:
    with read_session(page.pool.engine) as session:
        rows = auth.list_tokens(session, page.who, page.who.name)
        return [TokenPublic.model_validate(t.model_dump()) for t in rows]


@router.post("/account/password")
async def change_password(page: SignedIn) -> Response:
    _ = page.gettext
    form = await read_form(page.request, page.session.csrf, _)
    if form.ok:
        password_error(page, form)
    if form.ok:
        await run_in_threadpool(_set_password, page, form.get("password"))
        page.session.say("ok", _("Your password was changed."))
        return page.redirect("/account")
    form.values.pop("password", None)
    form.values.pop("password_again", None)
    return page.render(
        "account.html",
        status_code=400,
        form=form,
        tokens=_tokens(page),
        created=None,
        token_form=None,
    )


def password_error(page: Page, form: Form) -> None:
    """The password fields' rules: the same twice, of an allowed length."""
    _ = page.gettext
    password = form.get("password")
    if password != form.get("password_again"):
        form.error("password_again", _("The two passwords differ."))
    try:
        auth.check_password_rules(password)
    except ServiceError:
        form.error(
            "password",
            _("Between %(low)s and %(high)s characters.")
            % {"low": auth.MIN_PASSWORD_LENGTH, "high": auth.MAX_PASSWORD_LENGTH},
        )


def _set_password(page: Page, password: str) -> None:
    with write_session(page.pool.engine) as session:
        auth.set_password(session, page.who, page.who.name, password, page.now)


# --- my API tokens ---------------------------------------------------------------------------


def issue_token_spec(form: Form, _: Gettext) -> TokenCreate | None:
    """A token form's label and days to expiry (blank: never) as TokenCreate; None, with
    the errors on the form, if refused."""
    try:
        return TokenCreate.model_validate(
            blank_to_none(form.values, ("expires_in_days",)) | {"label": form.get("label").strip()}
        )
    except ValidationError as err:
        form.refuse(err, _)
        return None


@router.post("/account/tokens")
async def issue_own_token(page: SignedIn) -> Response:
    """A new API token of my own; its secret is on this answer only (the pool keeps its
    digest), so it is never shown again."""
    _ = page.gettext
    form = await read_form(page.request, page.session.csrf, _)
    spec = issue_token_spec(form, _) if form.ok else None
    created = None
    if spec is not None and form.ok:
        created = await run_in_threadpool(_issue_own, page, spec)
    return page.render(
        "account.html",
        status_code=200 if created is not None else 400,
        form=None,
        tokens=_tokens(page),
        created=created,
        token_form=None if created is not None else form,
    )


def _issue_own(page: Page, spec: TokenCreate) -> TokenCreated:
    with write_session(page.pool.engine) as session:
        return auth.issue_token(
            session, page.who, page.who.name, page.now, spec.label, spec.expires_in_days
        )


@router.post("/account/tokens/{token_id}/revoke")
async def revoke_own_token(page: SignedIn, token_id: IdPath) -> Response:
    """Revoke one of my tokens (another's, even an administrator's own view of it, is not
    found here)."""
    _ = page.gettext
    form = await read_form(page.request, page.session.csrf, _)
    if not form.ok:
        return page.render(
            "account.html",
            status_code=400,
            form=None,
            tokens=_tokens(page),
            created=None,
            token_form=form,
        )
    prefix = await run_in_threadpool(_revoke_own, page, token_id)
    page.pool.identities_changed()
    page.session.say("ok", _("Token %(prefix)s… is revoked.") % {"prefix": prefix})
    return page.redirect("/account")


def _revoke_own(page: Page, token_id: int) -> str:
    with write_session(page.pool.engine) as session:
        row = auth.revoke_token(session, page.who, token_id, page.now)
        if row.user != page.who.name:
            raise NotFound(f"no token {token_id}", field="token")
        return row.prefix
