"""The role x route matrix: every route under /api/v1, asked by every kind of caller.

Callers: an admin, an operator, the PI of p1 (alice), a plain member of p1 (bob), a
researcher of another project (carol), nobody (no token) and a token the pool never issued.
Each cell names the answer's status: 2xx, or the exact refusal. The targets are p1 and its
jobs, so the outsider column says what a researcher gets for someone else's project: 404 for
what belongs to a project (as if it did not exist), 403 where the route needs another role
whatever the project (admin-only and operator routes; that answer is the same for a project
that does not exist, see test_projects). A route without a row fails
`test_the_matrix_covers_every_route`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.web.conftest import ANONYMOUS, Api, unique
from web.db import write_session
from web.models import ProjectState, Role
from web.services.auth import Principal
from web.services.nodes import issue_node_token

OK = "2xx"
Expected = str | int

# column -> the user who asks (None: no Authorization header; "<bad>": an unknown token)
CALLERS: dict[str, str | None] = {
    "admin": "admin",
    "operator": "ops",
    "pi": "alice",
    "member": "bob",
    "outsider": "carol",
    "anonymous": ANONYMOUS,
    "bad_token": "<bad>",
}
SIGNED_IN = ("admin", "operator", "pi", "member", "outsider")
SECRET = "secret-of-p1"  # in p1's jobs; must never reach anyone outside p1

Request = tuple[str, dict[str, Any] | None]  # concrete path (after /api/v1), JSON body


@dataclass(frozen=True)
class Row:
    method: str
    route: str  # as the app declares it, e.g. /api/v1/jobs/{job_id}
    make: Callable[[Api], Request]  # builds its own target: every cell gets a fresh one
    admin: Expected
    operator: Expected
    pi: Expected
    member: Expected
    outsider: Expected
    bug: str = ""  # set: the signed-in cells fail because of this known bug (strict xfail)
    check: Callable[[Api, str, httpx.Response], None] | None = field(default=None)
    public: bool = False  # anyone may call it: no token, or a bad one, is no refusal

    @property
    def id(self) -> str:
        return f"{self.method} {self.route.removeprefix('/api/v1')}"

    def expected(self, column: str) -> Expected:
        if column in SIGNED_IN:
            expected: Expected = getattr(self, column)
            return expected
        return OK if self.public else 401


# --- targets -------------------------------------------------------------------------------


def fixed(path: str, body: dict[str, Any] | None = None) -> Callable[[Api], Request]:
    return lambda api: (path, body)


def dave_job(api: Api) -> int:
    """A queued job in p1 of dave's (a member other than the matrix's callers)."""
    return int(api.submit("dave", entrypoint=f"python {SECRET}.py", name=SECRET)["id"])


def dave_running_job_with_output(api: Api) -> int:
    """dave's job in p1, running its first attempt, which has printed p1's secret."""
    job_id = dave_job(api)
    api.set_job(job_id, state="running", attempt=1)
    logs = api.pool.settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / f"{job_id}-1.log").write_text(f"the {SECRET}\n")
    return job_id


def the_output(api: Api, user: str, response: httpx.Response) -> None:
    assert response.text == f"the {SECRET}\n"
    assert response.headers["content-type"].startswith("text/plain")


def requested_project(api: Api) -> str:
    return api.add_project(
        unique("req"), pi="alice", members=("bob",), state=ProjectState.REQUESTED
    )


def new_p1_member(api: Api) -> str:
    return api.add_user(unique("m"), member_of=("p1",))


def draining_node(api: Api) -> str:
    return api.add_node(unique("n"), state="draining")


def node_token(api: Api) -> str:
    """A node with an agent token: the path (under /nodes/) that revokes the token."""
    name = api.add_node(unique("n"))
    with write_session(api.engine) as session:
        made = issue_node_token(session, Principal("seed", Role.ADMIN), name, "", api.clock.now())
    return f"{name}/tokens/{made.id}"


def bob_token(api: Api) -> int:
    return int(api.issue("bob").id)


# --- what lists may hold -------------------------------------------------------------------


def only_own_jobs(api: Api, user: str, response: httpx.Response) -> None:
    projects = {job["project"] for job in response.json()["items"]}
    if user in ("alice", "bob"):
        assert projects == {"p1"}
    elif user == "carol":
        assert projects == {"p2"}
        assert SECRET not in response.text
    else:  # admin and operator read everything
        assert {"p1", "p2", "p3"} <= projects


def only_own_projects(api: Api, user: str, response: httpx.Response) -> None:
    names = {p["name"] for p in response.json()}
    own = {"alice": "p1", "bob": "p1", "carol": "p2"}.get(user)
    if own is None:  # admin and operator read everything
        assert {"p1", "p2", "p3"} <= names
    else:  # their own, and none of the other seeded ones
        assert own in names and not ({"p1", "p2", "p3"} - {own}) & names


def only_own_entries(api: Api, user: str, response: httpx.Response) -> None:
    projects = {entry["project"] for entry in response.json()}
    own = {"alice": {"p1"}, "bob": {"p1"}, "carol": {"p2"}}.get(user)
    if own is not None:
        assert projects <= own
    else:  # admin and operator: every project's (the seed granted p1 its credits)
        assert "p1" in projects


def signed_statement_of_p1(api: Api) -> Request:
    statement = api.get("admin", "/projects/p1/statements/2026-03").json()
    return "/statements/verify", statement


def a_valid_statement(api: Api, user: str, response: httpx.Response) -> None:
    assert response.json()["valid"] is True, response.json()


def only_own_tokens(api: Api, user: str, response: httpx.Response) -> None:
    owners = {t["user"] for t in response.json()}
    if user != "admin":
        assert owners == {user}
    assert all("token" not in t for t in response.json())


ROWS = [
    # --- jobs ------------------------------------------------------------------------------
    Row(
        "POST", "/api/v1/jobs",
        fixed("/jobs", {"project": "p1", "entrypoint": "python x.py", "gpus": 1}),
        # Admins and operators are not members; an outsider is told p1 is not one of theirs,
        # in the words used for a project that does not exist (422 naming `project`).
        admin=403, operator=403, pi=OK, member=OK, outsider=422,
    ),
    Row(
        "GET", "/api/v1/jobs", fixed("/jobs?limit=1000"),
        admin=OK, operator=OK, pi=OK, member=OK, outsider=OK, check=only_own_jobs,
    ),
    Row(
        "GET", "/api/v1/jobs/{job_id}", lambda api: (f"/jobs/{dave_job(api)}", None),
        admin=OK, operator=OK, pi=OK, member=OK, outsider=404,
    ),
    Row(
        "GET", "/api/v1/jobs/{job_id}/logs",
        lambda api: (f"/jobs/{dave_running_job_with_output(api)}/logs", None),
        admin=OK, operator=OK, pi=OK, member=OK, outsider=404, check=the_output,
    ),
    Row(
        "GET", "/api/v1/jobs/{job_id}/usage",
        lambda api: (f"/jobs/{dave_running_job_with_output(api)}/usage", None),
        admin=OK, operator=OK, pi=OK, member=OK, outsider=404,
    ),
    Row(
        "POST", "/api/v1/jobs/{job_id}/cancel",
        lambda api: (f"/jobs/{dave_job(api)}/cancel", None),
        # dave's job: the PI and admins may cancel it; bob is a member but not its owner.
        admin=OK, operator=403, pi=OK, member=403, outsider=404,
    ),
    # --- projects --------------------------------------------------------------------------
    Row(
        "GET", "/api/v1/projects", fixed("/projects"),
        admin=OK, operator=OK, pi=OK, member=OK, outsider=OK, check=only_own_projects,
    ),
    Row(
        "POST", "/api/v1/projects",
        lambda api: ("/projects", {"name": unique("new"), "title": "T", "sector": "academia"}),
        admin=OK, operator=OK, pi=OK, member=OK, outsider=OK,
    ),
    Row(
        "GET", "/api/v1/projects/{name}", fixed("/projects/p1"),
        admin=OK, operator=OK, pi=OK, member=OK, outsider=404,
    ),
    Row(
        "PATCH", "/api/v1/projects/{name}", fixed("/projects/p1", {"title": "Project one"}),
        admin=OK, operator=403, pi=OK, member=403, outsider=404,
    ),
    Row(
        "POST", "/api/v1/projects/{name}/{action}",
        lambda api: (f"/projects/{requested_project(api)}/approve", {"note": "ok"}),
        admin=OK, operator=403, pi=403, member=403, outsider=403,
    ),
    Row(
        "POST", "/api/v1/projects/{name}/members",
        lambda api: ("/projects/p1/members", {"user": api.add_user(unique("u"))}),
        admin=OK, operator=403, pi=OK, member=403, outsider=404,
    ),
    Row(
        "DELETE", "/api/v1/projects/{name}/members/{member}",
        lambda api: (f"/projects/p1/members/{new_p1_member(api)}", None),
        admin=OK, operator=403, pi=OK, member=403, outsider=404,
    ),
    Row(
        "PUT", "/api/v1/projects/{name}/quotas/{flavor}",
        fixed("/projects/p1/quotas/H100", {"guaranteed": 8, "limit": 16}),
        admin=OK, operator=403, pi=403, member=403, outsider=403,
    ),
    Row(
        "POST", "/api/v1/projects/{name}/credits",
        fixed("/projects/p1/credits", {"amount": 1}),
        admin=OK, operator=403, pi=403, member=403, outsider=403,
    ),
    Row(
        "GET", "/api/v1/projects/{name}/history", fixed("/projects/p1/history"),
        admin=OK, operator=OK, pi=OK, member=OK, outsider=404,
    ),
    # --- statements, ledger, usage, credits -------------------------------------------------
    Row(
        "GET", "/api/v1/projects/{name}/statements/{period}",
        fixed("/projects/p1/statements/2026-Q1?format=html"),
        admin=OK, operator=OK, pi=OK, member=OK, outsider=404,
    ),
    Row(
        "GET", "/api/v1/projects/{name}/credits", fixed("/projects/p1/credits"),
        admin=OK, operator=OK, pi=OK, member=OK, outsider=404,
    ),
    Row(
        # Anyone may check a statement: a funding agency needs no account.
        "GET", "/api/v1/statements/public-key", fixed("/statements/public-key"),
        admin=OK, operator=OK, pi=OK, member=OK, outsider=OK, public=True,
    ),
    Row(
        "POST", "/api/v1/statements/verify", signed_statement_of_p1,
        admin=OK, operator=OK, pi=OK, member=OK, outsider=OK, public=True,
        check=a_valid_statement,
    ),
    Row(
        "GET", "/api/v1/ledger", fixed("/ledger?limit=1000"),
        admin=OK, operator=OK, pi=OK, member=OK, outsider=OK, check=only_own_entries,
    ),
    Row(
        "GET", "/api/v1/usage", fixed("/usage?by=user"),
        admin=OK, operator=OK, pi=OK, member=OK, outsider=OK,
    ),
    # --- nodes and flavors -----------------------------------------------------------------
    Row(
        "GET", "/api/v1/nodes", fixed("/nodes"),
        admin=OK, operator=OK, pi=OK, member=OK, outsider=OK,
    ),
    Row(
        "POST", "/api/v1/nodes",
        lambda api: ("/nodes", {"name": unique("node"), "flavor": "H100", "gpus": 8}),
        admin=OK, operator=OK, pi=403, member=403, outsider=403,
    ),
    Row(
        "POST", "/api/v1/nodes/{name}/drain",
        lambda api: (f"/nodes/{api.add_node(unique('n'))}/drain", {"reason": "ECC"}),
        admin=OK, operator=OK, pi=403, member=403, outsider=403,
    ),
    Row(
        "POST", "/api/v1/nodes/{name}/undrain",
        lambda api: (f"/nodes/{draining_node(api)}/undrain", None),
        admin=OK, operator=OK, pi=403, member=403, outsider=403,
    ),
    Row(
        "GET", "/api/v1/nodes/{name}/gpus",
        lambda api: (f"/nodes/{api.add_node(unique('n'))}/gpus", None),
        admin=OK, operator=OK, pi=403, member=403, outsider=403,
    ),
    Row(
        "GET", "/api/v1/nodes/{name}/history",
        lambda api: (f"/nodes/{api.add_node(unique('n'))}/history", None),
        admin=OK, operator=OK, pi=403, member=403, outsider=403,
    ),
    Row(
        "POST", "/api/v1/nodes/{name}/tokens",
        lambda api: (f"/nodes/{api.add_node(unique('n'))}/tokens", {"label": "agent"}),
        admin=OK, operator=OK, pi=403, member=403, outsider=403,
    ),
    Row(
        "GET", "/api/v1/nodes/{name}/tokens",
        lambda api: (f"/nodes/{api.add_node(unique('n'))}/tokens", None),
        admin=OK, operator=OK, pi=403, member=403, outsider=403,
    ),
    Row(
        "DELETE", "/api/v1/nodes/{name}/tokens/{token_id}",
        lambda api: (f"/nodes/{node_token(api)}", None),
        admin=OK, operator=OK, pi=403, member=403, outsider=403,
    ),
    # --- agents ----------------------------------------------------------------------------
    Row(
        "POST", "/api/v1/agents/reports",
        fixed("/agents/reports", {"node": "h-0", "reports": [{"boot": "c0ffee00", "seq": 1}]}),
        # A user's token, whatever its role, is not a node's.
        admin=401, operator=401, pi=401, member=401, outsider=401,
    ),
    Row(
        "GET", "/api/v1/flavors", fixed("/flavors"),
        admin=OK, operator=OK, pi=OK, member=OK, outsider=OK,
    ),
    # --- users, tokens, sectors ------------------------------------------------------------
    Row(
        "GET", "/api/v1/users/me", fixed("/users/me"),
        admin=OK, operator=OK, pi=OK, member=OK, outsider=OK,
    ),
    Row(
        "GET", "/api/v1/users", fixed("/users"),
        admin=OK, operator=OK, pi=403, member=403, outsider=403,
    ),
    Row(
        "POST", "/api/v1/users", lambda api: ("/users", {"name": unique("user")}),
        admin=OK, operator=403, pi=403, member=403, outsider=403,
    ),
    Row(
        "GET", "/api/v1/users/{name}", fixed("/users/dave"),
        admin=OK, operator=OK, pi=404, member=404, outsider=404,
    ),
    Row(
        "PATCH", "/api/v1/users/{name}",
        lambda api: (f"/users/{api.add_user(unique('u'))}", {"full_name": "Renamed"}),
        admin=OK, operator=403, pi=403, member=403, outsider=403,
    ),
    Row(
        "POST", "/api/v1/users/{name}/tokens", fixed("/users/bob/tokens", {"label": "ci"}),
        # Admins issue tokens for anyone; everyone else only for themselves (bob here).
        admin=OK, operator=403, pi=403, member=OK, outsider=403,
    ),
    Row(
        "PUT", "/api/v1/users/{name}/password",
        fixed(
            "/users/bob/password",
            {"password": "a-long-password", "current_password": "a-long-password"},
        ),
        # Admins set anyone's; everyone else only their own (bob here), with the current
        # one (the admin's try may have set it already; the admin's own is not asked for).
        admin=OK, operator=403, pi=403, member=OK, outsider=403,
    ),
    Row(
        "GET", "/api/v1/tokens", fixed("/tokens"),
        admin=OK, operator=OK, pi=OK, member=OK, outsider=OK, check=only_own_tokens,
    ),
    Row(
        "DELETE", "/api/v1/tokens/{token_id}", lambda api: (f"/tokens/{bob_token(api)}", None),
        admin=OK, operator=404, pi=404, member=OK, outsider=404,
    ),
    Row(
        "GET", "/api/v1/sectors", fixed("/sectors"),
        admin=OK, operator=OK, pi=OK, member=OK, outsider=OK,
    ),
    Row(
        "PUT", "/api/v1/sectors/{name}", lambda api: (f"/sectors/{unique('s')}", {"weight": 2}),
        admin=OK, operator=403, pi=403, member=403, outsider=403,
    ),
]  # fmt: skip


def cases() -> list[Any]:
    result = []
    for row in ROWS:
        for column in CALLERS:
            marks = []
            if row.bug and column in SIGNED_IN:
                marks = [pytest.mark.xfail(reason=row.bug, strict=True)]
            result.append(pytest.param(row, column, id=f"{row.id} [{column}]", marks=marks))
    return result


def declared_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves under /api/v1, however it nests them."""
    try:  # FastAPI >= 0.130 keeps included routers whole; this flattens them
        from fastapi.routing import iter_route_contexts

        routes: list[Any] = list(iter_route_contexts(app.routes))
    except ImportError:  # pragma: no cover  (older FastAPI lists routes flat)
        routes = list(app.routes)
    found = {
        (method, route.path)
        for route in routes
        for method in (getattr(route, "methods", None) or ())
        if (route.path or "").startswith("/api/v1") and method != "HEAD"
    }
    in_schema = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
        if path.startswith("/api/v1")
    }
    assert in_schema <= found, f"the schema lists routes the walk missed: {in_schema - found}"
    return found


