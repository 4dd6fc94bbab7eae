"""Jobs over the API: submit (single, array, idempotent), refusals of bad input with nothing
written, SQL-looking text kept as text, listing with filters and pages, cancelling."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import Session

from tests.web.conftest import Api, assert_refusal, unique
from web.models import Job, ProjectState
from web.services import jobs as jobs_service

BASE = {"project": "p1", "entrypoint": "python train.py", "gpus": 1}
DROP = object()  # as a value in a case: leave the field out
JSON_HEADERS = {"Content-Type": "application/json"}


def body(**changes: Any) -> dict[str, Any]:
    merged = BASE | changes
    return {k: v for k, v in merged.items() if v is not DROP}


# --- submitting ----------------------------------------------------------------------------


def test_submit_one_job(module_api: Api) -> None:
    api = module_api
    response = api.post("alice", "/jobs", json=body(gpus=2, flavor="H100", name="train-1"))

    assert response.status_code == 201, response.text
    result = response.json()
    assert result["duplicate"] is False
    [job] = result["jobs"]
    assert job["state"] == "queued"
    assert (job["project"], job["user"], job["gpus"], job["flavor"]) == ("p1", "alice", 2, "H100")
    assert job["max_runtime_s"] == 3600  # the project's default (the pool file's)
    assert job["array_id"] is None and job["array_index"] == 0
    assert job["reason"]  # a waiting job always says why
    assert api.get("bob", f"/jobs/{job['id']}").json()["name"] == "train-1"


def test_submit_an_array(module_api: Api) -> None:
    api = module_api
    response = api.post("bob", "/jobs", json=body(count=3, time="2h", name="sweep"))

    assert response.status_code == 201, response.text
    jobs = response.json()["jobs"]
    assert [j["array_index"] for j in jobs] == [0, 1, 2]
    assert {j["array_id"] for j in jobs} == {jobs[0]["id"]}
    assert len({j["id"] for j in jobs}) == 3
    assert all(j["max_runtime_s"] == 7200 and j["state"] == "queued" for j in jobs)


def test_without_a_time_a_job_gets_the_pools_default_when_its_project_sets_none(
    module_api: Api,
) -> None:
    api = module_api
    project = api.add_project(unique("nodefault"), pi="alice")
    job = api.submit("alice", project=project)
    assert job["max_runtime_s"] == api.pool.settings.default_max_runtime_s


@pytest.mark.parametrize(
    ("how", "first_status"),
    [("body", 201), ("header", 201)],
    ids=["key-in-body", "key-in-Idempotency-Key-header"],
)
def test_a_resent_submission_returns_the_first_jobs(
    module_api: Api, how: str, first_status: int
) -> None:
    api, key = module_api, unique("key")

    def send(**spec: Any) -> Any:
        if how == "body":
            return api.post("alice", "/jobs", json=body(idempotency_key=key, **spec))
        return api.post("alice", "/jobs", json=body(**spec), headers={"Idempotency-Key": key})

    before = api.count(Job)
    first = send(count=2)
    again = send(count=2)
    changed = send(count=5, gpus=4)  # the key decides: the first jobs come back

    assert first.status_code == first_status, first.text
    assert first.json()["duplicate"] is False
    ids = [j["id"] for j in first.json()["jobs"]]
    for repeat in (again, changed):
        assert repeat.status_code == 200, repeat.text
        assert repeat.json()["duplicate"] is True
        assert [j["id"] for j in repeat.json()["jobs"]] == ids
    assert api.count(Job) == before + 2


def test_idempotency_keys_are_each_users_own(module_api: Api) -> None:
    api, key = module_api, unique("shared-key")
    alices = api.post("alice", "/jobs", json=body(idempotency_key=key))
    bobs = api.post("bob", "/jobs", json=body(idempotency_key=key))
    assert (alices.status_code, bobs.status_code) == (201, 201)
    assert alices.json()["jobs"][0]["id"] != bobs.json()["jobs"][0]["id"]


def test_the_same_key_sent_at_once_makes_one_job(module_api: Api) -> None:
    api, key = module_api, unique("racing-key")
    before = api.count(Job)

    def send(_: int) -> Any:
        return api.post("alice", "/jobs", json=body(), headers={"Idempotency-Key": key})

    with ThreadPoolExecutor(8) as threads:
        responses = list(threads.map(send, range(8)))

    assert sorted(r.status_code for r in responses) == [200] * 7 + [201]
    assert len({r.json()["jobs"][0]["id"] for r in responses}) == 1
    assert api.count(Job) == before + 1


def test_an_empty_idempotency_key_header_is_refused(module_api: Api) -> None:
    api = module_api
    before = api.count(Job)
    first = api.post("dave", "/jobs", json=body(), headers={"Idempotency-Key": ""})
    second = api.post("dave", "/jobs", json=body(gpus=2), headers={"Idempotency-Key": ""})
    for response in (first, second):
        assert_refusal(response, 422, "idempotency-key", "at least 1 character")
    assert api.count(Job) == before


def test_an_idempotency_key_header_over_200_characters_is_refused(module_api: Api) -> None:
    api = module_api
    before = api.count(Job)
    response = api.post("alice", "/jobs", json=body(), headers={"Idempotency-Key": "k" * 201})
    assert_refusal(response, 422, "idempotency-key", "at most 200 characters")
    assert api.count(Job) == before


# --- bad input: 4xx naming the field and what is allowed; nothing written -------------------

BAD_SPECS = [
    # id, who, the body, status, field, what the message must say
    ("gpus-zero", "alice", body(gpus=0), 422, "gpus", ["greater than or equal to 1"]),
    ("gpus-negative", "alice", body(gpus=-4), 422, "gpus", ["greater than or equal to 1"]),
    ("gpus-not-a-number", "alice", body(gpus="four"), 422, "gpus", ["integer"]),
    ("gpus-missing", "alice", body(gpus=DROP), 422, "gpus", ["Field required"]),
    ("gpus-over-the-limit", "alice", body(gpus=17), 422, "gpus", ["at most 16", "got 17"]),
    (
        "gpus-over-the-flavor",
        "alice",
        body(gpus=9, flavor="A100"),
        422,
        "gpus",
        ["at most 8 GPUs of A100"],
    ),
    (
        "flavor-unknown",
        "alice",
        body(flavor="V100"),
        422,
        "flavor",
        ["'V100'", "one of: *, A100, H100"],
    ),
    (
        "flavor-without-quota",
        "carol",
        body(project="p2", flavor="A100"),
        422,
        "flavor",
        ["no quota for 'A100'", "it has: H100"],
    ),
    ("project-unknown", "dave", body(project="nope"), 422, "project", ["'nope'", "(yours: p1"]),
    # Another project's name gets the answer an unknown one gets: its existence is not told.
    ("project-of-another", "dave", body(project="p2"), 422, "project", ["'p2'", "(yours: p1"]),
    ("project-missing", "alice", body(project=DROP), 422, "project", ["Field required"]),
    (
        "time-not-a-duration",
        "alice",
        body(time="soon"),
        422,
        "time",
        ["'soon'", "90s, 30m, 2h, 1d, 1:30:00 or 2-12:00:00"],
    ),
    ("time-compound", "alice", body(time="1h30m"), 422, "time", ["90s, 30m, 2h"]),
    ("time-negative", "alice", body(time="-5m"), 422, "time", ["90s, 30m, 2h"]),
    ("time-zero", "alice", body(time="0"), 422, "time", ["at least 1 s"]),
    ("time-zero-clock", "alice", body(time="00:00:00"), 422, "time", ["at least 1 s"]),
    ("time-too-long", "alice", body(time="1" * 33), 422, "time", ["at most 32 characters"]),
    ("time-unicode-digit", "alice", body(time="1:²"), 422, "time", ["90s, 30m, 2h"]),
    ("entrypoint-missing", "alice", body(entrypoint=DROP), 422, "entrypoint", ["Field required"]),
    ("entrypoint-empty", "alice", body(entrypoint=""), 422, "entrypoint", ["at least 1 char"]),
    ("entrypoint-blank", "alice", body(entrypoint="  \t"), 422, "entrypoint", ["not be blank"]),
    (
        "entrypoint-too-long",
        "alice",
        body(entrypoint="x" * 20_001),
        422,
        "entrypoint",
        ["at most 20000 characters"],
    ),
    ("nodes-zero", "alice", body(nodes=0), 422, "nodes", ["greater than or equal to 1"]),
    (
        "nodes-uneven",
        "alice",
        body(gpus=3, nodes=2),
        422,
        "nodes",
        ["3 GPUs do not split evenly over 2 nodes"],
    ),
    (
        "nodes-more-than-the-pool",
        "alice",
        body(gpus=16, nodes=4, flavor="H100"),
        422,
        "nodes",
        ["4 nodes with 4 GPUs"],
    ),
    ("count-zero", "alice", body(count=0), 422, "count", ["greater than or equal to 1"]),
    ("count-over-the-array-limit", "alice", body(count=51), 422, "count", ["at most 50 jobs"]),
    ("priority-too-high", "alice", body(priority=5000), 422, "priority", ["less than or equal"]),
    ("name-too-long", "alice", body(name="n" * 201), 422, "name", ["at most 200 characters"]),
    ("runtime-env-not-an-object", "alice", body(runtime_env="x"), 422, "runtime_env", ["dict"]),
    ("key-empty", "alice", body(idempotency_key=""), 422, "idempotency_key", ["at least 1"]),
    ("count-huge", "alice", body(count=10**12), 422, "count", ["less than or equal"]),
    ("time-over-a-year", "alice", body(time="367d"), 422, "time", ["at most 366 days"]),
    ("time-over-a-year-clock", "alice", body(time="8785:00:00"), 422, "time", ["at most 366"]),
    ("time-huge", "alice", body(time="9" * 32), 422, "time", ["at most 366 days"]),
    # PostgreSQL cannot store a NUL character: refused up front, never a failed commit.
    ("project-nul", "alice", body(project="p1\x00"), 422, "project", ["NUL"]),
    ("entrypoint-nul", "alice", body(entrypoint="python\x00x"), 422, "entrypoint", ["NUL"]),
    ("name-nul", "alice", body(name="\x00"), 422, "name", ["NUL"]),
    ("flavor-nul", "alice", body(flavor="H100\x00"), 422, "flavor", ["NUL"]),
    ("time-nul", "alice", body(time="2h\x00"), 422, "time", ["NUL"]),
    ("key-nul", "alice", body(idempotency_key="k\x00"), 422, "idempotency_key", ["NUL"]),
    (
        "runtime-env-value-nul",
        "alice",
        body(runtime_env={"env_vars": {"A": "x\x00y"}}),
        422,
        "runtime_env",
        ["NUL", "'env_vars.A'"],
    ),
    (
        "runtime-env-key-nul",
        "alice",
        body(runtime_env={"env_vars": {"A\x00": "x"}}),
        422,
        "runtime_env",
        ["NUL", "key"],
    ),
    (
        "runtime-env-list-nul",
        "alice",
        body(runtime_env={"pip": ["torch", "x\x00"]}),
        422,
        "runtime_env",
        ["NUL", "'pip[1]'"],
    ),
    # A lone surrogate is JSON ("\\ud800") but no UTF-8 text: stored, it made every list
    # showing the job answer 500, for good.
    ("project-surrogate", "alice", body(project="p1\ud800"), 422, "project", ["surrogate"]),
    ("entrypoint-surrogate", "alice", body(entrypoint="x\udfff"), 422, "entrypoint", ["U+DFFF"]),
    ("name-surrogate", "alice", body(name="\ud800"), 422, "name", ["lone surrogate"]),
    ("flavor-surrogate", "alice", body(flavor="\udc80"), 422, "flavor", ["surrogate"]),
    ("time-surrogate", "alice", body(time="2h\ud800"), 422, "time", ["surrogate"]),
    ("key-surrogate", "alice", body(idempotency_key="k\ud800"), 422, "idempotency_key", ["U+D800"]),
    (
        "runtime-env-value-surrogate",
        "alice",
        body(runtime_env={"env_vars": {"A": "\ud800"}}),
        422,
        "runtime_env",
        ["lone surrogate", "'env_vars.A'"],
    ),
    (
        "runtime-env-key-surrogate",
        "alice",
        body(runtime_env={"env_vars": {"A\udbff": "x"}}),
        422,
        "runtime_env",
        ["surrogate", "key"],
    ),
    (
        "runtime-env-deep-surrogate",
        "alice",
        body(runtime_env={"a": [{"b": ["ok", "\ud83d"]}]}),
        422,
        "runtime_env",
        ["surrogate", "'a[0].b[1]'"],
    ),
    (
        "runtime-env-too-deep",
        "alice",
        body(runtime_env={"a": json.loads("[" * 40 + "]" * 40)}),
        422,
        "runtime_env",
        ["at most 32 arrays and objects deep", "'a[0][0]"],
    ),
    # A misspelled field was dropped silently: the job got the default (1 GPU, not 4).
    ("misspelled-field", "alice", body(gpu=4), 422, "gpu", ["not a field this request takes"]),
    ("time-under-a-second", "alice", body(time="0.5s"), 422, "time", ["at least 1 s"]),
    # JSON's true is not the number 1.
    ("gpus-true", "alice", body(gpus=True), 422, "gpus", ["a number, not true or false"]),
    ("count-true", "alice", body(count=True), 422, "count", ["not true or false"]),
    ("nodes-true", "alice", body(nodes=True), 422, "nodes", ["not true or false"]),
    ("priority-false", "alice", body(priority=False), 422, "priority", ["not true or false"]),
    ("admin-not-a-member", "admin", body(), 403, "project", ["only members of 'p1'"]),
    ("operator-not-a-member", "ops", body(), 403, "project", ["only members of 'p1'"]),
]


@pytest.mark.parametrize(
    ("case", "user", "spec", "status", "field", "says"),
    [pytest.param(*case, id=case[0]) for case in BAD_SPECS],
)
def test_a_bad_submission_is_refused_naming_the_field_and_nothing_is_written(
    module_api: Api,
    case: str,
    user: str,
    spec: dict[str, Any],
    status: int,
    field: str,
    says: list[str],
) -> None:
    api = module_api
    before = api.count(Job)
    # Sent as JSON escapes (ASCII), so lone surrogates go as "\\ud800" as an attacker's would.
    response = api.post(user, "/jobs", content=json.dumps(spec), headers=JSON_HEADERS)
    assert_refusal(response, status, field, *says)
    assert api.count(Job) == before
    assert api.get("alice", "/jobs").status_code == 200


@pytest.mark.parametrize("state", [ProjectState.REQUESTED, ProjectState.CLOSED])
def test_only_active_projects_take_jobs(module_api: Api, state: ProjectState) -> None:
    api = module_api
    project = api.add_project(unique(state.value), pi="alice", state=state)
    before = api.count(Job)
    response = api.post("alice", "/jobs", json=body(project=project, count=3))
    assert_refusal(response, 409, "project", f"is {state.value}", "active projects only")
    assert api.count(Job) == before


@pytest.mark.parametrize(
    ("value", "field", "says"),
    [
        ('{"env_vars": {"X": NaN}}', "runtime_env", "'env_vars.X' is nan"),
        ('{"a": [1, Infinity]}', "runtime_env", "'a[1]' is inf"),
        ('{"a": {"b": -Infinity}}', "runtime_env", "'a.b' is -inf"),
    ],
    ids=["nan", "infinity-in-a-list", "minus-infinity"],
)
def test_numbers_that_are_not_finite_are_refused(
    module_api: Api, value: str, field: str, says: str
) -> None:
    """JSON parsers take NaN and Infinity; the JSON a database stores cannot hold them."""
    api = module_api
    before = api.count(Job)
    raw = f'{{"project": "p1", "entrypoint": "x", "gpus": 1, "runtime_env": {value}}}'
    response = api.post(
        "alice", "/jobs", content=raw.encode(), headers={"Content-Type": "application/json"}
    )
    assert_refusal(response, 422, field, "must be finite", says)
    assert api.count(Job) == before


def test_a_year_is_the_longest_time(module_api: Api) -> None:
    for time in ("366d", "366-00:00:00", "527040"):
        assert module_api.submit("alice", time=time)["max_runtime_s"] == 366 * 86400


def test_a_body_that_is_not_json_is_refused(module_api: Api) -> None:
    api = module_api
    before = api.count(Job)
    response = api.post(
        "alice", "/jobs", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert "JSON" in response.json()["detail"]
    assert api.count(Job) == before


def test_a_body_over_the_size_limit_gets_413(module_api: Api) -> None:
    api = module_api
    limit = api.pool.settings.max_request_bytes
    before = api.count(Job)
    response = api.post("alice", "/jobs", json=body(runtime_env={"blob": "x" * limit}))
    assert response.status_code == 413, response.text
    assert str(limit) in response.json()["detail"]
    assert api.count(Job) == before


def test_a_streamed_body_over_the_size_limit_gets_413(module_api: Api) -> None:
    api = module_api
    limit = api.pool.settings.max_request_bytes
    before = api.count(Job)
    payload = f'{{"project": "p1", "gpus": 1, "entrypoint": "{"x" * limit}"}}'.encode()

    def chunks() -> Any:  # no Content-Length: sent chunked
        yield from (payload[i : i + 4096] for i in range(0, len(payload), 4096))

    response = api.post(
        "alice", "/jobs", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413, response.text
    assert api.count(Job) == before


SQL_TEXTS = {
    "entrypoint": "python -c 'print(1)'; DROP TABLE jobs; --",
    "name": "x'); DELETE FROM jobs WHERE ('1'='1",
}


def test_sql_looking_text_is_stored_as_text(module_api: Api) -> None:
    api = module_api
    env = {"env_vars": {"Q": "' OR 1=1 --", "R": 'a"; TRUNCATE users; --'}}
    job = api.submit("alice", runtime_env=env, **SQL_TEXTS)

    stored = api.job_row(job["id"])
    assert (stored.entrypoint, stored.name) == (SQL_TEXTS["entrypoint"], SQL_TEXTS["name"])
    assert stored.runtime_env == env
    read = api.get("alice", f"/jobs/{job['id']}").json()
    assert (read["entrypoint"], read["name"], read["runtime_env"]) == (
        SQL_TEXTS["entrypoint"],
        SQL_TEXTS["name"],
        env,
    )
    assert api.count(Job) > 1  # the table is still there, rows and all
    for query in ("?user=' OR '1'='1", "?project=p1' --", "?flavor=*' OR 1=1 --"):
        page = api.get("admin", "/jobs" + query)
        assert page.status_code == 200, page.text
        assert page.json()["total"] == 0, query


# --- listing -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def listed(module_api: Api) -> tuple[str, list[int]]:
    """A project of its own with 5 jobs: alice's three on H100 (the first cancelled), bob's
    two on A100. Its name, and the jobs' ids in order."""
    api = module_api
    project = api.add_project(unique("listed"), pi="alice", members=("bob",))
    ids = [api.submit("alice", project=project, flavor="H100")["id"] for _ in range(3)]
    ids += [api.submit("bob", project=project, flavor="A100")["id"] for _ in range(2)]
    assert api.post("alice", f"/jobs/{ids[0]}/cancel").status_code == 200
    return project, ids


