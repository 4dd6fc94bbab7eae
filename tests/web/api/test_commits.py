"""Every write route commits before its answer starts: a caller that reads what it wrote the
moment the answer comes (through another replica, another connection) finds it.

Each case's probe looks at the database through a connection of its own at the instant the
route's answer starts (its `http.response.start` message): what it sees is committed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.web.api.test_roles import declared_routes
from tests.web.conftest import Api, unique
from web.db import read_session, write_session
from web.models import (
    ApiToken,
    Job,
    LedgerEntry,
    Membership,
    Node,
    NodeTelemetry,
    NodeToken,
    Project,
    ProjectState,
    Quota,
    Role,
    Sector,
    User,
)
from web.services.auth import Principal, password_matches
from web.services.nodes import issue_node_token

Probe = Callable[[Session], bool]


class ProbeWhenTheAnswerStarts:
    """ASGI wrapper: runs `probe` over a session of its own as the answer starts."""

    def __init__(self, app: ASGIApp, api: Api, probe: Probe) -> None:
        self.app, self.api, self.probe = app, api, probe
        self.seen: bool | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def probing(message: Message) -> None:
            if message["type"] == "http.response.start":
                with read_session(self.api.engine) as session:
                    self.seen = self.probe(session)
            await send(message)

        await self.app(scope, receive, probing)


@dataclass
class Write:
    user: str
    method: str
    path: str
    body: Any
    probe: Probe
    status: int = 200
    token: str | None = None  # a node agent's, instead of the user's


def create_user(api: Api) -> Write:
    name = unique("new")
    return Write(
        "admin", "POST", "/users", {"name": name}, lambda s: s.get(User, name) is not None, 201
    )


def update_user(api: Api) -> Write:
    name = api.add_user(unique("changed"))

    def probe(s: Session) -> bool:
        user = s.get(User, name)
        return user is not None and user.email == "x@example.org"

    return Write("admin", "PATCH", f"/users/{name}", {"email": "x@example.org"}, probe)


def set_password(api: Api) -> Write:
    name = api.add_user(unique("passworded"))

    def probe(s: Session) -> bool:
        user = s.get(User, name)
        return user is not None and password_matches(user.password_hash, "a-new-password")

    return Write("admin", "PUT", f"/users/{name}/password", {"password": "a-new-password"}, probe)


def create_token(api: Api) -> Write:
    label = unique("label")

    def probe(s: Session) -> bool:
        return s.exec(select(ApiToken).where(ApiToken.label == label)).first() is not None

    return Write("bob", "POST", "/users/bob/tokens", {"label": label}, probe, 201)


def revoke_token(api: Api) -> Write:
    token = api.issue("bob")

    def probe(s: Session) -> bool:
        row = s.get(ApiToken, token.id)
        return row is not None and row.revoked_at is not None

    return Write("bob", "DELETE", f"/tokens/{token.id}", None, probe)


def set_sector(api: Api) -> Write:
    name = unique("sector")
    return Write(
        "admin", "PUT", f"/sectors/{name}", {"weight": 2}, lambda s: s.get(Sector, name) is not None
    )


def request_project(api: Api) -> Write:
    name = unique("asked")
    body = {"name": name, "title": "T", "sector": "academia"}
    return Write("bob", "POST", "/projects", body, lambda s: s.get(Project, name) is not None, 201)


def update_project(api: Api) -> Write:
    name = api.add_project(unique("titled"))

    def probe(s: Session) -> bool:
        project = s.get(Project, name)
        return project is not None and project.title == "New"

    return Write("alice", "PATCH", f"/projects/{name}", {"title": "New"}, probe)


def decide(action: str, state: ProjectState, target: ProjectState) -> Callable[[Api], Write]:
    def case(api: Api) -> Write:
        name = api.add_project(unique(action), state=state)

        def probe(s: Session) -> bool:
            project = s.get(Project, name)
            return project is not None and project.state == target.value

        return Write("admin", "POST", f"/projects/{name}/{action}", {}, probe)

    return case


def add_member(api: Api) -> Write:
    name = api.add_project(unique("team"))

    def probe(s: Session) -> bool:
        return s.get(Membership, (name, "carol")) is not None

    return Write("alice", "POST", f"/projects/{name}/members", {"user": "carol"}, probe)


def remove_member(api: Api) -> Write:
    name = api.add_project(unique("team"), members=("bob",))
    return Write(
        "alice",
        "DELETE",
        f"/projects/{name}/members/bob",
        None,
        lambda s: s.get(Membership, (name, "bob")) is None,
    )


def set_quota(api: Api) -> Write:
    name = api.add_project(unique("quota"), quotas={})

    def probe(s: Session) -> bool:
        quota = s.get(Quota, (name, "H100"))
        return quota is not None and quota.limit == 3

    return Write(
        "admin", "PUT", f"/projects/{name}/quotas/H100", {"guaranteed": 1, "limit": 3}, probe
    )


def change_credits(api: Api) -> Write:
    name = api.add_project(unique("credits"), credits=10)

    def probe(s: Session) -> bool:
        project = s.get(Project, name)
        return project is not None and project.credits == 15

    return Write("admin", "POST", f"/projects/{name}/credits", {"amount": 5}, probe)


def register_node(api: Api) -> Write:
    name = unique("node")
    body = {"name": name, "flavor": "H100", "gpus": 8}
    return Write("ops", "POST", "/nodes", body, lambda s: s.get(Node, name) is not None, 201)


def drain(action: str, state: str, target: str) -> Callable[[Api], Write]:
    def case(api: Api) -> Write:
        name = api.add_node(unique("node"), state=state)

        def probe(s: Session) -> bool:
            node = s.get(Node, name)
            return node is not None and node.state == target

        return Write("ops", "POST", f"/nodes/{name}/{action}", {}, probe)

    return case


def node_token(api: Api) -> Write:
    name = api.add_node(unique("node"))

    def probe(s: Session) -> bool:
        return s.exec(select(NodeToken).where(NodeToken.node == name)).first() is not None

    return Write("ops", "POST", f"/nodes/{name}/tokens", {"label": "x"}, probe, 201)


def made_node_token(api: Api) -> tuple[str, NodeToken, str]:
    """A node and its agent's token: (node, the token's row, the secret)."""
    name = api.add_node(unique("node"))
    with write_session(api.engine) as s:
        made = issue_node_token(s, Principal("seed", Role.ADMIN), name, "", api.clock.now())
        row = s.get(NodeToken, made.id)
        assert row is not None
    return name, row, made.token


def revoke_node_token(api: Api) -> Write:
    name, token, _ = made_node_token(api)

    def probe(s: Session) -> bool:
        row = s.get(NodeToken, token.id)
        return row is not None and row.revoked_at is not None

    return Write("ops", "DELETE", f"/nodes/{name}/tokens/{token.id}", None, probe)


def agent_report(api: Api) -> Write:
    name, _, secret = made_node_token(api)
    body = {"node": name, "reports": [{"boot": "c0ffee00", "seq": 1, "at": api.clock.now()}]}

    def probe(s: Session) -> bool:
        row = s.get(NodeTelemetry, name)
        return row is not None and row.seq == 1

    return Write("", "POST", "/agents/reports", body, probe, token=secret)


def submit(api: Api) -> Write:
    name = unique("job")
    body = {"project": "p1", "entrypoint": "x", "gpus": 1, "name": name}

    def probe(s: Session) -> bool:
        return s.exec(select(Job).where(Job.name == name)).first() is not None

    return Write("alice", "POST", "/jobs", body, probe, 201)


def cancel(api: Api) -> Write:
    job = api.submit("alice")

    def probe(s: Session) -> bool:
        row = s.get(Job, job["id"])
        return row is not None and row.state == "cancelled"

    return Write("alice", "POST", f"/jobs/{job['id']}/cancel", None, probe)


def verify_statement(api: Api) -> Write:
    """POST, but it writes nothing: the ledger is as it was when the answer starts."""
    statement = api.get("admin", "/projects/p1/statements/2023-11").json()
    before = api.count(LedgerEntry)

    def probe(s: Session) -> bool:
        return len(s.exec(select(LedgerEntry)).all()) == before

    return Write("alice", "POST", "/statements/verify", statement, probe)


WRITES: list[tuple[str, Callable[[Api], Write]]] = [
    ("POST /users", create_user),
    ("PATCH /users/{name}", update_user),
    ("PUT /users/{name}/password", set_password),
    ("POST /users/{name}/tokens", create_token),
    ("DELETE /tokens/{id}", revoke_token),
    ("PUT /sectors/{name}", set_sector),
    ("POST /projects", request_project),
    ("PATCH /projects/{name}", update_project),
    (
        "POST /projects/{name}/approve",
        decide("approve", ProjectState.REQUESTED, ProjectState.APPROVED),
    ),
    (
        "POST /projects/{name}/activate",
        decide("activate", ProjectState.APPROVED, ProjectState.ACTIVE),
    ),
    ("POST /projects/{name}/deny", decide("deny", ProjectState.REQUESTED, ProjectState.CLOSED)),
    ("POST /projects/{name}/close", decide("close", ProjectState.ACTIVE, ProjectState.CLOSED)),
    ("POST /projects/{name}/members", add_member),
    ("DELETE /projects/{name}/members/{user}", remove_member),
    ("PUT /projects/{name}/quotas/{flavor}", set_quota),
    ("POST /projects/{name}/credits", change_credits),
    ("POST /nodes", register_node),
    ("POST /nodes/{name}/drain", drain("drain", "up", "draining")),
    ("POST /nodes/{name}/undrain", drain("undrain", "draining", "up")),
    ("POST /nodes/{name}/tokens", node_token),
    ("DELETE /nodes/{name}/tokens/{id}", revoke_node_token),
    ("POST /agents/reports", agent_report),
    ("POST /jobs", submit),
    ("POST /jobs/{id}/cancel", cancel),
    ("POST /statements/verify", verify_statement),
]


@pytest.mark.parametrize("make", [pytest.param(make, id=route) for route, make in WRITES])
def test_a_write_is_committed_before_its_answer_starts(
    module_api: Api, make: Callable[[Api], Write]
) -> None:
    api = module_api
    write = make(api)
    probed = ProbeWhenTheAnswerStarts(api.client.app, api, write.probe)
    client = TestClient(probed, raise_server_exceptions=False)  # the pool is running already

    headers = {"Authorization": f"Bearer {write.token}"} if write.token else api.headers(write.user)
    response = client.request(
        write.method, "/api/v1" + write.path, json=write.body, headers=headers
    )

    assert response.status_code == write.status, response.text
    assert probed.seen is True, "the answer started before the write was committed"


def test_every_write_route_has_a_case(module_api: Api) -> None:
    """A new write route needs a row in WRITES."""
    names = {"{job_id}": "{id}", "{token_id}": "{id}", "{member}": "{user}"}
    writes = set()
    for method, path in declared_routes(module_api.client.app):  # type: ignore[arg-type]
        if method in {"POST", "PUT", "PATCH", "DELETE"}:
            path = path.removeprefix("/api/v1")
            for old, new in names.items():
                path = path.replace(old, new)
            writes.add(f"{method} {path}")
    covered = {route for route, _ in WRITES}
    actions = {f"POST /projects/{{name}}/{a}" for a in ("approve", "activate", "deny", "close")}
    assert actions <= covered
    assert writes == (covered - actions) | {"POST /projects/{name}/{action}"}
