"""Sessions end for good: a copy of a portal cookie is worth nothing after sign-out, a
password change (one's own or by an administrator), deactivation or an administrator's
"sign out everywhere". And every portal answer carries the security headers; the cookie
is Secure over HTTPS."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlmodel import select

from tests.web.portal.conftest import Portal, PortalClient, password_of, text_of
from web.models import PortalSessionRecord
from web.portal.headers import CONTENT_SECURITY_POLICY
from web.portal.sessions import COOKIE


def signed_in(portal: Portal, user: str) -> PortalClient:
    """A fresh browser signed in as `user` (not the cached one of portal.as_user)."""
    visitor = portal.anonymous()
    visitor.get("/signin")
    answer = visitor.post_form("/signin", {"user": user, "password": password_of(user)})
    assert answer.status_code == 303, answer.text
    return visitor


def copy_of(portal: Portal, browser: PortalClient) -> PortalClient:
    """Another browser holding a copy of `browser`'s cookie (a stolen one)."""
    thief = portal.anonymous()
    cookie = browser.client.cookies.get(COOKIE)
    assert cookie
    thief.client.cookies.set(COOKIE, cookie)
    return thief


def works(browser: PortalClient) -> bool:
    return browser.get("/account").status_code == 200


def sign_out(portal: Portal, carol: PortalClient) -> None:
    carol.get("/account")
    assert carol.post_form("/signout").status_code == 303


def change_own_password(portal: Portal, carol: PortalClient) -> None:
    carol.get("/account")
    answer = carol.post_form(
        "/account/password",
        {
            "current_password": password_of("carol"),
            "password": "a fresh one, 2025",
            "password_again": "a fresh one, 2025",
        },
    )
    assert answer.status_code == 303, text_of(answer)
    assert works(carol)  # the browser that changed it stays signed in


def admin_sets_password(portal: Portal, carol: PortalClient) -> None:
    admin = portal.as_user("admin")
    admin.get("/admin/users/carol")
    answer = admin.post_form(
        "/admin/users/carol/password",
        {"password": "set by the admin 7", "password_again": "set by the admin 7"},
    )
    assert answer.status_code == 303, text_of(answer)


def admin_deactivates(portal: Portal, carol: PortalClient) -> None:
    admin = portal.as_user("admin")
    admin.get("/admin/users/carol")
    answer = admin.post_form(
        "/admin/users/carol", {"full_name": "", "email": "", "role": "researcher"}
    )
    assert answer.status_code == 303, text_of(answer)


def admin_signs_out_everywhere(portal: Portal, carol: PortalClient) -> None:
    admin = portal.as_user("admin")
    admin.get("/admin/users/carol")
    answer = admin.post_form("/admin/users/carol/signout")
    assert answer.status_code == 303, text_of(answer)
    assert "carol is signed out everywhere (2 sessions ended)." in text_of(
        admin.get("/admin/users/carol")
    )


def api_changes_own_password(portal: Portal, carol: PortalClient) -> None:
    answer = portal.api.put(
        "carol",
        "/users/carol/password",
        json={"password": "via the api, 2025", "current_password": password_of("carol")},
    )
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    "end",
    [
        sign_out,
        change_own_password,
        admin_sets_password,
        admin_deactivates,
        admin_signs_out_everywhere,
        api_changes_own_password,
    ],
)
def test_a_copied_cookie_is_refused_at_once_after(
    portal: Portal, end: Callable[[Portal, PortalClient], None]
) -> None:
    carol = signed_in(portal, "carol")
    other_device = signed_in(portal, "carol")
    thief = copy_of(portal, carol)
    assert works(thief) and works(other_device)  # and the lookups are cached now
    end(portal, carol)
    refused = thief.get("/account")
    assert refused.status_code == 303 and refused.headers["location"].startswith("/signin")
    if end is sign_out:  # one browser's sign-out leaves the user's others signed in
        assert works(other_device)
    else:
        assert not works(other_device)


def test_sign_out_removes_the_session_row_and_expired_rows_are_swept(portal: Portal) -> None:
    carol = signed_in(portal, "carol")

    def rows() -> list[tuple[str, str]]:
        with portal.api.pool.read_session() as session:
            found = session.exec(select(PortalSessionRecord)).all()
            return [(r.user, r.digest) for r in found]

    assert [user for user, _ in rows()] == ["carol"]
    assert all(len(digest) == 64 for _, digest in rows())  # a digest, never the id
    sign_out(portal, carol)
    assert rows() == []
    signed_in(portal, "carol")
    portal.api.clock.advance(portal.api.pool.settings.portal_session_hours * 3600 + 1)
    signed_in(portal, "dave")  # a sign-in sweeps the expired
    assert [user for user, _ in rows()] == ["dave"]


def test_an_administrator_cannot_set_their_own_password_without_the_current_one(
    portal: Portal,
) -> None:
    admin = portal.as_user("admin")
    admin.get("/admin/users/admin")
    answer = admin.post_form(
        "/admin/users/admin/password",
        {"password": "taken over 2025", "password_again": "taken over 2025"},
    )
    assert answer.status_code == 400 and 'id="e-password-password"' in answer.text
    assert "My account" in text_of(answer)


# --- headers and the cookie's flags ------------------------------------------------------


PAGES = [
    ("admin", "/"),
    ("admin", "/jobs"),
    ("admin", "/account"),
    ("admin", "/admin/users/carol"),
    ("admin", "/ops"),
    ("admin", "/no-such-page"),
    (None, "/signin"),
    (None, "/verify"),
    (None, "/static/portal.css"),
    (None, "/account"),  # the redirect to sign in
]


@pytest.mark.parametrize(("user", "path"), PAGES)
def test_every_portal_answer_carries_the_security_headers(
    portal: Portal, user: str | None, path: str
) -> None:
    browser = portal.as_user(user) if user else portal.anonymous()
    answer = browser.get(path)
    assert answer.status_code in (200, 303, 404), path
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "same-origin"
    policy = answer.headers["content-security-policy"]
    assert policy == CONTENT_SECURITY_POLICY
    for part in ("frame-ancestors 'none'", "form-action 'self'", "object-src 'none'"):
        assert part in policy
    assert (
        "script-src 'self'" in policy and "'unsafe-inline'" not in policy.split("style-src-attr")[0]
    )


def test_the_pages_need_no_inline_script_or_style_element(portal: Portal) -> None:
    admin = portal.as_user("admin")
    for _, path in PAGES[:5]:
        page = admin.get(path).text
        assert "<script>" not in page and "<style" not in page and " onclick=" not in page


def test_an_unexpected_errors_page_carries_them_too(
    portal: Portal, monkeypatch: pytest.MonkeyPatch
) -> None:
    from web.portal.views import account

    def broken(page: object) -> list[object]:
        raise RuntimeError("boom")

    monkeypatch.setattr(account, "_tokens", broken)
    answer = portal.as_user("alice").get("/account")
    assert answer.status_code == 500 and "Traceback" not in answer.text
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_the_api_says_nosniff_and_no_portal_policy(portal: Portal) -> None:
    answer = portal.api.get("alice", "/users/me")
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in answer.headers


def test_the_cookie_is_secure_over_https_only(portal: Portal) -> None:
    plain = portal.anonymous()
    assert "secure" not in plain.get("/signin").headers["set-cookie"].lower()
    tls = portal.anonymous()
    tls.client.base_url = tls.client.base_url.copy_with(scheme="https")
    tls.get("/signin")
    answer = tls.post_form("/signin", {"user": "carol", "password": password_of("carol")})
    assert answer.status_code == 303
    assert "; secure" in answer.headers["set-cookie"].lower()