@pytest.mark.parametrize(
    ("query", "picks"),
    [
        ("", [0, 1, 2, 3, 4]),
        ("&state=queued", [1, 2, 3, 4]),
        ("&state=cancelled", [0]),
        ("&state=queued&state=cancelled", [0, 1, 2, 3, 4]),
        ("&state=running", []),
        ("&user=bob", [3, 4]),
        ("&flavor=A100", [3, 4]),
        ("&flavor=H100&user=alice&state=queued", [1, 2]),
    ],
    ids=[
        "project",
        "state",
        "state-cancelled",
        "two-states",
        "state-none",
        "user",
        "flavor",
        "all-filters",
    ],
)
@pytest.mark.parametrize("asker", ["admin", "ops", "bob"])
def test_list_filters(
    module_api: Api, listed: tuple[str, list[int]], query: str, picks: list[int], asker: str
) -> None:
    project, ids = listed
    page = module_api.get(asker, f"/jobs?project={project}{query}")
    assert page.status_code == 200, page.text
    assert [j["id"] for j in page.json()["items"]] == [ids[i] for i in picks]
    assert page.json()["total"] == len(picks)


def test_list_pages(module_api: Api, listed: tuple[str, list[int]]) -> None:
    api, (project, ids) = module_api, listed
    seen = []
    for offset in (0, 2, 4):
        page = api.get("alice", f"/jobs?project={project}&limit=2&offset={offset}").json()
        assert (page["total"], page["limit"], page["offset"]) == (5, 2, offset)
        seen += [j["id"] for j in page["items"]]
    assert seen == ids
    past_the_end = api.get("alice", f"/jobs?project={project}&limit=2&offset=10").json()
    assert (past_the_end["items"], past_the_end["total"]) == ([], 5)


