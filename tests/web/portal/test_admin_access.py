"""Only administrators reach the administrators' pages: a researcher and an operator get
the 403 page on every one of them, and a form they post changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func
from sqlmodel import col, select

from tests.web.portal.conftest import Portal, text_of
from web.db import read_session
from web.models import (
    ApiToken,
    Change,
    LedgerEntry,
    Membership,
    Project,
    Quota,
    Sector,
    User,
)

PAGES = [
    "/admin",
    "/admin/requests",
    "/admin/projects",
    "/admin/projects?state=active",
    "/admin/projects/p1",
    "/admin/projects/p2",  # not theirs, and not theirs to see here either
    "/admin/sectors",
    "/admin/users",
    "/admin/users/alice",
    "/admin/changes",
]

# (path, form): each would change something if an administrator sent it.
POSTS: list[tuple[str, dict[str, str]]] = [
    ("/admin/projects/p1/decide", {"action": "close", "note": "gone"}),
    ("/admin/projects/p1/update", {"title": "Taken over"}),
    ("/admin/projects/p1/quotas/H100", {"guaranteed": "64", "limit": "64"}),
    ("/admin/projects/p2/quotas", {"flavor": "A100", "guaranteed": "1", "limit": "2"}),
    ("/admin/projects/p1/credits", {"amount": "1000000"}),
    ("/admin/projects/p1/members", {"user": "erin", "role": "pi"}),
    ("/admin/projects/p1/members/bob/remove", {}),
    ("/admin/sectors/academia", {"weight": "1000"}),
    ("/admin/sectors", {"name": "mine", "weight": "1000"}),
    ("/admin/users", {"name": "sock", "role": "admin"}),
    ("/admin/users/alice", {"role": "admin", "active": "yes"}),
    ("/admin/users/carol/password", {"password": "taken-over-1", "password_again": "taken-over-1"}),
    ("/admin/users/carol/tokens", {"label": "stolen"}),
    ("/admin/users/carol/tokens/{carol_token}/revoke", {}),
]


def posts(portal: Portal) -> list[tuple[str, dict[str, str]]]:
    with read_session(portal.api.engine) as session:
        token = session.exec(select(ApiToken.id).where(ApiToken.user == "carol")).first()
    return [(path.format(carol_token=token), data) for path, data in POSTS]


def snapshot(portal: Portal) -> dict[str, Any]:
    """What any administrator's form would change."""
    with read_session(portal.api.engine) as session:

        def count(table: Any, *where: Any) -> int:
            return int(session.exec(select(func.count()).select_from(table).where(*where)).one())

        return {
            "changes": count(Change),
            "ledger": count(LedgerEntry),
            "tokens": count(ApiToken),
            "revoked": count(ApiToken, col(ApiToken.revoked_at).is_not(None)),
            "users": [
                (u.name, u.role, u.active, u.password_hash)
                for u in session.exec(select(User).order_by(col(User.name))).all()
            ],
            "members": count(Membership),
            "quotas": sorted(
                (q.project, q.flavor, q.guaranteed, q.limit)
                for q in session.exec(select(Quota)).all()
            ),
            "sectors": sorted((s.name, s.weight) for s in session.exec(select(Sector)).all()),
            "projects": sorted(
                (p.name, p.state, p.title, p.credits) for p in session.exec(select(Project)).all()
            ),
        }


@pytest.mark.parametrize("who", ["alice", "ops"])
def test_non_administrators_get_403_on_every_admin_page(portal: Portal, who: str) -> None:
    client = portal.as_user(who)
    for path in PAGES:
        answer = client.get(path)
        assert answer.status_code == 403, path
        assert "Your role does not allow this page." in text_of(answer), path
        assert "Traceback" not in answer.text


@pytest.mark.parametrize("who", ["alice", "ops"])
def test_a_form_a_non_administrator_posts_changes_nothing(portal: Portal, who: str) -> None:
    client = portal.as_user(who)
    client.get("/account")  # a valid form token: only the role stands in the way
    before = snapshot(portal)
    for path, data in posts(portal):
        answer = client.post_form(path, data)
        assert answer.status_code == 403, path
        assert "Your role does not allow this page." in text_of(answer), path
    assert snapshot(portal) == before


def test_the_admin_link_is_shown_to_administrators_only(portal: Portal) -> None:
    assert 'href="/admin"' in portal.as_user("admin").get("/").text
    for who in ("alice", "ops"):
        assert 'href="/admin"' not in portal.as_user(who).get("/").text


def test_a_signed_out_visitor_is_sent_to_sign_in(portal: Portal) -> None:
    visitor = portal.anonymous()
    answer = visitor.get("/admin/projects/p1")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/signin?next=%2Fadmin%2Fprojects%2Fp1"


def test_an_administrators_form_without_the_session_token_changes_nothing(
    portal: Portal,
) -> None:
    admin = portal.as_user("admin")
    admin.get("/admin")
    before = snapshot(portal)
    for path, data in posts(portal):
        answer = admin.post_form(path, data, csrf="forged")
        assert answer.status_code in (400, 404), path
        if answer.status_code == 400:
            assert "This form has expired or did not come from this site." in text_of(answer)
    assert snapshot(portal) == before
