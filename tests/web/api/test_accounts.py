"""Users, tokens and nodes over the API: who may manage whom, tokens shown once and stored
as digests, what stops a token from working, node registration and draining."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import col, select

from tests.web.conftest import Api, assert_refusal, unique
from web.api import deps
from web.db import read_session
from web.models import Change

DAY = 86400.0


def at(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def iso(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def changes(api: Api, subject: str) -> list[tuple[str, str, str, str]]:
    """(actor, field, old, new) of every change of `subject`, oldest first."""
    with read_session(api.engine) as session:
        rows = session.exec(
            select(Change).where(Change.subject == subject).order_by(col(Change.id))
        ).all()
        return [(c.actor, c.field, c.old, c.new) for c in rows]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def me(api: Api, token: str) -> Any:
    return api.client.get("/api/v1/users/me", headers=bearer(token))


# --- users ---------------------------------------------------------------------------------


def test_an_admin_creates_a_user_and_it_is_recorded(module_api: Api) -> None:
    api, name = module_api, unique("newcomer")
    response = api.post(
        "admin", "/users", json={"name": name, "full_name": "New Comer", "email": "n@example.org"}
    )
    assert response.status_code == 201, response.text
    user = response.json()
    assert (user["name"], user["role"], user["active"]) == (name, "researcher", True)
    assert at(user["created_at"]) == iso(api.clock.now())
    assert api.get("ops", f"/users/{name}").json()["full_name"] == "New Comer"
    assert changes(api, f"user:{name}") == [("admin", "created", "", "researcher")]


@pytest.mark.parametrize(
    ("spec", "status", "field", "says"),
    [
        ({"name": "alice"}, 409, "name", ["'alice' exists already"]),
        ({"name": "Alice Smith"}, 422, "name", ["should match pattern"]),
        ({"name": ""}, 422, "name", ["should match pattern"]),
        ({"name": "x" * 64}, 422, "name", ["should match pattern"]),
        ({"name": "root", "role": "root"}, 422, "role", ["'researcher', 'admin' or 'operator'"]),
        ({"name": "longmail", "email": "e" * 201}, 422, "email", ["at most 200"]),
        ({"name": "nul", "full_name": "A\x00B"}, 422, "full_name", ["NUL"]),
        ({"name": "nul", "email": "a@b\x00"}, 422, "email", ["NUL"]),
        ({"name": "nul\x00"}, 422, "name", ["NUL"]),
    ],
    ids=[
        "taken",
        "with-space",
        "empty",
        "too-long",
        "role-unknown",
        "email-too-long",
        "full-name-nul",
        "email-nul",
        "name-nul",
    ],
)
def test_bad_users_are_refused(
    module_api: Api, spec: dict[str, Any], status: int, field: str, says: list[str]
) -> None:
    api = module_api
    before = len(api.get("admin", "/users").json())
    assert_refusal(api.post("admin", "/users", json=spec), status, field, *says)
    assert len(api.get("admin", "/users").json()) == before


def test_an_admin_changes_a_role_and_it_takes_effect_at_once(module_api: Api) -> None:
    api = module_api
    name = api.add_user(unique("promoted"))
    assert api.get(name, "/users").status_code == 403  # as a researcher (and now cached)

    response = api.patch("admin", f"/users/{name}", json={"role": "operator", "email": "o@x.org"})

    assert response.status_code == 200, response.text
    assert (response.json()["role"], response.json()["email"]) == ("operator", "o@x.org")
    assert api.get(name, "/users").status_code == 200
    assert api.get(name, "/users/me").json()["role"] == "operator"
    assert sorted(changes(api, f"user:{name}")) == [
        ("admin", "email", "", "o@x.org"),
        ("admin", "role", "researcher", "operator"),
    ]


@pytest.mark.parametrize(
    ("user", "target", "change", "status", "field"),
    [
        ("admin", "nobody", {"full_name": "X"}, 404, "user"),
        ("admin", "bob", {"role": "king"}, 422, "role"),
        ("admin", "bob", {"active": "maybe"}, 422, "active"),
        ("bob", "bob", {"role": "admin"}, 403, ""),  # nobody promotes themselves
        ("ops", "bob", {"active": False}, 403, ""),
        # Null is no value for these (leave a field out to keep it).
        ("admin", "bob", {"role": None}, 422, "role"),
        ("admin", "bob", {"active": None}, 422, "active"),
        ("admin", "bob", {"full_name": None}, 422, "full_name"),
        ("admin", "bob", {"email": None, "role": "operator"}, 422, "email"),
        ("admin", "bob", {"full_name": "B\x00b"}, 422, "full_name"),
    ],
    ids=[
        "unknown-user",
        "role-unknown",
        "active-not-a-bool",
        "self-promotion",
        "operator",
        "role-null",
        "active-null",
        "full-name-null",
        "email-null",
        "full-name-nul",
    ],
)
def test_bad_user_changes_are_refused(
    module_api: Api, user: str, target: str, change: dict[str, Any], status: int, field: str
) -> None:
    api = module_api
    response = api.patch(user, f"/users/{target}", json=change)
    if field:
        assert_refusal(response, status, field)
    else:
        assert response.status_code == status, response.text
    bob = api.get("admin", "/users/bob").json()
    assert (bob["role"], bob["active"]) == ("researcher", True)


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"role": "researcher"}, "role", "your own administrator role"),
        ({"role": "operator", "full_name": "Ad Min"}, "role", "your own administrator role"),
        ({"active": False}, "active", "cannot deactivate yourself"),
    ],
    ids=["demote", "demote-among-other-changes", "deactivate"],
)
def test_an_administrator_cannot_demote_or_deactivate_themselves(
    module_api: Api, change: dict[str, Any], field: str, says: str
) -> None:
    """The portal refused it; the API did it, and a slip could leave the pool with no
    administrator. Now a 409 naming the field, nothing changed, nothing recorded."""
    api = module_api
    before = api.get("admin", "/users/me").json()
    response = api.patch("admin", "/users/admin", json=change)
    assert_refusal(response, 409, field, says)
    assert api.get("admin", "/users/me").json() == before


@pytest.mark.parametrize("user", ["admin", "ops", "alice", "carol"])
def test_everyone_reads_themselves(module_api: Api, user: str) -> None:
    response = module_api.get(user, "/users/me")
    assert response.status_code == 200, response.text
    assert response.json()["name"] == user
    assert module_api.get(user, f"/users/{user}").json()["name"] == user


# --- tokens --------------------------------------------------------------------------------


def test_a_token_is_shown_once_and_stored_only_as_its_digest(module_api: Api) -> None:
    api = module_api
    response = api.post("admin", "/users/bob/tokens", json={"label": "laptop"})
    assert response.status_code == 201, response.text
    created = response.json()
    secret = created["token"]
    assert secret.startswith("gpp_") and len(secret) > 30
    assert created["prefix"] == secret[:12] and created["user"] == "bob"
    assert me(api, secret).json()["name"] == "bob"

    # Listed (by its owner, or by an admin), never with the secret: only its prefix.
    for user, query in (("bob", ""), ("admin", "?owner=bob"), ("admin", "")):
        listing = api.get(user, f"/tokens{query}")
        assert listing.status_code == 200, listing.text
        [row] = [t for t in listing.json() if t["id"] == created["id"]]
        assert row["prefix"] == secret[:12] and row["label"] == "laptop"
        assert "token" not in row
        assert secret not in listing.text

    # The pool keeps the SHA-256 of the secret, and the secret nowhere.
    with read_session(api.engine) as session:
        stored = session.execute(
            text("SELECT * FROM api_tokens WHERE id = :id"), {"id": created["id"]}
        ).one()
    assert stored._mapping["digest"] == hashlib.sha256(secret.encode()).hexdigest()
    assert all(secret not in str(value) for value in stored)
    assert secret[12:] not in " ".join(str(value) for value in stored)


@pytest.mark.parametrize(
    ("user", "owner", "status"),
    [("bob", "bob", 201), ("bob", "alice", 403), ("ops", "bob", 403), ("admin", "nobody", 404)],
    ids=["self", "for-another", "operator-for-another", "unknown-user"],
)
def test_who_may_issue_tokens(module_api: Api, user: str, owner: str, status: int) -> None:
    response = module_api.post(user, f"/users/{owner}/tokens", json={})
    assert response.status_code == status, response.text
    if status == 201:
        assert me(module_api, response.json()["token"]).json()["name"] == owner


def test_a_researcher_lists_only_their_own_tokens(module_api: Api) -> None:
    api = module_api
    assert {t["user"] for t in api.get("carol", "/tokens").json()} == {"carol"}
    assert api.get("carol", "/tokens?owner=alice").status_code == 403


def test_a_revoked_token_gets_401(module_api: Api) -> None:
    api = module_api
    created = api.post("bob", "/users/bob/tokens", json={"label": "old"}).json()
    assert me(api, created["token"]).status_code == 200  # and cached as valid

    revoked = api.delete("bob", f"/tokens/{created['id']}")

    assert revoked.status_code == 200, revoked.text
    assert at(revoked.json()["revoked_at"]) == iso(api.clock.now())
    refused = me(api, created["token"])
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    assert refused.headers["www-authenticate"] == "Bearer"
    again = api.delete("admin", f"/tokens/{created['id']}")  # revoking twice changes nothing
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    assert api.get("bob", "/users/me").status_code == 200  # bob's other tokens still work


def test_an_expired_token_gets_401(module_api: Api) -> None:
    api = module_api
    stale = api.issue("carol", expires_in_days=1, at=api.clock.now() - 2 * DAY)
    response = me(api, stale.token)
    assert response.status_code == 401 and "expired" in response.json()["detail"]


def test_a_token_stops_working_when_it_expires(api: Api) -> None:  # moves the clock: own pool
    created = api.post("carol", "/users/carol/tokens", json={"expires_in_days": 1}).json()
    assert at(created["expires_at"]) == iso(api.clock.now() + DAY)
    assert me(api, created["token"]).status_code == 200

    api.clock.advance(DAY)
    response = me(api, created["token"])
    assert response.status_code == 401 and "expired" in response.json()["detail"]
    assert api.get("carol", "/users/me").status_code == 200  # a token with no end date


def test_a_token_used_just_before_it_expires_stops_working_when_it_does(api: Api) -> None:
    created = api.post("carol", "/users/carol/tokens", json={"expires_in_days": 1}).json()
    api.clock.advance(DAY - 1)
    assert me(api, created["token"]).status_code == 200
    api.clock.advance(1)
    assert me(api, created["token"]).status_code == 401


@pytest.mark.parametrize(
    ("token_id", "status", "field"),
    [("1099511627776", 422, "token_id"), ("0", 422, "token_id"), ("2147483647", 404, "token")],
    ids=["over-32-bits", "zero", "largest"],
)
def test_token_ids_out_of_range_are_refused(
    module_api: Api, token_id: str, status: int, field: str
) -> None:
    assert_refusal(module_api.delete("admin", f"/tokens/{token_id}"), status, field)


def test_a_token_revoked_while_it_is_looked_up_is_not_cached_as_valid(
    module_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lookup read the token before the revoke committed; it answers that request (it
    came first), but what it read must not outlive the revoke in the cache."""
    api = module_api
    created = api.post("bob", "/users/bob/tokens", json={"label": "racing"}).json()
    lookup = deps._authenticate

    def lookup_then_revoke(pool: Any, token: str, now: float) -> Any:
        found = lookup(pool, token, now)
        if token == created["token"]:  # the revoke lands while this lookup is under way
            assert api.delete("admin", f"/tokens/{created['id']}").status_code == 200
        return found

    monkeypatch.setattr(deps, "_authenticate", lookup_then_revoke)
    assert me(api, created["token"]).status_code == 200
    monkeypatch.undo()

    refused = me(api, created["token"])
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]


