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
from web.models import TokenCreate, TokenCreated, TokenPublic, User
from web.portal.deps import Page, PageDep, SignedIn
from web.portal.forms import FORM, Form, Gettext, blank_to_none, read_form
from web.portal.i18n import LANGUAGES
from web.services import auth, passwords
from web.services.auth import Principal, WrongCurrentPassword
from web.services.errors import NotFound, TooManyAttempts, Unauthenticated
from web.services.passwords import Weakness

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
    status_code, retry_after = 400, 0
    if form.ok:
        # A token names no account: only its address is throttled.
        account = None if token else name
        try:
            principal, session_id = await run_in_threadpool(
                lambda: page.pool.sign_ins.attempt(
                    account, page.address, lambda: _sign_in(page, name, password, token)
                )
            )
        except TooManyAttempts as err:
            status_code, retry_after = 429, err.retry_after_s
            form.error(FORM, too_many_attempts(page, err))
        except Unauthenticated:
            if token:
                form.error("token", _("This token is not valid (wrong, revoked or expired)."))
            else:
                form.error(FORM, _("Wrong user name or password."))
        else:
            page.session.sign_in(principal.name, page.now, session_id)
            return page.redirect(target)
    form.values.pop("password", None)  # never sent back into the page
    form.values.pop("token", None)
    response = page.render("signin.html", status_code=status_code, form=form, next=target)
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


def too_many_attempts(page: Page, err: TooManyAttempts) -> str:
    return page.gettext(
        "Too many failed attempts from here or for this account; try again in %(seconds)s s."
    ) % {"seconds": err.retry_after_s}


def _sign_in(page: Page, name: str, password: str, token: str) -> tuple[Principal, str]:
    """Who signs in, and their new session's id."""
    with write_session(page.pool.engine) as session:
        if token:
            principal = auth.authenticate(session, token, page.now)
        else:
            principal = auth.sign_in(session, name, password)
        lifetime_s = page.portal.codec.max_age_s
        return principal, auth.open_session(session, principal, page.now, lifetime_s)


@router.post("/signout")
async def signout(page: PageDep) -> Response:
    """Signs out this browser for good: the session's row goes, so a copy of its cookie
    is worth nothing after (other sessions of the user stay)."""
    form = await read_form(page.request, page.session.csrf, page.gettext)
    if form.ok:
        session_id = page.session.session_id
        if session_id is not None:
            await run_in_threadpool(_end_session, page, session_id)
            page.pool.sessions_ended()
        page.session.sign_out()
    return page.redirect("/signin")


def _end_session(page: Page, session_id: str) -> None:
    with write_session(page.pool.engine) as session:
        auth.end_session(session, session_id)


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
        "account.html",
        form=None,
        tokens=_tokens(page),
        created=None,
        token_form=None,
        has_password=_has_password(page),
    )


def _tokens(page: Page) -> list[TokenPublic]:
    with read_session(page.pool.engine) as session:
        rows = auth.list_tokens(session, page.who, page.who.name)
        return [TokenPublic.model_validate(t.model_dump()) for t in rows]


def _has_password(page: Page) -> bool:
    """Whether the user has a password yet (one who signs in by token alone may not)."""
    with read_session(page.pool.engine) as session:
        user = session.get(User, page.who.name)
        return user is not None and bool(user.password_hash)


@router.post("/account/password")
async def change_password(page: SignedIn) -> Response:
    """A new password, given the current one (if one is set). Every session of the user
    ends, this browser's included, which is signed in afresh."""
    _ = page.gettext
    form = await read_form(page.request, page.session.csrf, _)
    current = form.get("current_password")
    status_code, retry_after = 400, 0
    has_password = await run_in_threadpool(_has_password, page)
    if form.ok:  # the form is this site's: say everything wrong with it at once
        if not current and has_password:
            form.error("current_password", _("Required: your current password."))
        password_error(page, form, page.who.name)
    if form.ok:
        try:
            session_id = await run_in_threadpool(
                lambda: page.pool.sign_ins.attempt(
                    page.who.name,
                    page.address,
                    lambda: _set_password(page, form.get("password"), current),
                    wrong=(WrongCurrentPassword,),
                )
            )
        except TooManyAttempts as err:
            status_code, retry_after = 429, err.retry_after_s
            form.error("current_password", too_many_attempts(page, err))
        except WrongCurrentPassword:
            form.error("current_password", _("This is not your current password."))
        else:
            page.pool.sessions_ended()
            page.session.sign_in(page.who.name, page.now, session_id)
            page.session.say(
                "ok", _("Your password was changed. Your other sessions are signed out.")
            )
            return page.redirect("/account")
    for name in ("current_password", "password", "password_again"):
        form.values.pop(name, None)  # never sent back into the page
    response = page.render(
        "account.html",
        status_code=status_code,
        form=form,
        tokens=_tokens(page),
        created=None,
        token_form=None,
        has_password=has_password,
    )
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


def password_error(page: Page, form: Form, user_name: str) -> None:
    """The password fields' rules: the same twice, and not too weak for this user."""
    _ = page.gettext
    password = form.get("password")
    if password != form.get("password_again"):
        form.error("password_again", _("The two passwords differ."))
    weak = passwords.weakness(password, user_name)
    if weak is not None:
        form.error("password", weakness_message(page, weak))


def weakness_message(page: Page, weak: Weakness) -> str:
    _ = page.gettext
    return {
        Weakness.TOO_SHORT: _("Between %(low)s and %(high)s characters."),
        Weakness.TOO_LONG: _("Between %(low)s and %(high)s characters."),
        Weakness.NOT_TEXT: _("Only letters, digits, spaces and symbols."),
        Weakness.REPEATS: _("Too simple: one character or one short piece repeated."),
        Weakness.RUN: _("Too simple: a run of keys or letters, like abcdefghij or qwertyuiop."),
        Weakness.HAS_NAME: _("Too easy to guess: it contains the user name."),
        Weakness.COMMON: _(
            "Too easy to guess: one of the most common passwords, or one with digits added."
        ),
    }[weak] % {"low": passwords.MIN_LENGTH, "high": passwords.MAX_LENGTH}


def _set_password(page: Page, password: str, current: str) -> str:
    """Sets the password (which ends every session of the user); this browser's new
    session's id."""
    with write_session(page.pool.engine) as session:
        auth.set_password(
            session, page.who, page.who.name, password, page.now, current_password=current
        )
        lifetime_s = page.portal.codec.max_age_s
        return auth.open_session(session, page.who, page.now, lifetime_s)


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
