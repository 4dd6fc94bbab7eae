"""Every body the API writes from, attacked one field at a time (Hypothesis): any Unicode
with lone surrogates and control characters, huge and special numbers (NaN, 1e309,
400- and 5,000-digit integers), JSON nested thousands deep, 200,000-character strings.
Each answer is a 2xx or a 4xx whose message names the field (or the body, for what is no
JSON at all); a 4xx stores nothing anywhere; and afterwards every list still answers."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from tests.web.conftest import Api
from tests.web.hostile import body_with, hostile_fragment
from web.db import read_session
from web.models import Change, Job, LedgerEntry, Membership, Project, Quota, User

JSON = {"Content-Type": "application/json"}

# (user, method, path, a valid body, the fields to attack)
WRITES: list[tuple[str, str, str, dict[str, Any], list[str]]] = [
    (
        "alice",
        "POST",
        "/jobs",
        {"project": "p1", "entrypoint": "python train.py", "gpus": 1},
        [
            "project",
            "entrypoint",
            "gpus",
            "flavor",
            "nodes",
            "time",
            "priority",
            "name",
            "runtime_env",
            "count",
            "idempotency_key",
        ],
    ),
    (
        "alice",
        "POST",
        "/projects",
        {"name": "asked", "title": "A study", "sector": "academia"},
        [
            "name",
            "title",
            "sector",
            "pi",
            "requested_gpus",
            "requested_gpu_hours",
            "justification",
            "expires_at",
        ],
    ),
    (
        "admin",
        "PATCH",
        "/projects/p1",
        {"title": "Renamed"},
        ["title", "share", "default_max_runtime_s", "expires_at", "idle_stop_after_s"],
    ),
    (
        "admin",
        "PUT",
        "/projects/p1/quotas/H100",
        {"guaranteed": 8, "limit": 16},
        ["guaranteed", "limit", "credit_rate", "note"],
    ),
    (
        "admin",
        "POST",
        "/projects/p1/credits",
        {"amount": 1.0},
        ["amount", "set_to", "unlimited", "note"],
    ),
    ("alice", "POST", "/projects/p1/members", {"user": "carol"}, ["user", "role"]),
    ("admin", "POST", "/users", {"name": "newcomer"}, ["name", "full_name", "email", "role"]),
    (
        "admin",
        "PATCH",
        "/users/bob",
        {"full_name": "Bob"},
        ["full_name", "email", "role", "active"],
    ),
    ("ops", "POST", "/nodes/h-0/drain", {"reason": "maintenance"}, ["reason"]),
]
TABLES = (Change, Job, LedgerEntry, Membership, Project, Quota, User)


def stored(api: Api) -> dict[str, Any]:
    """What a refused request must not change: every table's rows, counted, and p1's row."""
    with read_session(api.engine) as session:
        counts = {
            t.__name__: session.execute(select(func.count()).select_from(t)).scalar()
            for t in TABLES
        }
        p1 = session.get(Project, "p1")
        assert p1 is not None
        return counts | {"p1": p1.model_dump()}


@pytest.mark.parametrize(
    ("user", "method", "path", "base", "fields"),
    [pytest.param(*write, id=f"{write[1]} {write[2]}") for write in WRITES],
)
def test_any_hostile_value_in_any_field_is_a_4xx_naming_it_and_stores_nothing(
    module_api: Api,
    user: str,
    method: str,
    path: str,
    base: dict[str, Any],
    fields: list[str],
) -> None:
    api = module_api

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(field=st.sampled_from(fields), fragment=hostile_fragment)
    def attack(field: str, fragment: str) -> None:
        before = stored(api)
        answer = api.request(
            user, method, path, content=body_with(base, field, fragment), headers=JSON
        )
        assert answer.status_code < 500, answer.text
        if answer.status_code < 400:
            return
        said = answer.json()
        named = {said.get("field")} | {e.get("field") for e in said.get("errors", [])}
        if answer.status_code in (400, 413, 422):
            # The field, or one it is checked against (a limit under the guarantee), or
            # the body when it is no JSON at all.
            assert named & {field, "body", *base}, (field, said)
            assert said["detail"].isprintable() or "\n" in said["detail"], said
        assert stored(api) == before, (field, fragment[:200])

    attack()
    for reader, listing in [("alice", "/jobs"), ("admin", "/projects"), ("ops", "/nodes")]:
        assert api.get(reader, listing).status_code == 200