@pytest.mark.parametrize(
    ("query", "field", "says"),
    [
        ("limit=0", "limit", "greater than or equal to 1"),
        ("limit=1001", "limit", "less than or equal to 1000"),
        ("offset=-1", "offset", "greater than or equal to 0"),
        ("limit=ten", "limit", "integer"),
        ("state=bogus", "state.0", "'queued', 'admitted', 'running'"),
    ],
    ids=["limit-zero", "limit-too-big", "offset-negative", "limit-not-a-number", "state-unknown"],
)
def test_bad_list_queries_are_refused_naming_the_parameter(
    module_api: Api, query: str, field: str, says: str
) -> None:
    response = module_api.get("alice", f"/jobs?{query}")
    assert_refusal(response, 422, field, says)


# --- cancelling ----------------------------------------------------------------------------


def test_cancel_a_queued_job(module_api: Api) -> None:
    api = module_api
    job = api.submit("bob")
    response = api.post("bob", f"/jobs/{job['id']}/cancel")

    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["state"] == "cancelled"
    assert cancelled["ended_at"] is not None
    assert "bob" in cancelled["outcome"]
    assert api.get("alice", f"/jobs/{job['id']}").json()["state"] == "cancelled"


@pytest.mark.parametrize(
    ("owner", "canceller", "status"),
    [
        ("bob", "dave", 403),  # a member cannot cancel another member's job
        ("dave", "bob", 403),
        ("bob", "alice", 200),  # the PI can
        ("alice", "admin", 200),  # an admin can
        ("bob", "ops", 403),  # an operator reads, does not cancel
        ("bob", "carol", 404),  # an outsider is told no such job
    ],
    ids=[
        "member-other-member",
        "member-other-member-2",
        "pi",
        "admin",
        "operator",
        "outsider",
    ],
)
def test_who_may_cancel(module_api: Api, owner: str, canceller: str, status: int) -> None:
    api = module_api
    job = api.submit(owner)
    response = api.post(canceller, f"/jobs/{job['id']}/cancel")

    assert response.status_code == status, response.text
    expected = "cancelled" if status == 200 else "queued"
    assert api.job_row(job["id"]).state == expected
    if status == 403:
        assert owner in response.json()["detail"]