@pytest.fixture(scope="module")
def matrix_api(module_api: Api) -> Api:
    """The module's pool with a job in every project, each marked as its project's own."""
    module_api.submit("alice", entrypoint=f"python {SECRET}.py", name=SECRET)
    module_api.submit("carol", project="p2", entrypoint="python secret-of-p2.py")
    module_api.submit("erin", project="p3", flavor="A100", entrypoint="python secret-of-p3.py")
    return module_api


def test_the_matrix_covers_every_route(matrix_api: Api) -> None:
    declared = declared_routes(matrix_api.client.app)  # type: ignore[arg-type]
    table = {(row.method, row.route) for row in ROWS}
    assert len(table) == len(ROWS), "two rows for one route"
    assert declared - table == set(), "routes without a row in the matrix"
    assert table - declared == set(), "rows for routes the app does not have"


@pytest.mark.parametrize(("row", "column"), cases())
def test_role_matrix(matrix_api: Api, row: Row, column: str) -> None:
    api, user = matrix_api, CALLERS[column]
    path, body = row.make(api)
    response = api.request(user, row.method, path, json=body)

    expected = row.expected(column)
    if expected == OK:
        assert 200 <= response.status_code < 300, response.text
        if row.check is not None:
            row.check(api, user or "", response)
    else:
        assert response.status_code == expected, response.text
        refusal = response.json()
        assert set(refusal) <= {"detail", "field", "errors"}, refusal  # an error, no data
        assert refusal["detail"]
        assert SECRET not in response.text
    if expected == 401:
        assert response.headers.get("www-authenticate") == "Bearer"


