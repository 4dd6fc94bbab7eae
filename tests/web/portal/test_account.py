"""Signing in and out, sessions, form tokens, the language, error pages."""

from __future__ import annotations

import pytest

from tests.web.portal.conftest import Portal, PortalClient, password_of, text_of
from web.portal.sessions import COOKIE


def test_a_signed_out_visitor_is_sent_to_sign_in_and_back(portal: Portal) -> None:
    visitor = portal.anonymous()
    answer = visitor.get("/account?tab=tokens")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/signin?next=%2Faccount%3Ftab%3Dtokens"
    visitor.get(answer.headers["location"])
    signed = visitor.post_form(
        "/signin",
        {"user": "alice", "password": password_of("alice"), "next": "/account?tab=tokens"},
    )
    assert signed.status_code == 303
    assert signed.headers["location"] == "/account?tab=tokens"
    cookie = signed.headers["set-cookie"]
    assert COOKIE in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "alice" in visitor.get("/").text


@pytest.mark.parametrize("user", ["alice", "ali\x00ce"], ids=["her-name", "with-a-nul"])
def test_a_wrong_password_is_refused_in_place_keeping_the_user_name(
    portal: Portal, user: str
) -> None:
    visitor = portal.anonymous()
    visitor.get("/signin")
    answer = visitor.post_form("/signin", {"user": user, "password": "not-her-password"})
    assert answer.status_code == 400
    assert "Wrong user name or password." in text_of(answer)
    if user == "alice":
        assert 'value="alice"' in answer.text
    assert "not-her-password" not in answer.text
    assert visitor.get("/").status_code == 303  # still signed out


def test_missing_fields_are_named(portal: Portal) -> None:
    visitor = portal.anonymous()
    visitor.get("/signin")
    answer = visitor.post_form("/signin", {"user": "", "password": ""})
    assert answer.status_code == 400
    assert 'id="e-user"' in answer.text and 'id="e-password"' in answer.text


def test_sign_in_with_an_api_token(portal: Portal) -> None:
    visitor = portal.anonymous()
    visitor.get("/signin")
    answer = visitor.post_form("/signin", {"token": portal.api.tokens["bob"]})
    assert answer.status_code == 303
    assert "bob" in visitor.get("/").text
    other = portal.anonymous()
    other.get("/signin")
    refused = other.post_form("/signin", {"token": "gpp_never-issued"})
    assert refused.status_code == 400 and 'id="e-token"' in refused.text


def bobs_token(portal: Portal, days: int | None = None) -> tuple[str, int]:
    made = portal.api.post("bob", "/users/bob/tokens", json={"expires_in_days": days})
    assert made.status_code == 201, made.text
    return made.json()["token"], int(made.json()["id"])


def signed_in_with(portal: Portal, token: str) -> PortalClient:
    visitor = portal.anonymous()
    visitor.get("/signin")
    assert visitor.post_form("/signin", {"token": token}).status_code == 303
    assert visitor.get("/").status_code == 200
    return visitor


def test_a_session_signed_in_with_a_token_ends_when_the_token_is_revoked(
    portal: Portal,
) -> None:
    token, token_id = bobs_token(portal)
    visitor = signed_in_with(portal, token)
    password_session = portal.as_user("bob")
    assert portal.api.delete("bob", f"/tokens/{token_id}").status_code == 200
    answer = visitor.get("/")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/signin")
    assert visitor.get("/").status_code == 303  # signed out, not only sent away once
    assert password_session.get("/").status_code == 200  # bob's other session stays


def test_a_session_signed_in_with_a_token_ends_when_the_token_expires(portal: Portal) -> None:
    token, _token_id = bobs_token(portal, days=1)
    portal.api.clock.advance(23 * 3600)
    visitor = signed_in_with(portal, token)  # its session would last 12 h; the token 1 h
    portal.api.clock.advance(3600 - 60)
    assert visitor.get("/").status_code == 200
    portal.api.clock.advance(61)
    answer = visitor.get("/")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/signin")


def test_a_form_without_the_session_token_changes_nothing(portal: Portal) -> None:
    alice = portal.as_user("alice")
    answer = alice.post_form("/signout", csrf="forged")
    assert answer.status_code == 303
    assert "alice" in alice.get("/").text  # still signed in
    assert alice.post_form("/signout").status_code == 303
    assert alice.get("/").status_code == 303


def test_sign_in_never_redirects_to_another_site(portal: Portal) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)"):
        visitor = portal.anonymous()
        visitor.get("/signin")
        answer = visitor.post_form(
            "/signin", {"user": "alice", "password": password_of("alice"), "next": target}
        )
        assert answer.headers["location"] == "/"


def test_a_deactivated_user_is_signed_out_at_once(portal: Portal) -> None:
    bob = portal.as_user("bob")
    assert bob.get("/").status_code == 200
    assert portal.api.patch("admin", "/users/bob", json={"active": False}).status_code == 200
    assert bob.get("/").status_code == 303


def test_the_language_follows_accept_language_and_can_be_switched(portal: Portal) -> None:
    korean = portal.as_user("alice", **{"Accept-Language": "ko-KR,ko;q=0.9,en;q=0.5"})
    page = korean.get("/")
    assert page.headers["content-language"] == "ko"
    assert '<html lang="ko">' in page.text
    assert "내 프로젝트" in page.text
    switched = korean.post_form("/language", {"language": "en", "next": "/"})
    assert switched.status_code == 303
    page = korean.get("/")
    assert page.headers["content-language"] == "en" and "My projects" in page.text


def test_own_password_change_checks_both_fields(portal: Portal) -> None:
    alice = portal.as_user("alice")
    alice.get("/account")
    current = {"current_password": password_of("alice")}
    short = alice.post_form(
        "/account/password", current | {"password": "short", "password_again": "short"}
    )
    assert short.status_code == 400 and 'id="e-password"' in short.text
    differ = alice.post_form(
        "/account/password",
        current | {"password": "long-enough-1", "password_again": "long-enough-2"},
    )
    assert differ.status_code == 400 and 'id="e-password_again"' in differ.text
    done = alice.post_form(
        "/account/password",
        current | {"password": "long-enough-1", "password_again": "long-enough-1"},
    )
    assert done.status_code == 303
    visitor = portal.anonymous()
    visitor.get("/signin")
    again = visitor.post_form("/signin", {"user": "alice", "password": "long-enough-1"})
    assert again.status_code == 303


def test_unknown_pages_and_bad_paths_are_pages_not_json(portal: Portal) -> None:
    alice = portal.as_user("alice")
    for path in ("/no-such-page", "/static/no-such-file.css"):
        answer = alice.get(path)
        assert answer.status_code == 404
        assert answer.headers["content-type"].startswith("text/html")
        assert "Traceback" not in answer.text
    api_answer = portal.api.get("alice", "/jobs/not-a-number")
    assert (
        api_answer.status_code == 422 and api_answer.headers["content-type"] == "application/json"
    )
