"""The researcher's job pages through the portal (SQLite and PostgreSQL): the jobs list with
why each waiting job waits, submitting (validated as the API does, refused in place in the
page's language, one job per form however often it is sent), a job's page with its usage,
log and state for the page's script, cancelling, and nothing of another project's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from tests.web.conftest import START, Api
from tests.web.portal.conftest import Portal, PortalClient, text_of
from web.db import read_session, write_session
from web.models import Allocation, Job, JobUsage
from web.portal.i18n import Formats

SUBMIT = {
    "project": "p1",
    "entrypoint": "python train.py --epochs 3",
    "gpus": "2",
    "flavor": "H100",
    "time": "2h",
    "nodes": "",
    "name": "resnet",
    "working_dir": "/data/alice/resnet",
    "env_vars": "SEED=7\nMODE=fast",
    "runtime_env": '{"pip": ["torch"]}',
}


def when(moment: float, language: str = "en") -> str:
    return Formats(language, "Asia/Seoul").when(moment)


def jobs_in(api: Api) -> list[Job]:
    with read_session(api.engine) as session:
        rows = session.exec(select(Job).order_by(Job.id)).all()  # type: ignore[arg-type]
        return [Job.model_validate(j.model_dump()) for j in rows]


def submit_page(client: PortalClient) -> str:
    """Open the form (as a browser would) and return its idempotency key."""
    page = client.get("/submit")
    assert page.status_code == 200, page.text
    marker = 'name="idempotency_key" value="'
    start = page.text.index(marker) + len(marker)
    return page.text[start : page.text.index('"', start)]


def log_file(api: Api, job_id: int, attempt: int) -> Path:
    logs = api.pool.settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return logs / f"{job_id}-{attempt}.log"


# --- the pages -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/", "My projects"),
        ("/jobs", "My jobs"),
        ("/submit", "Submit a job"),
        ("/statements", "Usage statements"),
        ("/verify", "Verify a statement"),
        ("/requests/new", "Request a project"),
        ("/projects/p1", "Principal investigator alice"),
    ],
)
def test_each_page_renders_for_alice(portal: Portal, path: str, says: str) -> None:
    page = portal.as_user("alice").get(path)
    assert page.status_code == 200, page.text
    assert says in text_of(page)


def test_the_pages_need_a_signed_in_user(portal: Portal) -> None:
    job = portal.api.submit("alice")
    visitor = portal.anonymous()
    for path in ("/jobs", "/submit", f"/jobs/{job['id']}", "/statements", "/requests/new"):
        answer = visitor.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/signin?next=")


# --- the jobs list -------------------------------------------------------------------------


def test_a_waiting_job_shows_why_and_when_it_should_start(portal: Portal) -> None:
    job = portal.api.submit("alice")
    start = START + 5400
    portal.api.set_job(
        job["id"], reason_code="capacity", reason="needs 1 H100; 0 free", est_start=start
    )
    text = text_of(portal.as_user("alice").get("/jobs"))
    assert "Waiting for free GPUs" in text
    assert "needs 1 H100; 0 free" in text
    assert f"Estimated start: {when(start)}" in text
    korean = text_of(portal.as_user("alice", **{"Accept-Language": "ko"}).get("/jobs"))
    assert "빈 GPU를 기다리는 중" in korean  # the headline, translated
    assert "Waiting for free GPUs" not in korean
    assert f"예상 시작: {when(start, 'ko')}" in korean
    assert "needs 1 H100; 0 free" in korean  # the loop's own sentence, as it said it


def test_a_running_job_shows_since_when_where_and_that_it_is_idle(portal: Portal) -> None:
    api = portal.api
    api.add_node("h-test")
    job_id = int(api.submit("alice", gpus=2)["id"])
    api.set_job(job_id, state="running", attempt=1, started_at=START + 60, admitted_at=START)
    with write_session(api.engine) as session:
        session.add(
            Allocation(job_id=job_id, attempt=1, node="h-test", flavor="H100", gpus=2, start=START)
        )
        session.add(JobUsage(job_id=job_id, attempt=1, idle_since=START - 3600))
    api.changed()
    row = text_of(portal.as_user("alice").get("/jobs"))
    assert f"Since {when(START + 60)}" in row
    assert "On h-test" in row
    assert f"Idle since {when(START - 3600)}" in row


def test_researchers_see_their_projects_jobs_and_admins_all(portal: Portal) -> None:
    mine = portal.api.submit("alice", name="alices-job")
    theirs = portal.api.submit("carol", project="p2", name="carols-job")
    alice = text_of(portal.as_user("alice").get("/jobs"))
    assert "alices-job" in alice and "carols-job" not in alice
    admin = portal.as_user("admin").get("/jobs")
    assert "All jobs" in text_of(admin)
    assert f'href="/jobs/{mine["id"]}"' in admin.text
    assert f'href="/jobs/{theirs["id"]}"' in admin.text


@pytest.mark.parametrize(
    ("query", "shown", "hidden"),
    [
        ("state=running", ["running-one"], ["queued-one", "bobs-one"]),
        ("state=queued", ["queued-one", "bobs-one"], ["running-one"]),
        ("flavor=A100", ["bobs-one"], ["queued-one", "running-one"]),
        ("mine=1", ["queued-one", "running-one"], ["bobs-one"]),
        ("project=p1&state=queued&flavor=H100", ["queued-one"], ["bobs-one", "running-one"]),
    ],
)
def test_the_jobs_list_filters(
    portal: Portal, query: str, shown: list[str], hidden: list[str]
) -> None:
    portal.api.submit("alice", name="queued-one", flavor="H100")
    running = portal.api.submit("alice", name="running-one", flavor="H100")
    portal.api.set_job(running["id"], state="running", attempt=1)
    portal.api.submit("bob", name="bobs-one", flavor="A100")
    text = text_of(portal.as_user("alice").get(f"/jobs?{query}"))
    for name in shown:
        assert name in text, (query, name)
    for name in hidden:
        assert name not in text, (query, name)


@pytest.mark.parametrize(
    ("query", "field"),
    [("project=p2", "project"), ("state=sleeping", "state"), ("flavor=Z100", "flavor")],
)
def test_a_filter_naming_nothing_known_is_an_error_on_its_field(
    portal: Portal, query: str, field: str
) -> None:
    portal.api.submit("alice", name="still-listed")
    page = portal.as_user("alice").get(f"/jobs?{query}")
    assert page.status_code == 400
    assert f'id="e-{field}"' in page.text
    assert "still-listed" in text_of(page)  # the other filters (none) still apply


def test_the_jobs_list_is_paginated_newest_first(portal: Portal) -> None:
    for _ in range(2):
        portal.api.submit("alice", count=30)
    alice = portal.as_user("alice")
    first = alice.get("/jobs")
    assert first.text.count('<tr id="job-') == 50
    assert 'href="/jobs/60"' in first.text and 'href="/jobs/10"' not in first.text
    assert "1\u201350 of 60" in text_of(first)  # an en dash
    assert 'href="/jobs?offset=50"' in first.text
    second = alice.get("/jobs?offset=50")
    assert second.text.count('<tr id="job-') == 10
    assert 'href="/jobs/1"' in second.text


# --- submitting ----------------------------------------------------------------------------


def test_a_submitted_form_queues_one_job_even_when_sent_twice(portal: Portal) -> None:
    alice = portal.as_user("alice")
    key = submit_page(alice)
    answer = alice.post_form("/submit", SUBMIT | {"idempotency_key": key})
    assert answer.status_code == 303, text_of(answer)
    [job] = jobs_in(portal.api)
    assert answer.headers["location"] == f"/jobs/{job.id}"
    assert (job.project, job.user, job.gpus, job.flavor, job.name) == (
        "p1",
        "alice",
        2,
        "H100",
        "resnet",
    )
    assert job.entrypoint == "python train.py --epochs 3"
    assert job.max_runtime_s == 7200
    assert job.runtime_env == {
        "pip": ["torch"],
        "working_dir": "/data/alice/resnet",
        "env_vars": {"SEED": "7", "MODE": "fast"},
    }
    shown = alice.get(answer.headers["location"])
    assert f"Job {job.id} is queued." in text_of(shown)
    again = alice.post_form("/submit", SUBMIT | {"idempotency_key": key})
    assert again.status_code == 303
    assert again.headers["location"] == f"/jobs/{job.id}"
    assert len(jobs_in(portal.api)) == 1
    assert "This form was sent before" in text_of(alice.get(again.headers["location"]))


def test_each_form_makes_its_own_job(portal: Portal) -> None:
    alice = portal.as_user("alice")
    for _ in range(2):
        key = submit_page(alice)
        assert alice.post_form("/submit", SUBMIT | {"idempotency_key": key}).status_code == 303
    assert len(jobs_in(portal.api)) == 2


def test_the_least_a_job_needs_takes_the_defaults(portal: Portal) -> None:
    alice = portal.as_user("alice")
    key = submit_page(alice)
    minimal = {"project": "p1", "entrypoint": "hostname", "gpus": "1", "flavor": "*"}
    answer = alice.post_form("/submit", minimal | {"idempotency_key": key})
    assert answer.status_code == 303, text_of(answer)
    [job] = jobs_in(portal.api)
    assert (job.flavor, job.runtime_env, job.nodes, job.name) == ("*", {}, None, "")
    assert job.max_runtime_s == 3600  # the pool's default (the test pool's TOML)


BAD_SUBMISSIONS: list[tuple[str, dict[str, str], str, str, str]] = [
    # (case, changed fields, field at fault, English, Korean)
    ("no command", {"entrypoint": ""}, "entrypoint", "Required.", "필수 항목입니다."),
    ("blank command", {"entrypoint": "   "}, "entrypoint", "Required.", "필수 항목입니다."),
    ("no GPUs", {"gpus": "0"}, "gpus", "Must be at least 1.", "1 이상이어야 합니다."),
    ("GPUs in words", {"gpus": "abc"}, "gpus", "Must be a whole number.", "정수여야 합니다."),
    (
        "too many GPUs",
        {"gpus": "500"},
        "gpus",
        "Not accepted: at most 16 GPUs of H100",
        "받아들일 수 없습니다: at most 16 GPUs",
    ),
    (
        "unknown flavor",
        {"flavor": "Z100"},
        "flavor",
        "Not accepted: unknown flavor 'Z100'",
        "받아들일 수 없습니다: unknown flavor",
    ),
    (
        "bad time",
        {"time": "2x"},
        "time",
        "Not accepted: '2x' is not a duration",
        "받아들일 수 없습니다: '2x' is not a duration",
    ),
    (
        "bad JSON",
        {"runtime_env": '{"pip": ["torch"}'},
        "runtime_env",
        "Not valid JSON: Expecting ',' delimiter (line 1, column 17).",
        "올바른 JSON이 아닙니다: Expecting ',' delimiter (1행 17열).",
    ),
    (
        "JSON not an object",
        {"runtime_env": '["torch"]'},
        "runtime_env",
        "Must be a JSON object in braces",
        "중괄호로 된 JSON 객체여야 합니다.",
    ),
    (
        "JSON nested past reading",  # Python's parser gives up (RecursionError): it was a 500
        {"runtime_env": '{"a": ' + "[" * 1200 + "]" * 1200 + "}"},
        "runtime_env",
        "Nested too deep: at most 32 arrays and objects within one another.",
        "너무 깊이 중첩되었습니다: 배열과 객체는 32단계까지만",
    ),
    (
        "JSON nested deeper than a runtime environment",
        {"runtime_env": '{"a": ' + "[" * 40 + "]" * 40 + "}"},
        "runtime_env",
        "must nest at most 32 arrays and objects deep",
        "must nest at most 32 arrays and objects deep",
    ),
    (
        "two working directories",
        {"runtime_env": '{"working_dir": "/elsewhere"}'},
        "working_dir",
        "The runtime environment sets another working_dir",
        "런타임 환경에 다른 working_dir가 있습니다.",
    ),
    (
        "bad variable",
        {"env_vars": "SEED=7\nnot a variable"},
        "env_vars",
        "Line 2 is not NAME=value",
        "2번째 줄이 NAME=value 형식이 아닙니다",
    ),
    (
        "another project",
        {"project": "p2"},
        "project",
        "Not accepted: no project 'p2' of yours",
        "받아들일 수 없습니다: no project 'p2' of yours",
    ),
    (
        "nodes that do not divide",
        {"gpus": "3", "nodes": "2"},
        "nodes",
        "Not accepted: 3 GPUs do not split evenly over 2 nodes",
        "받아들일 수 없습니다: 3 GPUs",
    ),
]


@pytest.mark.parametrize(
    ("change", "field", "english", "korean"),
    [case[1:] for case in BAD_SUBMISSIONS],
    ids=[case[0] for case in BAD_SUBMISSIONS],
)
def test_a_bad_submission_is_refused_in_place_keeping_what_was_typed(
    portal: Portal, change: dict[str, str], field: str, english: str, korean: str
) -> None:
    for language, says in (("en", english), ("ko", korean)):
        client = portal.as_user("alice", **{"Accept-Language": language})
        key = submit_page(client)
        sent = SUBMIT | change | {"idempotency_key": key}
        answer = client.post_form("/submit", sent)
        assert answer.status_code == 400, (language, text_of(answer))
        assert f'id="e-{field}"' in answer.text
        error = answer.text.split(f'id="e-{field}" class="error">')[1].split("</small>")[0]
        assert says in error.replace("&#39;", "'").replace("&#34;", '"'), (language, error)
        assert 'id="form-error"' in answer.text
        kept = answer.text.replace("&#34;", '"').replace("&#39;", "'")
        for name, value in sent.items():
            if name in ("entrypoint", "runtime_env", "env_vars", "name", "working_dir", "time"):
                assert value in kept, (name, value)
        assert f'value="{key}"' in answer.text  # the same form: sent again, still one job
        if field in ("gpus", "nodes"):
            assert f'value="{sent[field]}"' in answer.text
        if field in ("flavor", "project"):
            assert f'<option value="{sent[field]}" selected>' in answer.text
    assert jobs_in(portal.api) == []


def test_a_form_from_elsewhere_queues_nothing(portal: Portal) -> None:
    alice = portal.as_user("alice")
    answer = alice.post_form("/submit", SUBMIT, csrf="forged")
    assert answer.status_code == 400
    assert "did not come from this site" in text_of(answer)
    assert jobs_in(portal.api) == []


def test_only_active_projects_of_mine_are_offered(portal: Portal) -> None:
    from web.models import ProjectState

    portal.api.add_project("p-asleep", state=ProjectState.REQUESTED)
    page = portal.as_user("alice").get("/submit")
    assert '<option value="p1"' in page.text
    assert 'value="p-asleep"' not in page.text and 'value="p2"' not in page.text
    nobody = portal.api.add_user("newcomer")
    client = portal.anonymous()
    client.get("/signin")
    assert client.post_form("/signin", {"token": portal.api.tokens[nobody]}).status_code == 303
    assert "not a member of any active project" in text_of(client.get("/submit"))


# --- a job's page --------------------------------------------------------------------------


def test_the_job_page_shows_the_facts_usage_and_log(portal: Portal) -> None:
    api = portal.api
    job_id = int(api.submit("alice", gpus=2, name="trainer")["id"])
    api.set_job(job_id, state="running", attempt=1, started_at=START + 30)
    with write_session(api.engine) as session:
        session.add(
            JobUsage(
                job_id=job_id,
                attempt=1,
                gpu_s=7200.0,
                util_gpu_s=7200.0,
                busy_gpu_s=5400.0,
                energy_j=3.6e6 * 1.5,
                peak_mem_bytes=3 * 2**30,
            )
        )
    log_file(api, job_id, 1).write_text("epoch 1 <done>\n")
    page = portal.as_user("alice").get(f"/jobs/{job_id}")
    assert page.status_code == 200
    text = text_of(page)
    assert f"Job {job_id} · trainer" in text
    assert 'id="job-state" data-state="running"' in page.text
    assert f"Started {when(START + 30)}" in text
    assert "2.00 75.0 % 1.500 3.0 GiB" in text  # GPU-hours, utilization, kWh, peak memory
    assert "epoch 1 &lt;done&gt;" in page.text  # the log, escaped
    assert 'data-offset="15"' in page.text and 'data-attempt="1"' in page.text
    assert '<script src="/static/portal.js"' in page.text
    assert f'href="/jobs/{job_id}"' in page.text  # the refresh link, for pages without JS


def test_a_waiting_jobs_page_says_why(portal: Portal) -> None:
    job_id = int(portal.api.submit("alice")["id"])
    portal.api.set_job(
        job_id, reason_code="over_limit", reason="p1 holds 16 of 16", est_start=START + 60
    )
    text = text_of(portal.as_user("alice").get(f"/jobs/{job_id}"))
    assert "Over the project's limit" in text and "p1 holds 16 of 16" in text
    assert f"Estimated start: {when(START + 60)}" in text
    assert "No output yet." in text


def test_the_state_for_the_pages_script_follows_the_loop(portal: Portal) -> None:
    job_id = int(portal.api.submit("alice")["id"])
    portal.api.set_job(job_id, reason_code="capacity", reason="needs 1 H100", est_start=START)
    korean = portal.as_user("alice", **{"Accept-Language": "ko"})
    waiting = korean.get(f"/jobs/{job_id}/state.json")
    assert waiting.status_code == 200
    assert waiting.headers["cache-control"] == "no-store"
    body: dict[str, Any] = waiting.json()
    assert body["state"] == "queued" and body["final"] is False
    assert body["reason"] == "needs 1 H100" and body["headline"] != ""
    assert body["est_start_text"] == f"예상 시작: {when(START, 'ko')}"
    portal.api.set_job(job_id, state="running", attempt=1, reason_code="", reason="")
    running = korean.get(f"/jobs/{job_id}/state.json").json()
    assert (running["state"], running["headline"], running["final"]) == ("running", "", False)
    assert 'data-state="running"' in korean.get(f"/jobs/{job_id}").text
    portal.api.set_job(job_id, state="succeeded", ended_at=START + 100)
    assert korean.get(f"/jobs/{job_id}/state.json").json()["final"] is True


def test_the_log_route_follows_the_output(portal: Portal) -> None:
    api = portal.api
    job_id = int(api.submit("alice")["id"])
    api.set_job(job_id, state="running", attempt=1)
    log_file(api, job_id, 1).write_text("epoch 1\n")
    alice = portal.as_user("alice")
    first = alice.get(f"/jobs/{job_id}/log")
    assert first.status_code == 200
    assert first.text == "epoch 1\n"
    assert first.headers["content-type"] == "text/plain; charset=utf-8"
    assert first.headers["x-gpupool-log-end"] == "8"
    assert first.headers["x-gpupool-log-done"] == "0"
    with log_file(api, job_id, 1).open("a") as out:
        out.write("epoch 2\n")
    more = alice.get(f"/jobs/{job_id}/log?offset=8&attempt=1")
    assert more.text == "epoch 2\n"
    assert more.headers["x-gpupool-log-end"] == more.headers["x-gpupool-log-size"] == "16"
    api.set_job(job_id, state="succeeded")
    ended = alice.get(f"/jobs/{job_id}/log?offset=16")
    assert ended.text == "" and ended.headers["x-gpupool-log-done"] == "1"
    assert ended.headers["x-gpupool-job-state"] == "succeeded"
    assert alice.get(f"/jobs/{job_id}/log?attempt=5").status_code == 404


def test_a_log_that_cannot_be_read_now_is_a_503_to_try_again(portal: Portal) -> None:
    api = portal.api
    job_id = int(api.submit("alice")["id"])
    api.set_job(job_id, state="running", attempt=1)
    log_file(api, job_id, 1).mkdir()  # reading it fails, as a disk or Ray away would
    answer = portal.as_user("alice").get(f"/jobs/{job_id}/log")
    assert answer.status_code == 503  # the page's script asks again later
    assert "Not available now" in text_of(answer)
    assert f"cannot read the log of job {job_id}" in text_of(answer)


def test_a_long_log_shows_its_end(portal: Portal) -> None:
    api = portal.api
    job_id = int(api.submit("alice")["id"])
    api.set_job(job_id, state="running", attempt=1)
    lines = "".join(f"line {i:07d}\n" for i in range(30_000))  # 390 kB
    log_file(api, job_id, 1).write_text(lines)
    page = portal.as_user("alice").get(f"/jobs/{job_id}")
    assert "line 0029999" in page.text and "line 0000000" not in page.text
    assert "The start of a long log is not shown." in text_of(page)
    assert f'data-offset="{len(lines)}"' in page.text


@pytest.mark.parametrize(
    "path", ["/jobs/{id}", "/jobs/{id}/log", "/jobs/{id}/state.json", "/jobs/{id}/cancel"]
)
def test_another_projects_job_is_not_found(portal: Portal, path: str) -> None:
    theirs = int(portal.api.submit("carol", project="p2", name="carols-secret")["id"])
    alice = portal.as_user("alice")
    url = path.format(id=theirs)
    answer = alice.post_form(url) if url.endswith("/cancel") else alice.get(url)
    assert answer.status_code == 404
    assert "carols-secret" not in answer.text
    assert "Not found" in text_of(answer)
    assert portal.api.job_row(theirs).state == "queued"
    assert portal.as_user("carol").get(f"/jobs/{theirs}").status_code == 200


@pytest.mark.parametrize("path", ["/jobs/0", "/jobs/abc", "/jobs/99999", "/jobs/3000000000"])
def test_a_job_that_is_not_there_is_not_found(portal: Portal, path: str) -> None:
    assert portal.as_user("alice").get(path).status_code == 404


def test_cancelling_a_waiting_job(portal: Portal) -> None:
    job_id = int(portal.api.submit("alice")["id"])
    alice = portal.as_user("alice")
    page = alice.get(f"/jobs/{job_id}")
    assert f'action="/jobs/{job_id}/cancel"' in page.text
    answer = alice.post_form(f"/jobs/{job_id}/cancel")
    assert answer.status_code == 303 and answer.headers["location"] == f"/jobs/{job_id}"
    assert portal.api.job_row(job_id).state == "cancelled"
    after = alice.get(f"/jobs/{job_id}")
    assert f"Job {job_id} was cancelled." in text_of(after)
    assert f'action="/jobs/{job_id}/cancel"' not in after.text
    again = alice.post_form(f"/jobs/{job_id}/cancel")
    assert again.status_code == 303
    assert "has already ended" in text_of(alice.get(f"/jobs/{job_id}"))


def test_cancelling_a_running_job_asks_the_loop_to_stop_it(portal: Portal) -> None:
    job_id = int(portal.api.submit("alice")["id"])
    portal.api.set_job(job_id, state="running", attempt=1)
    alice = portal.as_user("alice", **{"Accept-Language": "ko"})
    alice.get(f"/jobs/{job_id}")
    assert alice.post_form(f"/jobs/{job_id}/cancel").status_code == 303
    row = portal.api.job_row(job_id)
    assert row.state == "running" and row.cancel_requested_at is not None
    assert f"작업 {job_id}을(를) 멈추는 중입니다." in text_of(alice.get(f"/jobs/{job_id}"))


def test_a_member_may_not_cancel_anothers_job(portal: Portal) -> None:
    job_id = int(portal.api.submit("alice")["id"])
    bob = portal.as_user("bob")
    page = bob.get(f"/jobs/{job_id}")
    assert page.status_code == 200 and "/cancel" not in page.text
    assert bob.post_form(f"/jobs/{job_id}/cancel").status_code == 303
    assert "only they, the PI or an admin may cancel it" in text_of(bob.get(f"/jobs/{job_id}"))
    assert portal.api.job_row(job_id).state == "queued"


def test_a_cancel_without_the_form_token_changes_nothing(portal: Portal) -> None:
    job_id = int(portal.api.submit("alice")["id"])
    alice = portal.as_user("alice")
    assert alice.post_form(f"/jobs/{job_id}/cancel", csrf="forged").status_code == 303
    assert portal.api.job_row(job_id).state == "queued"
    assert "did not come from this site" in text_of(alice.get(f"/jobs/{job_id}"))


def test_every_bad_field_of_a_submission_is_named_at_once(portal: Portal) -> None:
    alice = portal.as_user("alice")
    key = submit_page(alice)
    sent = SUBMIT | {"gpus": "0", "time": "2x", "runtime_env": "{", "env_vars": "oops"}
    answer = alice.post_form("/submit", sent | {"idempotency_key": key})
    assert answer.status_code == 400
    for field in ("gpus", "time", "runtime_env", "env_vars"):
        assert f'id="e-{field}"' in answer.text, field
    assert jobs_in(portal.api) == []


def test_a_waiting_jobs_page_says_how_sure_its_estimate_is(portal: Portal) -> None:
    job_id = int(portal.api.submit("alice")["id"])
    submitted = portal.api.job_row(job_id).submitted_at
    start, earliest, latest = submitted + 7200, submitted + 6600, submitted + 7800
    portal.api.set_job(
        job_id,
        reason_code="capacity",
        reason="needs 1 H100",
        est_start=start,
        est_start_earliest=earliest,
        est_start_latest=latest,
        est_unbounded=0,
    )
    english = portal.as_user("alice")
    likely = f"likely between {when(earliest)} and {when(latest)}"
    assert f"Estimated start: {when(start)} ({likely})" in text_of(english.get(f"/jobs/{job_id}"))
    assert likely in text_of(english.get("/jobs"))
    korean = portal.as_user("alice", **{"Accept-Language": "ko"})
    body = korean.get(f"/jobs/{job_id}/state.json").json()
    assert body["est_start_text"] == (
        f"예상 시작: {when(start, 'ko')} "
        f"({when(earliest, 'ko')}에서 {when(latest, 'ko')} 사이일 가능성이 높음)"
    )

    portal.api.set_job(job_id, est_unbounded=2)
    rough = text_of(english.get(f"/jobs/{job_id}"))
    assert (
        f"rough: between {when(earliest)} and {when(latest)}; it depends on 2 jobs running "
        "past what their history knows"
    ) in rough
    assert "이력보다 오래 실행 중인 작업 2개에 달려 있음" in text_of(korean.get(f"/jobs/{job_id}"))

    portal.api.set_job(
        job_id, est_unbounded=0, est_start_earliest=submitted, est_start_latest=1e308
    )
    # A range no date can hold is left out; the page still shows the estimate.
    page = english.get(f"/jobs/{job_id}")
    assert page.status_code == 200 and f"Estimated start: {when(start)}" in text_of(page)
    assert "between" not in text_of(page)
