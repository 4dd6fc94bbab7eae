"""A row stored before validation got stricter (a lone surrogate in a job's runtime_env, a
time no date can hold) still lists, in the API and on every page that shows it, with the
field shown as unreadable: one bad row never takes a list down for everyone (SQLite and
PostgreSQL).

The rows are written with SQL behind the intake's back, as an older version of the pool
(or a hand-edited database) could have left them."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from tests.web.api.test_agents import running_job
from tests.web.conftest import Api
from tests.web.portal.conftest import Portal
from web.db import write_session
from web.models import Change, LedgerEntry
from web.services.metering import period_of

FAR = 1e308  # a time as a number: no date holds it
SURROGATE_ENV = '{"env_vars": {"A": "\\ud800", "B": "fine"}}'  # JSON escapes, stored as such


def store_bad_rows(api: Api) -> dict[str, Any]:
    """One bad row in each list (jobs, projects, nodes, changes, ledger), beside good ones."""
    good = int(api.submit("alice", name="good-job")["id"])
    bad = int(api.submit("alice", name="bad-job")["id"])
    api.add_node("bad-node")
    running = running_job(api, node="bad-node")
    with api.engine.begin() as db:
        db.execute(
            text("UPDATE jobs SET runtime_env = :env, est_start = :far WHERE id = :id"),
            {"env": SURROGATE_ENV, "far": FAR, "id": bad},
        )
        db.execute(
            text("UPDATE jobs SET runtime_env = :env, admitted_at = :far WHERE id = :id"),
            {"env": SURROGATE_ENV, "far": -FAR, "id": running},
        )
        db.execute(text("UPDATE projects SET expires_at = :far WHERE name = 'p1'"), {"far": FAR})
        db.execute(
            text("UPDATE nodes SET last_heartbeat = :far, registered_at = :far WHERE name = :n"),
            {"far": FAR, "n": "bad-node"},
        )
    with write_session(api.engine) as session:
        session.add(
            Change(at=FAR, actor="admin", subject="project:p1", field="state", old="a", new="b")
        )
        session.add(
            LedgerEntry(
                id=10_000,
                at=FAR,
                kind="grant",
                project="p1",
                amount=1.0,
                prev_hash="0" * 64,
                hash="f" * 64,
            )
        )
    api.changed()
    return {"good": good, "bad": bad, "running": running}


def test_each_api_list_still_answers_with_the_bad_field_named(api: Api) -> None:
    ids = store_bad_rows(api)

    listed = api.get("alice", "/jobs", params={"limit": 500})
    assert listed.status_code == 200, listed.text
    jobs = {job["id"]: job for job in listed.json()["items"]}
    assert set(ids.values()) <= jobs.keys()
    assert "unreadable" not in jobs[ids["good"]]  # only a row with such a field carries it
    assert jobs[ids["bad"]]["unreadable"] == ["est_start", "runtime_env"]
    assert jobs[ids["bad"]]["est_start"] is None
    assert jobs[ids["bad"]]["runtime_env"] == {"env_vars": {"A": "\ufffd", "B": "fine"}}
    assert jobs[ids["running"]]["unreadable"] == ["admitted_at", "runtime_env"]
    assert jobs[ids["running"]]["allocations"][0]["node"] == "bad-node"

    one = api.get("alice", f"/jobs/{ids['bad']}")
    assert one.status_code == 200, one.text
    assert one.json()["unreadable"] == ["est_start", "runtime_env"]

    for path, user, key in [
        ("/projects", "alice", "name"),
        ("/projects/p1", "alice", None),
        ("/nodes", "ops", "name"),
        ("/projects/p1/history", "admin", "id"),
        ("/ledger", "admin", "id"),
    ]:
        answer = api.get(user, path)
        assert answer.status_code == 200, (path, answer.text)
        rows = answer.json() if key else [answer.json()]
        flagged = [row for row in rows if row.get("unreadable")]
        assert flagged, (path, rows)


def test_a_statement_is_built_and_verified_beside_a_bad_ledger_row(api: Api) -> None:
    """A ledger entry whose time no date holds (outside every period) leaves the period's
    statement whole, in every format, and verifiable."""
    store_bad_rows(api)
    period = period_of(api.clock.now())
    for form in ("json", "csv", "html"):
        answer = api.get("alice", f"/projects/p1/statements/{period}", params={"format": form})
        assert answer.status_code == 200, (form, answer.text[:300])
    signed = api.get("alice", f"/projects/p1/statements/{period}").content
    verified = api.post(None, "/statements/verify", content=signed)
    assert verified.status_code == 200, verified.text
    # Genuine: the stray row is outside its period and no link of the chain it covers.
    assert verified.json()["valid"] is True, verified.json()["problems"]


PAGES = [
    ("alice", "/"),
    ("alice", "/jobs"),
    ("alice", "/jobs/{bad}"),
    ("alice", "/jobs/{running}"),
    ("alice", "/projects/p1"),
    ("alice", "/statements"),
    ("alice", "/statements?project=p1&period={period}"),
    ("admin", "/jobs?all=1"),
    ("admin", "/admin"),
    ("admin", "/admin/projects"),
    ("admin", "/admin/projects/p1"),
    ("admin", "/admin/changes"),
    ("ops", "/ops"),
    ("ops", "/ops/nodes"),
    ("ops", "/ops/nodes/bad-node"),
    ("ops", "/ops/queue"),
    ("ops", "/ops/idle"),
]


def test_every_page_showing_a_bad_row_still_renders(portal: Portal) -> None:
    ids = store_bad_rows(portal.api)
    period = period_of(portal.api.clock.now())
    failed = []
    for user, path in PAGES:
        answer = portal.as_user(user).get(path.format(period=period, **ids))
        if answer.status_code == 303:  # a statement's form sends to its download
            answer = portal.as_user(user).get(answer.headers["location"])
        if answer.status_code != 200:
            failed.append((user, path, answer.status_code))
    assert not failed

    job_page = portal.as_user("alice").get(f"/jobs/{ids['bad']}").text
    assert '"A": "\\ufffd"' in job_page  # the surrogate, shown replaced (as JSON)
    assert "bad-job" in job_page
    queue_page = portal.as_user("ops").get("/ops/queue").text
    assert f'id="job-{ids["bad"]}"' in queue_page and f'id="job-{ids["good"]}"' in queue_page


@pytest.mark.parametrize("user", ["alice", "admin"])
def test_the_cli_queue_lists_a_bad_row(api: Api, user: str) -> None:
    """`gpupool queue --all` reads /jobs: the bad row is there, the list is whole."""
    ids = store_bad_rows(api)
    answer = api.get(user, "/jobs", params={"state": "queued"})
    assert answer.status_code == 200, answer.text
    assert ids["bad"] in {job["id"] for job in answer.json()["items"]}