@pytest.mark.parametrize("state", ["cancelled", "succeeded", "failed", "timeout", "lost"])
def test_cancelling_an_ended_job_is_a_conflict(module_api: Api, state: str) -> None:
    api = module_api
    job = api.submit("alice")
    api.set_job(job["id"], state=state, ended_at=api.clock.now())
    response = api.post("alice", f"/jobs/{job['id']}/cancel")
    assert_refusal(response, 409, "job", f"already ended ({state})")
    assert api.job_row(job["id"]).state == state


@pytest.mark.parametrize("state", ["admitted", "running"])
def test_cancelling_an_admitted_or_running_job_asks_the_loop_to_stop_it(
    module_api: Api, state: str
) -> None:
    api = module_api
    job = api.submit("alice")
    api.set_job(job["id"], state=state, admitted_at=api.clock.now())
    asked_at = api.clock.now()

    response = api.post("alice", f"/jobs/{job['id']}/cancel")

    assert response.status_code == 200, response.text
    assert response.json()["state"] == state  # until the loop has stopped it: it holds GPUs
    row = api.job_row(job["id"])
    assert (row.state, row.ended_at) == (state, None)
    assert row.cancel_requested_at == asked_at
    assert "cancel requested by alice" in row.outcome

    api.clock.advance(5)
    again = api.post("admin", f"/jobs/{job['id']}/cancel")  # asked already: nothing changes
    assert again.status_code == 200, again.text
    assert again.json()["state"] == state
    row = api.job_row(job["id"])
    assert row.cancel_requested_at == asked_at and "by alice" in row.outcome
    api.clock.advance(-5)


