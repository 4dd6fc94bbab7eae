"""Projects over the API: requests, an administrator's decisions through the lifecycle,
members, quotas, credits, sectors, and the record of who changed what and when."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlmodel import col, select

from tests.web.conftest import Api, assert_refusal, unique
from web.db import read_session, write_session
from web.models import Change, Project, ProjectState


def iso(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def at(value: str) -> datetime:
    """An API datetime (naive ones are UTC) as an aware datetime."""
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def history(api: Api, project: str, user: str = "admin") -> list[dict[str, Any]]:
    response = api.get(user, f"/projects/{project}/history")
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()
    return entries


def changes(api: Api, subject: str) -> list[Change]:
    """Every recorded change of `subject`, oldest first (straight from the table)."""
    with read_session(api.engine) as session:
        rows = session.exec(
            select(Change).where(Change.subject == subject).order_by(col(Change.id))
        ).all()
        return [Change.model_validate(row.model_dump()) for row in rows]


# --- requests ------------------------------------------------------------------------------


def test_a_researcher_requests_a_project(module_api: Api) -> None:
    api, name = module_api, unique("asked")
    response = api.post(
        "bob",
        "/projects",
        json={
            "name": name,
            "title": "Protein folding",
            "sector": "academia",
            "requested_gpus": 16,
            "justification": "we need GPUs",
        },
    )

    assert response.status_code == 201, response.text
    project = response.json()
    assert (project["state"], project["pi"], project["sector"]) == ("requested", "bob", "academia")
    assert project["members"] == [{"user": "bob", "role": "pi"}]
    assert at(project["created_at"]) == iso(api.clock.now())
    [entry] = history(api, name)
    assert (entry["actor"], entry["field"], entry["new"]) == ("bob", "state", "requested")


def test_the_requester_sees_the_new_project_at_once(module_api: Api) -> None:
    api, name = module_api, unique("asked")
    api.get("dave", "/users/me")  # dave's principal is now cached
    response = api.post(
        "dave", "/projects", json={"name": name, "title": "T", "sector": "industry"}
    )
    assert response.status_code == 201, response.text
    assert api.get("dave", f"/projects/{name}").status_code == 200
    assert name in {p["name"] for p in api.get("dave", "/projects").json()}


@pytest.mark.parametrize(
    ("user", "spec", "status", "field", "says"),
    [
        ("alice", {"name": "p1"}, 409, "name", ["'p1' exists already"]),
        ("alice", {"sector": "space"}, 422, "sector", ["'space'", "one of: academia, industry"]),
        ("alice", {"name": "Bad Name"}, 422, "name", ["should match pattern"]),
        ("alice", {"name": "-x"}, 422, "name", ["should match pattern"]),
        ("alice", {"title": ""}, 422, "title", ["at least 1 character"]),
        ("alice", {"requested_gpus": -1}, 422, "requested_gpus", ["greater than or equal to 0"]),
        ("alice", {"pi": "bob"}, 403, "pi", ["only an administrator"]),
        ("admin", {"pi": "nobody"}, 422, "pi", ["no user 'nobody'"]),
        ("alice", {"title": "T\x00"}, 422, "title", ["NUL"]),
        ("alice", {"justification": "\x00"}, 422, "justification", ["NUL"]),
        ("alice", {"sector": "academia\x00"}, 422, "sector", ["NUL"]),
        ("alice", {"requested_gpu_hours": "Infinity"}, 422, "requested_gpu_hours", ["finite"]),
        ("alice", {"requested_gpu_hours": "NaN"}, 422, "requested_gpu_hours", ["finite"]),
        ("alice", {"requested_gpu_hours": 1e10}, 422, "requested_gpu_hours", ["less than"]),
    ],
    ids=[
        "name-taken",
        "sector-unknown",
        "name-with-space",
        "name-starting-with-dash",
        "title-empty",
        "gpus-negative",
        "researcher-for-another-pi",
        "pi-unknown",
        "title-nul",
        "justification-nul",
        "sector-nul",
        "gpu-hours-infinite",
        "gpu-hours-nan",
        "gpu-hours-huge",
    ],
)
def test_bad_project_requests_are_refused(
    module_api: Api, user: str, spec: dict[str, Any], status: int, field: str, says: list[str]
) -> None:
    api = module_api
    before = len(api.get("admin", "/projects").json())
    request = {"name": unique("bad"), "title": "T", "sector": "academia"} | spec
    assert_refusal(api.post(user, "/projects", json=request), status, field, *says)
    assert len(api.get("admin", "/projects").json()) == before


# --- decisions -----------------------------------------------------------------------------

# action -> (the states it may start from, the state it leads to), as DESIGN.md's lifecycle.
LIFECYCLE = {
    "approve": ({"requested"}, "approved"),
    "activate": ({"approved", "expired"}, "active"),
    "deny": ({"requested"}, "closed"),
    "close": ({"approved", "active", "expired"}, "closed"),
}


def decision_cases() -> list[Any]:
    return [
        pytest.param(state, action, id=f"{action}-from-{state.value}")
        for action in LIFECYCLE
        for state in ProjectState
    ]


@pytest.mark.parametrize(("state", "action"), decision_cases())
def test_decisions_follow_the_lifecycle(module_api: Api, state: ProjectState, action: str) -> None:
    api = module_api
    name = api.add_project(unique(state.value), pi="alice", state=state)
    api.clock.advance(60)
    sources, target = LIFECYCLE[action]

    response = api.post("admin", f"/projects/{name}/{action}", json={"note": "board, 3 May"})

    if state.value in sources:
        assert response.status_code == 200, response.text
        project = response.json()
        assert project["state"] == target
        assert (project["decided_by"], project["decision_note"]) == ("admin", "board, 3 May")
        assert at(project["decided_at"]) == iso(api.clock.now())
        entry = history(api, name)[0]  # newest first
        assert (entry["actor"], entry["field"], entry["old"], entry["new"], entry["note"]) == (
            "admin",
            "state",
            state.value,
            target,
            "board, 3 May",
        )
        assert at(entry["at"]) == iso(api.clock.now())
    else:
        assert_refusal(response, 409, "state", f"cannot {action}", f"it is {state.value}", "needs")
        assert api.get("admin", f"/projects/{name}").json()["state"] == state.value
        assert history(api, name) == []


def test_activation_can_set_the_end_date(module_api: Api) -> None:
    api = module_api
    name = api.add_project(unique("approved"), pi="alice", state=ProjectState.APPROVED)
    response = api.post(
        "admin", f"/projects/{name}/activate", json={"expires_at": "2030-01-01T00:00:00Z"}
    )
    assert response.status_code == 200, response.text
    assert at(response.json()["expires_at"]) == datetime(2030, 1, 1, tzinfo=UTC)


PAST, FUTURE = "2020-01-01T00:00:00Z", "2030-01-01T00:00:00Z"  # the clock is in 2023

# An active project past its end date expires at the next cycle: activating one so is refused.
END_DATES = [
    # id, the project's state, its end date, the decision, the end date given, status
    ("expired-no-new-date", ProjectState.EXPIRED, PAST, "activate", None, 422),
    ("expired-new-date-past", ProjectState.EXPIRED, PAST, "activate", PAST, 422),
    ("expired-new-date-now", ProjectState.EXPIRED, PAST, "activate", "now", 422),
    ("expired-new-date", ProjectState.EXPIRED, PAST, "activate", FUTURE, 200),
    ("expired-without-an-end", ProjectState.EXPIRED, None, "activate", None, 200),
    ("approved-ended-already", ProjectState.APPROVED, PAST, "activate", None, 422),
    ("approved-with-a-future-end", ProjectState.APPROVED, FUTURE, "activate", None, 200),
    ("approved-given-a-past-end", ProjectState.APPROVED, None, "activate", PAST, 422),
    ("approve-with-a-past-end", ProjectState.REQUESTED, None, "approve", PAST, 422),
    ("close-an-expired-one", ProjectState.EXPIRED, PAST, "close", None, 200),
]


@pytest.mark.parametrize(
    ("state", "ends", "action", "given", "status"),
    [pytest.param(*case[1:], id=case[0]) for case in END_DATES],
)
def test_activating_needs_an_end_date_after_now(
    module_api: Api,
    state: ProjectState,
    ends: str | None,
    action: str,
    given: str | None,
    status: int,
) -> None:
    api = module_api
    name = api.add_project(unique(state.value), pi="alice", state=state)
    if ends is not None:
        with write_session(api.engine) as session:
            project = session.get(Project, name)
            assert project is not None
            project.expires_at = at(ends).timestamp()
    if given == "now":
        given = iso(api.clock.now()).isoformat()
    decision = {} if given is None else {"expires_at": given}

    response = api.post("admin", f"/projects/{name}/{action}", json=decision)

    if status == 200:
        assert response.status_code == 200, response.text
        if given is not None:
            assert at(response.json()["expires_at"]) == at(given)
    else:
        assert_refusal(response, 422, "expires_at", "give a new end date after now")
        assert api.get("admin", f"/projects/{name}").json()["state"] == state.value
        assert history(api, name) == []


def test_an_unknown_decision_is_refused_naming_the_allowed_ones(module_api: Api) -> None:
    response = module_api.post("admin", "/projects/p1/explode", json={})
    assert_refusal(response, 422, "action", "'approve', 'activate', 'deny' or 'close'")


@pytest.mark.parametrize("user", ["alice", "bob", "carol", "ops"])
def test_only_an_admin_decides(module_api: Api, user: str) -> None:
    api = module_api
    # alice is its PI, bob a member: neither may approve their own request.
    name = api.add_project(
        unique("wanting"), pi="alice", members=("bob",), state=ProjectState.REQUESTED
    )
    response = api.post(user, f"/projects/{name}/approve", json={})
    assert response.status_code == 403, response.text
    assert "admin" in response.json()["detail"]
    assert api.get("admin", f"/projects/{name}").json()["state"] == "requested"
    # The same answer for a project that does not exist: nothing is told by it.
    assert api.post(user, "/projects/no-such-project/approve", json={}).status_code == 403


def test_an_admin_deciding_on_a_project_that_does_not_exist_gets_404(module_api: Api) -> None:
    response = module_api.post("admin", "/projects/no-such-project/approve", json={})
    assert_refusal(response, 404, "project", "no project 'no-such-project'")


def test_closing_a_project_stops_its_submissions_at_once(module_api: Api) -> None:
    api = module_api
    name = api.add_project(unique("closing"), pi="alice")
    api.submit("alice", project=name)  # the pool has seen it active
    assert api.post("admin", f"/projects/{name}/close", json={}).status_code == 200
    response = api.post(
        "alice", "/jobs", json={"project": name, "entrypoint": "python x.py", "gpus": 1}
    )
    assert_refusal(response, 409, "project", "is closed")


@pytest.mark.parametrize(
    ("state", "action", "says"),
    [
        (ProjectState.ACTIVE, "close", "project closed by admin"),
        (ProjectState.EXPIRED, "close", "project closed by admin"),
        (ProjectState.REQUESTED, "deny", "project denied by admin"),
    ],
    ids=["close-active", "close-expired", "deny"],
)
def test_closing_a_project_cancels_its_queued_jobs_and_stops_its_running_ones(
    module_api: Api, state: ProjectState, action: str, says: str
) -> None:
    api = module_api
    name = api.add_project(unique("ending"), pi="alice", members=("bob",))
    ids = [api.submit(user, project=name)["id"] for user in ("alice", "bob", "bob", "alice")]
    queued, admitted, running, done = ids
    api.set_job(admitted, state="admitted", admitted_at=api.clock.now())
    api.set_job(running, state="running", started_at=api.clock.now())
    api.set_job(done, state="succeeded", ended_at=api.clock.now(), outcome="exit 0")
    other = api.submit("alice")  # another project's job is none of this
    with write_session(api.engine) as session:
        project = session.get(Project, name)
        assert project is not None
        project.state = state.value
    api.changed()
    api.clock.advance(30)

    response = api.post("admin", f"/projects/{name}/{action}", json={"note": "funding ended"})

    assert response.status_code == 200, response.text
    rows = {i: api.job_row(i) for i in ids}
    assert (rows[queued].state, rows[queued].ended_at) == ("cancelled", api.clock.now())
    assert rows[queued].outcome == says and rows[queued].reason == ""
    for held in (admitted, running):  # they hold GPUs: the loop stops them and frees them
        assert rows[held].state in ("admitted", "running")
        assert rows[held].cancel_requested_at == api.clock.now()
        assert rows[held].outcome == says
    assert (rows[done].state, rows[done].outcome, rows[done].cancel_requested_at) == (
        "succeeded",
        "exit 0",
        None,
    )
    assert api.job_row(other["id"]).state == "queued"
    jobs_entry, state_entry = history(api, name)[:2]
    assert (state_entry["field"], state_entry["new"]) == ("state", "closed")
    assert (jobs_entry["actor"], jobs_entry["field"], jobs_entry["note"]) == ("admin", "jobs", says)
    assert (jobs_entry["old"], jobs_entry["new"]) == (
        "1 queued, 2 admitted or running",
        "1 cancelled, 2 asked to stop",
    )
    api.clock.advance(-30)


# --- changing a project --------------------------------------------------------------------


@pytest.mark.parametrize(
    "title", ["Better title", "x'); DROP TABLE projects; --"], ids=["words", "sql-looking"]
)
def test_the_pi_changes_the_title_and_it_is_recorded(module_api: Api, title: str) -> None:
    api = module_api
    name = api.add_project(unique("titled"), pi="alice", members=("bob",))
    response = api.patch("alice", f"/projects/{name}", json={"title": title})
    assert response.status_code == 200, response.text
    assert api.get("bob", f"/projects/{name}").json()["title"] == title
    entry = history(api, name, user="bob")[0]
    assert (entry["actor"], entry["field"], entry["old"], entry["new"]) == (
        "alice",
        "title",
        name,
        title,
    )
    assert len(api.get("admin", "/projects").json()) > 3  # the table is all there


@pytest.mark.parametrize(
    ("user", "change", "status", "field"),
    [
        ("alice", {"share": 2.0}, 403, "share"),
        ("alice", {"expires_at": "2030-01-01T00:00:00Z"}, 403, "expires_at"),
        ("admin", {"share": 0}, 422, "share"),
        ("admin", {"default_max_runtime_s": -5}, 422, "default_max_runtime_s"),
        ("admin", {"title": ""}, 422, "title"),
        # Numbers that are not finite, or past any sensible bound, would reach the loop.
        ("admin", {"default_max_runtime_s": "Infinity"}, 422, "default_max_runtime_s"),
        ("admin", {"default_max_runtime_s": "NaN"}, 422, "default_max_runtime_s"),
        ("admin", {"default_max_runtime_s": 366 * 86400 + 1}, 422, "default_max_runtime_s"),
        ("admin", {"share": "Infinity"}, 422, "share"),
        ("admin", {"share": 1e7}, 422, "share"),
        # A title cannot be null (leave it out to keep it); nor hold a NUL.
        ("admin", {"title": None}, 422, "title"),
        ("alice", {"title": None, "default_max_runtime_s": 60}, 422, "title"),
        ("alice", {"title": "a\x00b"}, 422, "title"),
        # Past 2603 a stored end date would read back as milliseconds (a date in 1978).
        ("admin", {"expires_at": "9999-12-31T00:00:00Z"}, 422, "expires_at"),
        ("admin", {"expires_at": "0001-01-01T00:00:00Z"}, 422, "expires_at"),
    ],
    ids=[
        "pi-share",
        "pi-end-date",
        "share-zero",
        "runtime-negative",
        "title-empty",
        "runtime-infinite",
        "runtime-nan",
        "runtime-over-a-year",
        "share-infinite",
        "share-huge",
        "title-null",
        "title-null-with-another",
        "title-nul",
        "end-date-too-late",
        "end-date-too-early",
    ],
)
def test_project_changes_refused(
    module_api: Api, user: str, change: dict[str, Any], status: int, field: str
) -> None:
    api = module_api
    name = api.add_project(unique("guarded"), pi="alice")
    before = api.get("admin", f"/projects/{name}").json()
    assert_refusal(api.patch(user, f"/projects/{name}", json=change), status, field)
    assert history(api, name) == []
    assert api.get("admin", f"/projects/{name}").json() == before


def test_null_resets_the_fields_that_may_be_empty(module_api: Api) -> None:
    api = module_api
    name = api.add_project(unique("reset"), pi="alice")
    change = {
        "share": 2.0,
        "default_max_runtime_s": 366 * 86400,
        "expires_at": "2030-01-01T00:00:00Z",
    }
    assert api.patch("admin", f"/projects/{name}", json=change).status_code == 200
    reset = {"share": None, "default_max_runtime_s": None, "expires_at": None}
    response = api.patch("admin", f"/projects/{name}", json=reset)
    assert response.status_code == 200, response.text
    assert {k: response.json()[k] for k in reset} == reset
    default = api.pool.settings.default_max_runtime_s
    assert api.submit("alice", project=name)["max_runtime_s"] == default


def test_an_admin_sets_the_share_and_a_new_default_time_applies_to_new_jobs(
    module_api: Api,
) -> None:
    api = module_api
    name = api.add_project(unique("shared"), pi="alice")
    response = api.patch(
        "admin", f"/projects/{name}", json={"share": 3.0, "default_max_runtime_s": 600}
    )
    assert response.status_code == 200, response.text
    assert (response.json()["share"], response.json()["default_max_runtime_s"]) == (3.0, 600)
    assert api.submit("alice", project=name)["max_runtime_s"] == 600
    assert {e["field"] for e in history(api, name)} == {"share", "default_max_runtime_s"}


# --- members -------------------------------------------------------------------------------


def test_the_pi_adds_a_member_who_may_then_submit(module_api: Api) -> None:
    api = module_api
    name = api.add_project(unique("team"), pi="alice")
    newcomer = api.add_user(unique("new"))
    assert api.get(newcomer, f"/projects/{name}").status_code == 404

    response = api.post("alice", f"/projects/{name}/members", json={"user": newcomer})

    assert response.status_code == 200, response.text
    assert {"user": newcomer, "role": "member"} in response.json()["members"]
    assert api.get(newcomer, f"/projects/{name}").status_code == 200
    api.submit(newcomer, project=name)
    entry = history(api, name)[0]
    assert (entry["actor"], entry["field"], entry["new"]) == (
        "alice",
        f"member:{newcomer}",
        "member",
    )


@pytest.mark.parametrize(
    ("user", "member", "status", "field"),
    [("alice", "nobody", 422, "user"), ("bob", "carol", 403, ""), ("ops", "carol", 403, "")],
    ids=["unknown-user", "plain-member", "operator"],
)
def test_adding_members_refused(
    module_api: Api, user: str, member: str, status: int, field: str
) -> None:
    api = module_api
    name = api.add_project(unique("closed-team"), pi="alice", members=("bob",))
    response = api.post(user, f"/projects/{name}/members", json={"user": member})
    assert response.status_code == status, response.text
    if field:
        assert_refusal(response, status, field)
    assert history(api, name) == []


def test_the_pi_removes_a_member_who_then_sees_nothing(module_api: Api) -> None:
    api = module_api
    leaving = api.add_user(unique("leaving"))
    name = api.add_project(unique("team"), pi="alice", members=(leaving,))
    job = api.submit(leaving, project=name)
    assert api.get(leaving, f"/projects/{name}").status_code == 200  # cached as a member

    response = api.delete("alice", f"/projects/{name}/members/{leaving}")

    assert response.status_code == 200, response.text
    assert [m["user"] for m in response.json()["members"]] == ["alice"]
    assert api.get(leaving, f"/projects/{name}").status_code == 404
    assert api.get(leaving, f"/jobs/{job['id']}").status_code == 404
    assert api.get(leaving, f"/jobs?project={name}").json()["total"] == 0
    entry = history(api, name)[0]
    assert (entry["actor"], entry["field"], entry["old"], entry["new"]) == (
        "alice",
        f"member:{leaving}",
        "member",
        "",
    )


@pytest.mark.parametrize(
    ("user", "member", "status", "field", "says"),
    [
        ("alice", "alice", 409, "user", ["is the PI"]),
        ("alice", "carol", 404, "user", ["not a member"]),
        ("bob", "alice", 403, "", []),
    ],
    ids=["the-pi", "not-a-member", "by-a-plain-member"],
)
def test_removing_members_refused(
    module_api: Api, user: str, member: str, status: int, field: str, says: list[str]
) -> None:
    api = module_api
    name = api.add_project(unique("kept"), pi="alice", members=("bob",))
    response = api.delete(user, f"/projects/{name}/members/{member}")
    if field:
        assert_refusal(response, status, field, *says)
    else:
        assert response.status_code == status, response.text
    assert len(api.get("admin", f"/projects/{name}").json()["members"]) == 2


def test_a_co_pi_cannot_demote_the_projects_pi(module_api: Api) -> None:
    """Bob, made a PI too, set alice (the project's PI) to a plain member and led the
    project alone; now 403 naming the user, nothing changed."""
    api = module_api
    name = api.add_project(unique("co-led"), pi="alice", members=("bob",))
    made = api.post("alice", f"/projects/{name}/members", json={"user": "bob", "role": "pi"})
    assert made.status_code == 200, made.text

    demoted = api.post("bob", f"/projects/{name}/members", json={"user": "alice", "role": "member"})

    assert_refusal(demoted, 403, "user", "'alice' is the PI", "only an administrator")
    project = api.get("admin", f"/projects/{name}").json()
    assert project["pi"] == "alice"
    assert {"user": "alice", "role": "pi"} in project["members"]


def test_an_admin_hands_the_pi_over_to_a_co_pi_then_may_remove_the_old_one(
    module_api: Api,
) -> None:
    api = module_api
    name = api.add_project(unique("handed"), pi="alice", members=("bob",))
    alone = api.post("admin", f"/projects/{name}/members", json={"user": "alice", "role": "member"})
    assert_refusal(alone, 409, "role", "the only PI", "make another member PI first")

    api.post("admin", f"/projects/{name}/members", json={"user": "bob", "role": "pi"})
    handed = api.post(
        "admin", f"/projects/{name}/members", json={"user": "alice", "role": "member"}
    )

    assert handed.status_code == 200, handed.text
    assert handed.json()["pi"] == "bob"
    assert api.delete("admin", f"/projects/{name}/members/alice").status_code == 200
    history = api.get("admin", f"/projects/{name}/history").json()
    assert any(c["field"] == "pi" and (c["old"], c["new"]) == ("alice", "bob") for c in history)


# --- quotas --------------------------------------------------------------------------------


def test_an_admin_sets_quotas_and_every_change_is_recorded(module_api: Api) -> None:
    api = module_api
    name = api.add_project(unique("quota"), pi="alice", quotas={})
    api.clock.advance(10)
    first = api.put("admin", f"/projects/{name}/quotas/H100", json={"guaranteed": 4, "limit": 12})
    assert first.status_code == 200, first.text
    assert first.json()["quotas"] == [
        {"flavor": "H100", "guaranteed": 4, "limit": 12, "credit_rate": 2.0, "in_use": 0}
    ]
    set_at = api.clock.now()
    api.clock.advance(10)
    second = api.put(
        "admin",
        f"/projects/{name}/quotas/H100",
        json={"guaranteed": 4, "limit": 16, "credit_rate": 1.5, "note": "ticket 42"},
    )
    assert second.status_code == 200, second.text
    assert second.json()["quotas"][0] == {
        "flavor": "H100",
        "guaranteed": 4,
        "limit": 16,
        "credit_rate": 1.5,
        "in_use": 0,
    }

    recorded = [
        (e["field"], e["old"], e["new"], e["actor"], at(e["at"])) for e in history(api, name)
    ]
    assert recorded == [
        ("credit_rate[H100]", "", "1.5", "admin", iso(api.clock.now())),
        ("limit[H100]", "12", "16", "admin", iso(api.clock.now())),
        ("limit[H100]", "0", "12", "admin", iso(set_at)),
        ("guaranteed[H100]", "0", "4", "admin", iso(set_at)),
    ]
    assert history(api, name)[0]["note"] == "ticket 42"
    # The new limit holds for submissions at once.
    assert api.submit("alice", project=name, gpus=16, flavor="H100")["gpus"] == 16


@pytest.mark.parametrize(
    ("flavor", "spec", "status", "field", "says"),
    [
        ("H100", {"guaranteed": 8, "limit": 4}, 422, "limit", ["at least the guarantee (8)"]),
        ("V100", {"guaranteed": 1, "limit": 2}, 422, "flavor", ["'V100'", "one of: A100, H100"]),
        ("H100", {"guaranteed": -1, "limit": 2}, 422, "guaranteed", ["greater than or equal"]),
        ("H100", {"limit": 2}, 422, "guaranteed", ["Field required"]),
        (
            "H100",
            {"guaranteed": 1, "limit": 2, "credit_rate": -1},
            422,
            "credit_rate",
            ["greater than or equal to 0"],
        ),
        (
            "H100",
            {"guaranteed": 1, "limit": 2, "credit_rate": "Infinity"},
            422,
            "credit_rate",
            ["finite number"],
        ),
        ("H100", {"guaranteed": 1, "limit": 2, "note": "\x00"}, 422, "note", ["NUL"]),
    ],
    ids=[
        "limit-below-guarantee",
        "flavor-unknown",
        "negative",
        "missing",
        "rate-negative",
        "rate-infinite",
        "note-nul",
    ],
)
def test_bad_quotas_are_refused_and_nothing_changes(
    module_api: Api, flavor: str, spec: dict[str, Any], status: int, field: str, says: list[str]
) -> None:
    api = module_api
    name = api.add_project(unique("quota"), pi="alice")
    quotas = api.get("admin", f"/projects/{name}").json()["quotas"]
    response = api.put("admin", f"/projects/{name}/quotas/{flavor}", json=spec)
    assert_refusal(response, status, field, *says)
    assert api.get("admin", f"/projects/{name}").json()["quotas"] == quotas
    assert history(api, name) == []


def test_quotas_of_a_project_that_does_not_exist(module_api: Api) -> None:
    response = module_api.put(
        "admin", "/projects/nope/quotas/H100", json={"guaranteed": 1, "limit": 1}
    )
    assert_refusal(response, 404, "project", "no project 'nope'")


# --- credits -------------------------------------------------------------------------------

CREDIT_CHANGES = [
    # id, the budget before, the change, the budget after (None: unlimited)
    ("grant", 1000.0, {"amount": 250}, 1250.0),
    ("take-back", 1000.0, {"amount": -400}, 600.0),
    ("grant-to-unlimited", None, {"amount": 100}, 100.0),
    ("set", 1000.0, {"set_to": 50}, 50.0),
    ("unlimited", 1000.0, {"unlimited": True}, None),
]


@pytest.mark.parametrize(
    ("before", "change", "after"),
    [pytest.param(*case[1:], id=case[0]) for case in CREDIT_CHANGES],
)
def test_an_admin_changes_credits_and_it_is_recorded(
    module_api: Api, before: float | None, change: dict[str, Any], after: float | None
) -> None:
    api = module_api
    name = api.add_project(unique("credits"), pi="alice", credits=before)
    response = api.post("admin", f"/projects/{name}/credits", json=change | {"note": "grant 7"})
    assert response.status_code == 200, response.text
    assert (response.json()["credits"], response.json()["credits_left"]) == (after, after)
    entry = history(api, name)[0]
    assert (entry["actor"], entry["field"], entry["note"]) == ("admin", "credits", "grant 7")
    assert at(entry["at"]) == iso(api.clock.now())


@pytest.mark.parametrize(
    ("user", "change", "status", "field", "says"),
    [
        ("admin", {}, 422, "amount", ["exactly one of amount, set_to or unlimited"]),
        ("admin", {"amount": 5, "set_to": 5}, 422, "amount", ["exactly one of"]),
        ("admin", {"amount": 5, "unlimited": True}, 422, "amount", ["exactly one of"]),
        ("admin", {"amount": -2000}, 422, "amount", ["below the"]),
        ("admin", {"set_to": -1}, 422, "set_to", ["greater than or equal to 0"]),
        ("alice", {"amount": 5}, 403, "", []),
        ("ops", {"amount": 5}, 403, "", []),
        ("admin", {"amount": "NaN"}, 422, "amount", ["finite number"]),
        ("admin", {"amount": "Infinity"}, 422, "amount", ["finite number"]),
        ("admin", {"amount": "-Infinity"}, 422, "amount", ["finite number"]),
        ("admin", {"set_to": "Infinity"}, 422, "set_to", ["finite number"]),
        ("admin", {"set_to": 1e13}, 422, "set_to", ["less than or equal"]),
        ("admin", {"amount": 1e12}, 422, "amount", ["over the most a budget may be"]),
        ("admin", {"amount": 5, "note": "x\x00"}, 422, "note", ["NUL"]),
    ],
    ids=[
        "none",
        "amount-and-set",
        "amount-and-unlimited",
        "below-used",
        "set-negative",
        "pi",
        "op",
        "amount-nan",
        "amount-infinite",
        "amount-minus-infinite",
        "set-infinite",
        "set-huge",
        "over-the-largest-budget",
        "note-nul",
    ],
)
def test_bad_credit_changes_are_refused(
    module_api: Api, user: str, change: dict[str, Any], status: int, field: str, says: list[str]
) -> None:
    api = module_api
    name = api.add_project(unique("credits"), pi="alice", credits=1000)
    response = api.post(user, f"/projects/{name}/credits", json=change)
    if field:
        assert_refusal(response, status, field, *says)
    else:
        assert response.status_code == status, response.text
    assert api.get("admin", f"/projects/{name}").json()["credits"] == 1000
    assert history(api, name) == []


# --- sectors -------------------------------------------------------------------------------


def test_sectors_are_listed_with_their_weights(module_api: Api) -> None:
    sectors = {s["name"]: s["weight"] for s in module_api.get("bob", "/sectors").json()}
    assert {"academia": 1.5, "industry": 1.0}.items() <= sectors.items()


def test_an_admin_adds_and_reweighs_a_sector_and_it_is_recorded(module_api: Api) -> None:
    api, name = module_api, unique("public")
    created = api.put("admin", f"/sectors/{name}", json={"weight": 2.5})
    assert created.status_code == 200, created.text
    api.clock.advance(5)
    changed = api.put("admin", f"/sectors/{name}", json={"weight": 0.5})
    assert changed.json() == {"name": name, "weight": 0.5}
    assert {"name": name, "weight": 0.5} in api.get("carol", "/sectors").json()
    recorded = [(c.actor, c.field, c.new, c.at) for c in changes(api, f"sector:{name}")]
    assert recorded == [
        ("admin", "weight", "2.5", api.clock.now() - 5),
        ("admin", "weight", "0.5", api.clock.now()),
    ]


@pytest.mark.parametrize(
    ("weight", "says"),
    [
        (0, "greater than 0"),
        (-1, "greater than 0"),
        ("heavy", "number"),
        ("Infinity", "finite number"),
        ("NaN", "finite number"),
    ],
    ids=["zero", "negative", "not-a-number", "infinite", "nan"],
)
def test_bad_sector_weights_are_refused(module_api: Api, weight: Any, says: str) -> None:
    api, name = module_api, unique("odd")
    assert_refusal(
        api.put("admin", f"/sectors/{name}", json={"weight": weight}), 422, "weight", says
    )
    assert name not in {s["name"] for s in api.get("admin", "/sectors").json()}