def test_a_researcher_lists_nothing_of_another_project_whatever_the_filter(
    matrix_api: Api,
) -> None:
    api = matrix_api
    for query in (
        "?project=p1",
        "?user=alice",
        "?user=dave&project=p1",
        "?state=queued&limit=1000",
        "?flavor=*",
        "?project=p1' OR '1'='1",
    ):
        page = api.get("carol", "/jobs" + query)
        assert page.status_code == 200, page.text
        assert all(job["project"] == "p2" for job in page.json()["items"]), query
        assert SECRET not in page.text
        if "p1" in query or "alice" in query or "dave" in query:
            assert page.json()["total"] == 0, query
    assert api.get("carol", "/projects?state=active").json()[0]["name"] == "p2"
    assert len(api.get("carol", "/projects?state=active").json()) == 1


def test_another_projects_things_look_exactly_like_things_that_do_not_exist(
    matrix_api: Api,
) -> None:
    api = matrix_api
    job = dave_job(api)
    pairs = [
        (f"/jobs/{job}", "/jobs/987654", str(job), "987654"),
        (f"/jobs/{job}/logs", "/jobs/987654/logs", str(job), "987654"),
        ("/projects/p1", "/projects/zz", "'p1'", "'zz'"),
        ("/projects/p1/history", "/projects/zz/history", "'p1'", "'zz'"),
    ]
    for hidden, missing, hidden_name, missing_name in pairs:
        seen, unseen = api.get("carol", hidden), api.get("carol", missing)
        assert seen.status_code == unseen.status_code == 404
        assert seen.json() == {
            k: v.replace(missing_name, hidden_name) if isinstance(v, str) else v
            for k, v in unseen.json().items()
        }
    cancel_hidden = api.post("carol", f"/jobs/{job}/cancel")
    cancel_missing = api.post("carol", "/jobs/987654/cancel")
    assert cancel_hidden.status_code == cancel_missing.status_code == 404
    assert api.job_row(job).state == "queued"