# What the scheduling loop may do to a job between cancel's read of it (queued) and its
# write: cancel decides by what the row is when it writes, not by what it read.
CANCEL_RACES = [
    # id, the job's state when cancel writes, status, state after, cancel requested
    ("admitted-meanwhile", "admitted", 200, "admitted", True),
    ("running-meanwhile", "running", 200, "running", True),
    ("ended-meanwhile", "succeeded", 409, "succeeded", False),
    ("cancelled-meanwhile", "cancelled", 409, "cancelled", False),
    ("still-queued", "queued", 200, "cancelled", False),
]


@pytest.mark.parametrize(
    ("meanwhile", "status", "after", "requested"),
    [pytest.param(*case[1:], id=case[0]) for case in CANCEL_RACES],
)
def test_a_cancel_racing_the_loop_never_cancels_a_job_that_holds_gpus(
    module_api: Api,
    monkeypatch: pytest.MonkeyPatch,
    meanwhile: str,
    status: int,
    after: str,
    requested: bool,
) -> None:
    api = module_api
    job_id = api.submit("alice")["id"]
    read = jobs_service.get_job
    postgresql = api.engine.dialect.name == "postgresql"

    def read_then_the_loop_moves(session: Session, asker: Any, wanted: int) -> Job:
        job = read(session, asker, wanted)
        # By the table, not the entity: the job cancel read keeps what it read.
        jobs = Job.__table__  # type: ignore[attr-defined]
        change = update(jobs).where(jobs.c.id == wanted).values(state=meanwhile)
        if postgresql:
            with api.engine.begin() as loop:  # another connection, committed at once
                loop.execute(change)
        else:  # SQLite: this transaction holds the one write lock; the change goes through it
            session.execute(change)
        return job

    monkeypatch.setattr(jobs_service, "get_job", read_then_the_loop_moves)
    response = api.post("alice", f"/jobs/{job_id}/cancel")

    assert response.status_code == status, response.text
    row = api.job_row(job_id)
    if status == 409 and not postgresql:
        after = "queued"  # the refusal rolled back the simulated move with its transaction
    assert row.state == after
    assert (row.cancel_requested_at is not None) == requested
    if status == 200:
        assert response.json()["state"] == after
    else:
        assert_refusal(response, 409, "job", f"already ended ({meanwhile})")


