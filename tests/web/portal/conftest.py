"""The portal's tests without a browser: a signed-in client per user over the seeded test
pool of tests/web/conftest.py (its users get the password `password-<name>`).

`portal.as_user("alice")` is a client with alice's session cookie; `.form(path)` reads the
page's form token, `.post_form(path, data)` sends a form with it, as a browser would."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from tests.web.conftest import USERS, Api
from web.db import write_session
from web.models import User
from web.services.auth import hash_password

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def password_of(user: str) -> str:
    return f"password-{user}"


def seed_passwords(session: Session, users: Iterable[str]) -> None:
    """Each user's password_of, stored as set_password would store it but without its
    strength rules (password_of holds the user's name, which set_password refuses)."""
    for name in users:
        user = session.get(User, name)
        assert user is not None, name
        user.password_hash = hash_password(password_of(name))
        session.add(user)


@dataclass
class PortalClient:
    client: TestClient
    csrf: str = ""

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        response = self.client.get(path, **kwargs)
        found = CSRF.search(response.text)
        if found:
            self.csrf = found.group(1)
        return response

    def post_form(
        self,
        path: str,
        data: dict[str, Any] | None = None,
        *,
        csrf: str | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        if not self.csrf and csrf is None:
            self.get("/signin")
        body = {"csrf_token": self.csrf if csrf is None else csrf} | (data or {})
        response = self.client.post(path, data=body, **kwargs)
        found = CSRF.search(response.text)
        if found:
            self.csrf = found.group(1)
        return response


@dataclass
class Portal:
    api: Api
    clients: dict[str, PortalClient] = field(default_factory=dict)

    def anonymous(self, **headers: str) -> PortalClient:
        client = TestClient(
            self.api.client.app, raise_server_exceptions=False, follow_redirects=False
        )
        client.headers.update(headers)
        return PortalClient(client)

    def as_user(self, user: str, **headers: str) -> PortalClient:
        if user not in self.clients or headers:
            client = self.anonymous(**headers)
            client.get("/signin")
            answer = client.post_form("/signin", {"user": user, "password": password_of(user)})
            assert answer.status_code == 303, answer.text
            client.get("/")
            self.clients[user] = client
        return self.clients[user]


@pytest.fixture
def portal(api: Api) -> Iterator[Portal]:
    with write_session(api.engine) as session:
        seed_passwords(session, USERS)
    api.changed()
    yield Portal(api)


def text_of(response: httpx.Response) -> str:
    """The page's text without tags, whitespace squeezed (to look for what a person reads)."""
    without_tags = re.sub(r"<[^>]+>", " ", response.text)
    return re.sub(r"\s+", " ", without_tags)