def test_token_lifetimes_are_bounded(module_api: Api) -> None:
    for days, says in ((0, "greater than or equal to 1"), (3651, "less than or equal to 3650")):
        response = module_api.post("bob", "/users/bob/tokens", json={"expires_in_days": days})
        assert_refusal(response, 422, "expires_in_days", says)


def test_a_deactivated_users_tokens_get_401_until_reactivated(module_api: Api) -> None:
    api = module_api
    name = api.add_user(unique("leaver"), member_of=("p1",))
    assert api.get(name, "/users/me").status_code == 200

    assert api.patch("admin", f"/users/{name}", json={"active": False}).status_code == 200
    response = api.get(name, "/jobs")
    assert response.status_code == 401 and "deactivated" in response.json()["detail"]

    assert api.patch("admin", f"/users/{name}", json={"active": True}).status_code == 200
    assert api.get(name, "/jobs").status_code == 200
    assert [c[1:] for c in changes(api, f"user:{name}")] == [
        ("active", "True", "False"),
        ("active", "False", "True"),
    ]


@pytest.mark.parametrize(
    ("authorization", "says"),
    [
        (None, "missing token"),
        ("Bearer not-a-gpupool-token", "start with gpp_"),
        ("Bearer gpp_never-issued", "invalid token"),
        ("Basic YWxpY2U6c2VjcmV0", "missing token"),
        ("Bearer", "missing token"),
        ("gpp_without-a-scheme", "missing token"),
    ],
    ids=["none", "not-ours", "unknown", "basic-auth", "empty-bearer", "no-scheme"],
)
def test_requests_without_a_valid_token_get_401(
    module_api: Api, authorization: str | None, says: str
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = module_api.client.get("/api/v1/jobs", headers=headers)
    assert response.status_code == 401, response.text
    assert says in response.json()["detail"]
    assert response.headers["www-authenticate"] == "Bearer"


# --- nodes ---------------------------------------------------------------------------------


def test_an_operator_registers_a_node_and_it_is_recorded(module_api: Api) -> None:
    api, name = module_api, unique("node")
    response = api.post("ops", "/nodes", json={"name": name, "flavor": "A100", "gpus": 4})
    assert response.status_code == 201, response.text
    node = response.json()
    assert (node["state"], node["gpus"], node["allocated"]) == ("up", 4, 0)
    assert at(node["registered_at"]) == iso(api.clock.now())
    assert name in {n["name"] for n in api.get("bob", "/nodes").json()}

    again = api.post(
        "ops", "/nodes", json={"name": name, "flavor": "A100", "gpus": 8, "group": "r2"}
    )
    assert again.status_code in (200, 201), again.text
    assert (again.json()["gpus"], again.json()["group"]) == (8, "r2")
    assert changes(api, f"node:{name}") == [
        ("ops", "registered", "", "4 x A100"),
        ("ops", "gpus", "4", "8"),
        ("ops", "group", "", "r2"),
    ]


def test_a_node_of_a_new_flavor_brings_the_flavor_and_submissions_see_it(api: Api) -> None:
    # Own pool: the new capacity would change other tests' answers.
    before = api.post("alice", "/jobs", json={"project": "p1", "entrypoint": "x", "gpus": 1,
                                               "flavor": "B200"})  # fmt: skip
    assert_refusal(before, 422, "flavor", "unknown flavor 'B200'")

    response = api.post("ops", "/nodes", json={"name": "b-0", "flavor": "B200", "gpus": 8})

    assert response.status_code == 201, response.text
    flavors = {f["name"]: f for f in api.get("carol", "/flavors").json()}
    assert (flavors["B200"]["nodes"], flavors["B200"]["gpus"]) == (1, 8)
    after = api.post("alice", "/jobs", json={"project": "p1", "entrypoint": "x", "gpus": 1,
                                              "flavor": "B200"})  # fmt: skip
    assert_refusal(after, 422, "flavor", "no quota for 'B200'")


@pytest.mark.parametrize(
    ("spec", "field", "says"),
    [
        ({"name": "Node 1"}, "name", "should match pattern"),
        ({"gpus": 0}, "gpus", "greater than or equal to 1"),
        ({"gpus": 65}, "gpus", "less than or equal to 64"),
        ({"flavor": ""}, "flavor", "at least 1 character"),
        ({"gpus": None}, "gpus", "integer"),
    ],
    ids=["name", "gpus-zero", "gpus-too-many", "flavor-empty", "gpus-null"],
)
def test_bad_nodes_are_refused(
    module_api: Api, spec: dict[str, Any], field: str, says: str
) -> None:
    api = module_api
    count = len(api.get("ops", "/nodes").json())
    node = {"name": unique("bad-node"), "flavor": "H100", "gpus": 8} | spec
    assert_refusal(api.post("ops", "/nodes", json=node), 422, field, says)
    assert len(api.get("ops", "/nodes").json()) == count


@pytest.mark.parametrize("user", ["ops", "admin"])
def test_drain_and_undrain_are_recorded(module_api: Api, user: str) -> None:
    api = module_api
    name = api.add_node(unique("n"))

    drained = api.post(user, f"/nodes/{name}/drain", json={"reason": "Xid 79"})
    assert drained.status_code == 200, drained.text
    assert (drained.json()["state"], drained.json()["state_reason"]) == ("draining", "Xid 79")
    back = api.post(user, f"/nodes/{name}/undrain")
    assert back.status_code == 200, back.text
    assert (back.json()["state"], back.json()["state_reason"]) == ("up", "")

    assert changes(api, f"node:{name}") == [
        (user, "state", "up", "draining"),
        (user, "state", "draining", "up"),
    ]


@pytest.mark.parametrize("user", ["alice", "bob", "carol"])
def test_researchers_cannot_drain(module_api: Api, user: str) -> None:
    api = module_api
    name = api.add_node(unique("n"))
    response = api.post(user, f"/nodes/{name}/drain", json={"reason": "mine now"})
    assert response.status_code == 403, response.text
    assert "operator or admin" in response.json()["detail"]
    assert {n["name"]: n["state"] for n in api.get("ops", "/nodes").json()}[name] == "up"
    assert api.post(user, f"/nodes/{name}/undrain").status_code == 403


def test_draining_a_node_that_does_not_exist_or_is_down(module_api: Api) -> None:
    api = module_api
    assert_refusal(api.post("ops", "/nodes/nowhere/drain", json={}), 404, "node", "'nowhere'")
    down = api.add_node(unique("down"), state="down")
    for action in ("drain", "undrain"):
        response = api.post("ops", f"/nodes/{down}/{action}", json={})
        assert response.status_code == 409, response.text
        assert "is down" in response.json()["detail"]