def test_cancelling_a_job_that_does_not_exist(module_api: Api) -> None:
    assert_refusal(module_api.post("admin", "/jobs/999999/cancel"), 404, "job", "no job 999999")


@pytest.mark.parametrize(
    ("method", "path", "status", "field"),
    [
        ("GET", "/jobs/1099511627776", 422, "job_id"),
        ("POST", "/jobs/1099511627776/cancel", 422, "job_id"),
        ("GET", "/jobs/2147483648", 422, "job_id"),
        ("GET", "/jobs/0", 422, "job_id"),
        ("GET", "/jobs/-1", 422, "job_id"),
        ("GET", "/jobs/2147483647", 404, "job"),
        ("POST", "/jobs/2147483647/cancel", 404, "job"),
        ("GET", "/jobs?offset=1099511627776", 422, "offset"),
    ],
    ids=[
        "get-over-32-bits",
        "cancel-over-32-bits",
        "get-just-over",
        "get-zero",
        "get-negative",
        "get-largest",
        "cancel-largest",
        "offset-over-32-bits",
    ],
)
def test_ids_out_of_range_are_refused_not_sent_to_the_database(
    module_api: Api, method: str, path: str, status: int, field: str
) -> None:
    assert_refusal(module_api.request("admin", method, path), status, field)


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/jobs?user=%00", "user"),
        ("/jobs?project=p1%00", "project"),
        ("/jobs?flavor=%00", "flavor"),
        ("/projects/p1%00", "name"),
        ("/projects/p1%00/history", "name"),
        ("/users/%00", "name"),
        ("/tokens?owner=%00", "owner"),
        ("/projects?state=active&x=%00", "x"),
    ],
    ids=["jobs-user", "jobs-project", "jobs-flavor", "project", "history", "user", "owner", "any"],
)
def test_a_nul_in_a_path_or_query_is_refused_naming_it(
    module_api: Api, path: str, field: str
) -> None:
    assert_refusal(module_api.get("admin", path), 422, field, "NUL")


