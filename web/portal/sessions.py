"""The portal's session: a cookie signed with a key derived from the pool's statement key
(so every server of a pool, which shares that key file, reads every other's cookies).

It holds who is signed in, since when, the id of the session's row (portal_sessions),
the form token (CSRF) and the language the user chose; HttpOnly, SameSite=Lax, and Secure
when the request came over HTTPS (its scheme, which uvicorn takes from X-Forwarded-Proto
of the proxies it trusts) or GPUPOOL_PORTAL_SECURE_COOKIES says the portal is served
over HTTPS. It expires GPUPOOL_PORTAL_SESSION_HOURS after sign-in. A signed-in cookie
counts only while its session's row lives (web/services/auth.py): sign-out, a password
change, deactivation and an administrator's "sign out everywhere" delete rows, and a copy
of the cookie is then worth nothing. Nothing about the user is trusted from the cookie:
role and projects are read afresh (see deps.py).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.responses import Response

COOKIE = "gpupool_session"
_SALT = "gpupool-portal-session"


def session_secret(pool_key: Ed25519PrivateKey) -> bytes:
    raw = pool_key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return hashlib.sha256(b"gpupool portal session\0" + raw).digest()


@dataclass
class PortalSession:
    user: str | None = None
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    language: str | None = None  # chosen by the user; None: by Accept-Language
    signed_in_at: float | None = None
    session_id: str | None = None  # names the session's row; None: signed out
    flash: list[tuple[str, str]] = field(default_factory=list)  # (kind, message) once
    changed: bool = True  # to be (re)written into the response

    def to_cookie(self) -> dict[str, Any]:
        return {
            "u": self.user,
            "c": self.csrf,
            "l": self.language,
            "t": self.signed_in_at,
            "s": self.session_id,
            "f": self.flash,
        }

    def sign_in(self, user: str, now: float, session_id: str) -> None:
        """A fresh form token at sign-in: one learnt before it is of no use after."""
        self.user, self.signed_in_at, self.session_id = user, now, session_id
        self.csrf = secrets.token_urlsafe(24)
        self.changed = True

    def sign_out(self) -> None:
        self.user, self.signed_in_at, self.session_id = None, None, None
        self.csrf = secrets.token_urlsafe(24)
        self.changed = True

    def say(self, kind: str, message: str) -> None:
        """A message for the next page shown (kind: ok, error)."""
        self.flash.append((kind, message))
        self.changed = True

    def take_flash(self) -> list[tuple[str, str]]:
        said, self.flash = self.flash, []
        if said:
            self.changed = True
        return said


class SessionCodec:
    def __init__(self, secret: bytes, max_age_s: float, secure: bool) -> None:
        self.serializer = URLSafeTimedSerializer(secret, salt=_SALT)
        self.max_age_s, self.secure = max_age_s, secure

    def read(self, cookie: str | None, now: float) -> PortalSession:
        """The session in a cookie; a new, signed-out one if there is none, it was not
        ours, or it is older than the portal's session lifetime."""
        if not cookie:
            return PortalSession()
        try:
            data = self.serializer.loads(cookie, max_age=int(self.max_age_s))
        except BadSignature:  # includes SignatureExpired
            return PortalSession()
        if not isinstance(data, dict) or not isinstance(data.get("c"), str):
            return PortalSession()
        signed_in_at = data.get("t")
        user = data.get("u") if isinstance(data.get("u"), str) else None
        session_id = data.get("s") if isinstance(data.get("s"), str) else None
        if user and (
            not isinstance(signed_in_at, int | float)
            or now - signed_in_at > self.max_age_s
            or not session_id  # a cookie from before sessions had rows
        ):
            user, signed_in_at = None, None
        flash = [
            (str(m[0]), str(m[1]))
            for m in data.get("f") or []
            if isinstance(m, list) and len(m) == 2
        ]
        return PortalSession(
            user=user,
            csrf=data["c"],
            language=data.get("l") if isinstance(data.get("l"), str) else None,
            signed_in_at=signed_in_at,
            session_id=session_id if user else None,
            flash=flash,
            changed=False,
        )

    def write(self, session: PortalSession, response: Response, https: bool = False) -> None:
        """Into the response if it changed; Secure if the portal is served over HTTPS or
        this request came over it."""
        if not session.changed:
            return
        response.set_cookie(
            COOKIE,
            self.serializer.dumps(session.to_cookie()),
            max_age=int(self.max_age_s),
            httponly=True,
            samesite="lax",
            secure=self.secure or https,
            path="/",
        )
