"""Who is asking: API tokens (stored as digests, shown once) and the principal they name.

Every service takes a Principal and scopes what it reads and writes by it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from sqlalchemy import delete
from sqlmodel import Session, col, select

from web.models import (
    ApiToken,
    MemberRole,
    Membership,
    PortalSessionRecord,
    Role,
    TokenCreated,
    TokenPublic,
    User,
)
from web.services import passwords
from web.services.changes import record_change
from web.services.errors import Forbidden, Invalid, NotFound, Unauthenticated

if TYPE_CHECKING:
    from sqlalchemy import CursorResult

TOKEN_PREFIX = "gpp_"


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role
    # The projects the user belongs to, and as what.
    memberships: dict[str, MemberRole] = field(default_factory=dict)
    # When the token it signed in with expires (None: never; or not signed in by token).
    token_expires_at: float | None = None
    token_id: int | None = None  # the token it signed in with (None: a password)

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def reads_all(self) -> bool:
        """Admins and operators see every project; researchers only their own."""
        return self.role in (Role.ADMIN, Role.OPERATOR)

    def visible_projects(self) -> set[str] | None:
        """The projects this principal may see; None: all of them."""
        return None if self.reads_all else set(self.memberships)

    def sees(self, project: str) -> bool:
        return self.reads_all or project in self.memberships

    def leads(self, project: str) -> bool:
        return self.memberships.get(project) is MemberRole.PI

    def require(self, *roles: Role) -> None:
        if self.role not in roles:
            allowed = " or ".join(r.value for r in roles)
            raise Forbidden(f"this needs the {allowed} role; {self.name} is a {self.role.value}")


V = TypeVar("V")


class TokenCache(Generic[V]):
    """Recently authenticated tokens, so a burst of requests does not look each one up.
    An entry lives `ttl_s`; whatever changes who a user is (a token revoked, a role, a
    membership) clears the cache of the server it went through, and other replicas follow
    within `ttl_s`.

    A lookup that started before a clear() may end after it with what it read before the
    change (the revoked token still valid): `generation` counts the clears, a lookup reads
    it before it starts, and put() keeps its answer only if no clear() came in between."""

    def __init__(self, ttl_s: float = 5.0, size: int = 10_000) -> None:
        self.ttl_s, self.size = ttl_s, size
        self._entries: dict[str, tuple[float, V]] = {}
        self._generation = 0
        self._lock = threading.Lock()  # clear() runs in the API's worker threads

    @property
    def generation(self) -> int:
        return self._generation

    def get(self, token: str, now: float) -> V | None:
        entry = self._entries.get(token)
        if entry is None or entry[0] <= now:
            return None
        return entry[1]

    def put(
        self, token: str, value: V, now: float, generation: int, expires_at: float | None = None
    ) -> bool:
        """Keep `value` for `token` (until `expires_at` at the latest) if it was looked up
        at `generation` and nothing cleared the cache since; whether it was kept."""
        until = now + self.ttl_s
        if expires_at is not None:
            until = min(until, expires_at)
        with self._lock:
            if generation != self._generation:
                return False
            if len(self._entries) >= self.size:
                self._entries.clear()
            self._entries[token] = (until, value)
        return True

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()


class PrincipalCache(TokenCache[Principal]):
    """Users' tokens -> principals; an entry ends no later than its token."""

    def put(
        self,
        token: str,
        value: Principal,
        now: float,
        generation: int,
        expires_at: float | None = None,
    ) -> bool:
        return super().put(token, value, now, generation, expires_at or value.token_expires_at)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def principal_of(session: Session, user: User) -> Principal:
    rows = session.exec(select(Membership).where(Membership.user == user.name)).all()
    return Principal(user.name, Role(user.role), {m.project: MemberRole(m.role) for m in rows})