# --- resending after the pool changed ------------------------------------------------------


def close(api: Api, project: str) -> None:
    assert api.post("admin", f"/projects/{project}/close", json={}).status_code == 200


def lower_the_quota(api: Api, project: str) -> None:
    quota = {"guaranteed": 0, "limit": 1}
    assert api.put("admin", f"/projects/{project}/quotas/H100", json=quota).status_code == 200


def remove_bob(api: Api, project: str) -> None:
    assert api.delete("alice", f"/projects/{project}/members/bob").status_code == 200


@pytest.mark.parametrize(
    ("change", "status"),
    [(close, 200), (lower_the_quota, 200), (remove_bob, 422)],
    ids=["project-closed", "quota-lowered", "no-longer-a-member"],
)
def test_a_resent_submission_gets_its_first_jobs_though_it_would_be_refused_now(
    module_api: Api, change: Any, status: int
) -> None:
    """A client that got no answer resends with its key: the jobs it made are its answer,
    whatever changed since; unless the sender may no longer see them."""
    api, key = module_api, unique("resent")
    project = api.add_project(unique("changing"), pi="alice", members=("bob",))
    spec = body(project=project, gpus=4, flavor="H100", count=2, idempotency_key=key)
    first = api.post("bob", "/jobs", json=spec)
    assert first.status_code == 201, first.text

    change(api, project)
    again = api.post("bob", "/jobs", json=spec)

    assert again.status_code == status, again.text
    if status == 200:
        assert again.json()["duplicate"] is True
        assert [j["id"] for j in again.json()["jobs"]] == [j["id"] for j in first.json()["jobs"]]
    else:
        assert_refusal(again, status, "project", "no project")
    fresh_key = api.post("bob", "/jobs", json=spec | {"idempotency_key": unique("new")})
    assert fresh_key.status_code in (409, 422), fresh_key.text  # a new submission is refused


