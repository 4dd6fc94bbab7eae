"""Password guessing on the portal's sign-in and own-password forms is throttled: 429 with
Retry-After and a page that says when to try again; never longer than the cap for the
real user; and no text in these forms, however odd or large, gets a 500 or stores
anything."""

from __future__ import annotations

import re
from urllib.parse import quote_from_bytes

import httpx
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import select

from tests.web.portal.conftest import CSRF, Portal, PortalClient, password_of, text_of
from web.models import PortalSessionRecord, User
from web.services.throttle import PER_ACCOUNT

TOO_MANY = re.compile(
    r"Too many failed attempts from here or for this account; try again in (\d+) s\."
)


def from_address(portal: Portal, address: str) -> PortalClient:
    client = TestClient(
        portal.api.client.app,
        raise_server_exceptions=False,
        follow_redirects=False,
        client=(address, 50000),
    )
    browser = PortalClient(client)
    browser.get("/signin")
    return browser


def sign_in(browser: PortalClient, user: str, password: str) -> httpx.Response:
    return browser.post_form("/signin", {"user": user, "password": password})


def test_twenty_wrong_passwords_then_the_right_one_is_refused_until_the_wait_is_over(
    portal: Portal,
) -> None:
    guesser = from_address(portal, "203.0.113.5")
    answers = [sign_in(guesser, "alice", f"guess number {i}") for i in range(20)]
    assert [a.status_code for a in answers[:6]] == [400] * 6
    assert {a.status_code for a in answers[6:]} == {429}
    right = sign_in(guesser, "alice", password_of("alice"))
    assert right.status_code == 429
    wait = int(right.headers["retry-after"])
    said = TOO_MANY.search(text_of(right))
    assert said and int(said.group(1)) == wait and 1 <= wait <= PER_ACCOUNT.max_wait_s
    assert guesser.get("/").status_code == 303  # not signed in
    portal.api.clock.advance(wait)
    assert sign_in(guesser, "alice", password_of("alice")).status_code == 303


def test_a_guesser_keeps_the_real_user_out_no_longer_than_the_cap(portal: Portal) -> None:
    for i in range(40):  # from many addresses, as fast as allowed
        guesser = from_address(portal, f"198.51.100.{i}")
        answer = sign_in(guesser, "bob", f"guess {i}")
        if answer.status_code == 429:
            portal.api.clock.advance(int(answer.headers["retry-after"]))
            sign_in(guesser, "bob", f"guess {i}")
    bob = from_address(portal, "192.0.2.10")  # somewhere new
    refused = sign_in(bob, "bob", password_of("bob"))
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) <= PER_ACCOUNT.max_wait_s
    portal.api.clock.advance(PER_ACCOUNT.max_wait_s)
    assert sign_in(bob, "bob", password_of("bob")).status_code == 303


def test_wrong_tokens_are_throttled_by_address(portal: Portal) -> None:
    guesser = from_address(portal, "203.0.113.9")
    codes = [
        guesser.post_form("/signin", {"token": f"gpp_guess-{i}"}).status_code for i in range(8)
    ]
    assert codes[:6] == [400] * 6 and codes[-1] == 429


def test_own_password_change_needs_the_current_one_and_guesses_are_throttled(
    portal: Portal,
) -> None:
    alice = portal.as_user("alice")
    alice.get("/account")
    new = {"password": "a brand new one 9", "password_again": "a brand new one 9"}
    missing = alice.post_form("/account/password", new)
    assert missing.status_code == 400 and 'id="e-current_password"' in missing.text
    assert "Required: your current password." in text_of(missing)
    answers = []
    for i in range(8):
        wrong = alice.post_form("/account/password", new | {"current_password": f"guess {i}"})
        answers.append(wrong)
        assert 'id="e-current_password"' in wrong.text
        assert f"guess {i}" not in wrong.text  # never sent back
    assert [a.status_code for a in answers[:6]] == [400] * 6
    assert "This is not your current password." in text_of(answers[0])
    assert answers[-1].status_code == 429 and TOO_MANY.search(text_of(answers[-1]))
    portal.api.clock.advance(600)
    done = alice.post_form("/account/password", new | {"current_password": password_of("alice")})
    assert done.status_code == 303
    assert "Your other sessions are signed out." in text_of(alice.get("/account"))


def test_weak_new_passwords_are_refused_naming_the_field(portal: Portal) -> None:
    alice = portal.as_user("alice")
    alice.get("/account")
    current = {"current_password": password_of("alice")}
    for weak, says in [
        ("aaaaaaaaaa", "one character or one short piece repeated"),
        ("password123", "one of the most common passwords"),
        ("qwertyuiop", "a run of keys or letters"),
        ("alice-in-wonderland", "it contains the user name"),
    ]:
        answer = alice.post_form(
            "/account/password", current | {"password": weak, "password_again": weak}
        )
        assert answer.status_code == 400 and 'id="e-password"' in answer.text, weak
        assert says in text_of(answer), weak


# --- any text at all ------------------------------------------------------------------------


def raw_form(fields: dict[str, str]) -> bytes:
    """An urlencoded body as a browser would send it, but keeping lone surrogates (as the
    bytes UTF-8 would give them, which no valid UTF-8 holds)."""
    return "&".join(
        f"{name}={quote_from_bytes(value.encode('utf-8', 'surrogatepass'))}"
        for name, value in fields.items()
    ).encode()


ANY_TEXT = st.one_of(
    st.text(alphabet=st.characters(codec=None), max_size=60),
    st.sampled_from(["\ud800", "a\x00b", "x" * 300_000, "\U0001f600" * 1000, ""]),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(user=ANY_TEXT, password=ANY_TEXT, token=ANY_TEXT)
def test_the_sign_in_form_takes_any_text_without_a_server_error(
    portal: Portal, user: str, password: str, token: str
) -> None:
    portal.api.clock.advance(301)  # no wait left from the example before (the cap is 300 s)
    browser = portal.anonymous()
    csrf = CSRF.search(browser.client.get("/signin").text)
    assert csrf
    answer = browser.client.post(
        "/signin",
        content=raw_form(
            {"csrf_token": csrf.group(1), "user": user, "password": password, "token": token}
        ),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert 400 <= answer.status_code < 500 or answer.status_code == 303, answer.status_code
    assert "Traceback" not in answer.text
    with portal.api.pool.read_session() as session:
        assert len(session.exec(select(PortalSessionRecord)).all()) == (
            1 if answer.status_code == 303 else 0
        )
    if answer.status_code == 303:  # a real user's password by chance: never, but be fair
        browser.post_form("/signout")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(current=ANY_TEXT, password=ANY_TEXT, again=ANY_TEXT)
def test_the_password_form_takes_any_text_without_a_server_error(
    portal: Portal, current: str, password: str, again: str
) -> None:
    portal.api.clock.advance(301)
    erin = portal.as_user("erin")
    with portal.api.pool.read_session() as session:
        before = session.get(User, "erin").password_hash  # type: ignore[union-attr]
    answer = erin.client.post(
        "/account/password",
        content=raw_form(
            {
                "csrf_token": erin.csrf,
                "current_password": current,
                "password": password,
                "password_again": again,
            }
        ),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code in (400, 413, 429), answer.status_code  # never the right one
    assert "Traceback" not in answer.text
    with portal.api.pool.read_session() as session:
        assert session.get(User, "erin").password_hash == before  # type: ignore[union-attr]
