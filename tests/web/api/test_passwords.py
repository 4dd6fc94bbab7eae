"""PUT /users/NAME/password: one's own needs current_password (wrong ones throttled, 429
with Retry-After), an administrator's reset of another's does not; weak passwords are
refused naming the field; any text at all is a 4xx, never a 500, and changes nothing."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.web.conftest import Api
from web.models import User
from web.services.auth import password_matches


def stored_hash(api: Api, name: str) -> str | None:
    with api.pool.read_session() as session:
        user = session.get(User, name)
        assert user is not None
        return user.password_hash


def test_own_password_needs_the_current_one_once_there_is_one(api: Api) -> None:
    first = api.put("bob", "/users/bob/password", json={"password": "first of his 1"})
    assert first.status_code == 200, first.text  # none yet: the token is all he has
    missing = api.put("bob", "/users/bob/password", json={"password": "second of his 2"})
    assert missing.status_code == 422 and missing.json()["field"] == "current_password"
    wrong = api.put(
        "bob",
        "/users/bob/password",
        json={"password": "second of his 2", "current_password": "not it at all"},
    )
    assert wrong.status_code == 422 and wrong.json()["field"] == "current_password"
    right = api.put(
        "bob",
        "/users/bob/password",
        json={"password": "second of his 2", "current_password": "first of his 1"},
    )
    assert right.status_code == 200, right.text
    assert password_matches(stored_hash(api, "bob"), "second of his 2")


def test_an_administrator_resets_another_users_password_without_theirs(api: Api) -> None:
    api.put("bob", "/users/bob/password", json={"password": "first of his 1"})
    reset = api.put("admin", "/users/bob/password", json={"password": "reset by admin 3"})
    assert reset.status_code == 200, reset.text
    assert password_matches(stored_hash(api, "bob"), "reset by admin 3")


def test_wrong_current_passwords_are_throttled(api: Api) -> None:
    api.put("bob", "/users/bob/password", json={"password": "first of his 1"})
    codes = []
    for i in range(8):
        answer = api.put(
            "bob",
            "/users/bob/password",
            json={"password": "second of his 2", "current_password": f"guess {i}"},
        )
        codes.append(answer.status_code)
    assert codes[:6] == [422] * 6 and codes[-1] == 429
    assert int(answer.headers["retry-after"]) >= 1
    assert "try again in" in answer.json()["detail"]
    assert answer.json()["field"] == "current_password"
    api.clock.advance(600)
    right = api.put(
        "bob",
        "/users/bob/password",
        json={"password": "second of his 2", "current_password": "first of his 1"},
    )
    assert right.status_code == 200, right.text


def test_weak_passwords_are_refused_naming_the_field(api: Api) -> None:
    for weak, says in [
        ("aaaaaaaaaa", "repeated"),
        ("password123", "common"),
        ("0123456789", "run"),
        ("carol-is-me-2025", "user name"),
    ]:
        answer = api.put("admin", "/users/carol/password", json={"password": weak})
        assert answer.status_code == 422, weak
        assert answer.json()["field"] == "password" and says in answer.json()["detail"], weak
    assert stored_hash(api, "carol") is None


ANY_TEXT = st.one_of(
    st.text(alphabet=st.characters(codec=None), max_size=40),
    st.sampled_from(["\ud800", "a\x00b" * 5, "x" * 100_000]),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(password=ANY_TEXT, current=st.none() | ANY_TEXT)
def test_any_text_is_a_4xx_and_changes_nothing(
    api: Api, password: str, current: str | None
) -> None:
    api.clock.advance(301)
    body = {"password": password} | ({} if current is None else {"current_password": current})
    if stored_hash(api, "dave") is None:
        api.put("admin", "/users/dave/password", json={"password": "he has one 42"})
    before = stored_hash(api, "dave")
    answer = api.client.put(
        "/api/v1/users/dave/password",
        content=json.dumps(body).encode(),  # ensure_ascii: surrogates as \ud800 escapes
        headers=api.headers("dave") | {"content-type": "application/json"},
    )
    assert 400 <= answer.status_code < 500, answer.text
    assert stored_hash(api, "dave") == before