def test_a_removed_member_gets_no_job_back_by_resending_its_key_elsewhere(
    module_api: Api,
) -> None:
    """Bob's key made jobs in a project he has left: sent again with a submission he may
    make (to p1), it answered with the other project's jobs; now a 409 on the key and
    nothing stored."""
    api, key = module_api, unique("left")
    project = api.add_project(unique("left"), pi="alice", members=("bob",))
    first = api.post("bob", "/jobs", json=body(project=project, idempotency_key=key))
    assert first.status_code == 201, first.text
    remove_bob(api, project)
    before = api.count(Job)

    for how in ("body", "header"):
        again = (
            api.post("bob", "/jobs", json=body(idempotency_key=key))
            if how == "body"
            else api.post("bob", "/jobs", json=body(), headers={"Idempotency-Key": key})
        )
        detail = assert_refusal(again, 409, "idempotency_key", "no longer a member")
        assert project not in detail
        assert api.count(Job) == before


# --- start estimates and how sure they are -------------------------------------------------


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        # narrow, and nothing it waits on has outrun its history
        (
            {"est_start": 7200, "est_start_earliest": 6600, "est_start_latest": 7800},
            ("likely", "likely: from the run times of similar jobs", 6600, 7800, 0),
        ),
        # waits on jobs that have run past what their history knows
        (
            {
                "est_start": 7200,
                "est_start_earliest": 7000,
                "est_start_latest": 7300,
                "est_unbounded": 3,
            },
            (
                "rough",
                "rough: depends on 3 jobs running past what their history knows",
                7000,
                7300,
                3,
            ),
        ),
        # a range wider than an hour and than half the wait
        (
            {"est_start": 3600, "est_start_earliest": 1800, "est_start_latest": 9000},
            ("rough", "rough: the jobs it waits on vary widely in run time", 1800, 9000, 0),
        ),
        # no estimate: no confidence; a range that is no time a date can hold: none either
        ({"est_start": None}, ("", "", None, None, None)),
        (
            {"est_start": 7200, "est_start_earliest": 1e308, "est_start_latest": 7800},
            ("", "", None, None, None),
        ),
    ],
)
def test_a_waiting_jobs_estimate_says_how_sure_it_is(
    module_api: Api, row: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    job_id = int(module_api.submit("alice")["id"])
    with Session(module_api.engine) as session:
        submitted = session.get_one(Job, job_id).submitted_at
    stored = {k: submitted + v if k.startswith("est_start") and v else v for k, v in row.items()}
    module_api.set_job(job_id, **stored)
    got = module_api.get("alice", f"/jobs/{job_id}").json()
    confidence, note, earliest, latest, unbounded = expected
    assert (got["est_confidence"], got["est_note"], got["est_unbounded"]) == (
        confidence,
        note,
        unbounded,
    )
    for key, offset in (("est_start_earliest", earliest), ("est_start_latest", latest)):
        if offset is None:
            assert got[key] is None
        else:
            assert datetime.fromisoformat(got[key]).timestamp() == submitted + offset
    listed = module_api.get("alice", "/jobs", params={"state": "queued"}).json()["items"]
    assert next(j for j in listed if j["id"] == job_id)["est_confidence"] == confidence


def test_a_running_job_carries_no_estimate_confidence(module_api: Api) -> None:
    job_id = int(module_api.submit("alice")["id"])
    module_api.set_job(
        job_id,
        state="running",
        attempt=1,
        est_start=1e9,
        est_start_earliest=1e9,
        est_start_latest=1e9 + 60,
    )
    got = module_api.get("alice", f"/jobs/{job_id}").json()
    assert (got["est_confidence"], got["est_start_earliest"], got["est_start_latest"]) == (
        "",
        None,
        None,
    )