def authenticate(session: Session, token: str, now: float) -> Principal:
    """The principal a bearer token names; Unauthenticated if it names none."""
    if not token.startswith(TOKEN_PREFIX):
        raise Unauthenticated("invalid token: gpupool tokens start with " + TOKEN_PREFIX)
    found = session.exec(
        select(ApiToken, User)
        .join(User, col(User.name) == col(ApiToken.user))
        .where(ApiToken.digest == digest(token))
    ).first()
    if found is None:
        raise Unauthenticated("invalid token")
    row, user = found
    _require_usable(row, now)
    if not user.active:
        raise Unauthenticated(f"user {user.name} is deactivated")
    return replace(principal_of(session, user), token_expires_at=row.expires_at, token_id=row.id)


def _require_usable(row: ApiToken, now: float) -> None:
    if row.revoked_at is not None:
        raise Unauthenticated("this token was revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise Unauthenticated("this token has expired")


def issue_token(
    session: Session,
    asker: Principal,
    user_name: str,
    now: float,
    label: str = "",
    expires_in_days: int | None = None,
) -> TokenCreated:
    """A new token for `user_name` (admins for anyone, others for themselves)."""
    if user_name != asker.name:
        asker.require(Role.ADMIN)
    if session.get(User, user_name) is None:
        raise NotFound(f"no user {user_name!r}", field="user")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        user=user_name,
        label=label,
        prefix=secret[:12],
        digest=digest(secret),
        created_at=now,
        expires_at=None if expires_in_days is None else now + expires_in_days * 86400,
    )
    session.add(row)
    session.flush()
    return TokenCreated(**TokenPublic.model_validate(row).model_dump(), token=secret)


def list_tokens(session: Session, asker: Principal, user_name: str | None) -> list[ApiToken]:
    query = select(ApiToken).order_by(col(ApiToken.id))
    if user_name is not None and user_name != asker.name:
        asker.require(Role.ADMIN)
    if user_name is not None or not asker.is_admin:
        query = query.where(ApiToken.user == (user_name or asker.name))
    return list(session.exec(query).all())


def revoke_token(session: Session, asker: Principal, token_id: int, now: float) -> ApiToken:
    row = session.get(ApiToken, token_id)
    if row is None or (row.user != asker.name and not asker.is_admin):
        raise NotFound(f"no token {token_id}", field="token")
    if row.revoked_at is None:
        row.revoked_at = now
        session.add(row)
    return row


# --- passwords (the portal's sign-in) --------------------------------------------------------
# scrypt from the standard library, with a random salt per password; stored as
# "scrypt$n$r$p$salt$hash" (base64), so the cost can be raised later without a migration.

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD_LENGTH = passwords.MIN_LENGTH
MAX_PASSWORD_LENGTH = passwords.MAX_LENGTH


def _password_bytes(password: str) -> bytes:
    # A lone surrogate (from a JSON escape) must not crash a sign-in: it just never matches.
    return password.encode("utf-8", "surrogatepass")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(_password_bytes(password), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    parts = (str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(key))
    return "scrypt$" + "$".join(parts)


def password_matches(stored: str | None, password: str) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        return False
    _, n, r, p, salt, key = stored.split("$")
    found = hashlib.scrypt(
        _password_bytes(password), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p)
    )
    return hmac.compare_digest(found, base64.b64decode(key))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def check_password_rules(password: str, user_name: str = "") -> None:
    """Invalid, naming the rule, if `password` is too weak for `user_name` (passwords.py)."""
    weak = passwords.weakness(password, user_name)
    if weak is not None:
        raise Invalid(passwords.ENGLISH[weak], field="password")


def set_password(
    session: Session,
    asker: Principal,
    user_name: str,
    password: str,
    now: float,
    current_password: str | None = None,
) -> User:
    """Set a user's portal password (admins for anyone, others for themselves) and end the
    user's portal sessions. Changing one's own asks for the current one, once one is set
    (a stolen session or token alone cannot take the account over); an administrator
    setting another user's does not."""
    if user_name != asker.name:
        asker.require(Role.ADMIN)
    user = session.get(User, user_name)
    if user is None:
        raise NotFound(f"no user {user_name!r}", field="user")
    if user_name == asker.name and user.password_hash:
        if not current_password:
            raise Invalid(
                "your current password is needed to change your own", field="current_password"
            )
        if not password_matches(user.password_hash, current_password):
            raise WrongCurrentPassword(
                "this is not your current password", field="current_password"
            )
    check_password_rules(password, user_name)
    user.password_hash = hash_password(password)
    session.add(user)
    end_sessions(session, user_name)
    record_change(session, asker.name, f"user:{user_name}", "password", "", "set", now)
    return user


class WrongCurrentPassword(Invalid):
    """The current password given to change one's own was wrong (a guess, counted as a
    failed sign-in by the callers' throttle)."""


# The same work for unknown users as for known ones, so timing tells nobody which exist.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def sign_in(session: Session, user_name: str, password: str) -> Principal:
    """The principal a user name and password name; Unauthenticated (never saying which of
    the two was wrong) otherwise."""
    # A name with a NUL is no user's (and PostgreSQL cannot even compare it).
    user = session.get(User, user_name) if user_name and "\x00" not in user_name else None
    stored = user.password_hash if user is not None else None
    if not password_matches(stored or _DUMMY_HASH, password) or user is None or not stored:
        raise Unauthenticated("wrong user name or password")
    if not user.active:
        raise Unauthenticated(f"user {user.name} is deactivated")
    return principal_of(session, user)


# --- the portal's sessions ------------------------------------------------------------------
# The cookie carries a random id; the row, its digest. A session is valid while its row
# is: deleting rows ends sessions at once on every server (each reads the row afresh, its
# answer cached by the portal no longer than the principal cache's few seconds, and cleared
# on the server that ended them).


def open_session(session: Session, principal: Principal, now: float, lifetime_s: float) -> str:
    """A new session for a principal just signed in; its id, for the cookie."""
    session.execute(delete(PortalSessionRecord).where(col(PortalSessionRecord.expires_at) <= now))
    session_id = secrets.token_urlsafe(32)
    session.add(
        PortalSessionRecord(
            digest=digest(session_id),
            user=principal.name,
            token_id=principal.token_id,
            created_at=now,
            expires_at=now + lifetime_s,
        )
    )
    return session_id


def session_principal(session: Session, session_id: str, now: float) -> Principal:
    """Who a session is signed in as; Unauthenticated once it has ended (signed out,
    expired, ended by a password change or an administrator, or the user deactivated)."""
    row = session.get(PortalSessionRecord, digest(session_id))
    if row is None or row.expires_at <= now:
        raise Unauthenticated("signed out: this session has ended")
    return principal_named(session, row.user, row.token_id, now)


def end_session(session: Session, session_id: str) -> None:
    session.execute(
        delete(PortalSessionRecord).where(col(PortalSessionRecord.digest) == digest(session_id))
    )


def end_sessions(session: Session, user_name: str) -> int:
    """End every portal session of a user; how many there were."""
    ended = session.execute(
        delete(PortalSessionRecord).where(col(PortalSessionRecord.user) == user_name)
    )
    return int(cast("CursorResult[Any]", ended).rowcount or 0)


def sign_out_everywhere(session: Session, asker: Principal, user_name: str, now: float) -> int:
    """An administrator ends every portal session of a user (a lost laptop, a cookie
    thought stolen); how many were ended. Their API tokens are revoked one by one."""
    asker.require(Role.ADMIN)
    if session.get(User, user_name) is None:
        raise NotFound(f"no user {user_name!r}", field="user")
    ended = end_sessions(session, user_name)
    record_change(session, asker.name, f"user:{user_name}", "sessions", str(ended), "ended", now)
    return ended


def principal_named(
    session: Session, user_name: str, token_id: int | None = None, now: float = 0.0
) -> Principal:
    """The principal of a signed-in user (the portal's session names the user, and the
    token it signed in with, if it did); one deactivated or gone since is signed out, and
    so is one whose token has been revoked or has expired since."""
    user = session.get(User, user_name)
    if user is None or not user.active:
        raise Unauthenticated("signed out: the user is deactivated or gone")
    if token_id is None:
        return principal_of(session, user)
    row = session.get(ApiToken, token_id)
    if row is None or row.user != user_name:
        raise Unauthenticated("signed out: the token it signed in with is gone")
    _require_usable(row, now)
    return replace(principal_of(session, user), token_expires_at=row.expires_at, token_id=row.id)
