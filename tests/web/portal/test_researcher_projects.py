"""Project requests and project pages in the portal (SQLite and PostgreSQL): a request as
in an allocation-management portal makes a requested project with its PI; a bad one is
refused in place keeping what was typed and stores nothing; a project's page shows its
quotas, credits and members, its history to its PI and administrators, and nothing to
those who may not see it."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import select

from tests.web.portal.conftest import Portal, text_of
from web.db import read_session
from web.models import Membership, Project

REQUEST = {
    "name": "vision-2026",
    "title": "Vision models for satellite images",
    "sector": "academia",
    "pi": "alice",
    "requested_gpus": "16",
    "requested_gpu_hours": "20000",
    "justification": "Pretraining on 40 TB of imagery.",
}


def project_row(portal: Portal, name: str) -> Project | None:
    with read_session(portal.api.engine) as session:
        row = session.get(Project, name)
        return None if row is None else Project.model_validate(row.model_dump())


def test_a_request_makes_a_requested_project_led_by_me(portal: Portal) -> None:
    erin = portal.as_user("erin")
    erin.get("/requests/new")
    answer = erin.post_form("/requests/new", REQUEST | {"pi": "erin"})
    assert answer.status_code == 303, text_of(answer)
    assert answer.headers["location"] == "/projects/vision-2026"
    row = project_row(portal, "vision-2026")
    assert row is not None
    assert (row.state, row.pi, row.sector, row.requested_gpus, row.requested_gpu_hours) == (
        "requested",
        "erin",
        "academia",
        16,
        20000.0,
    )
    assert row.justification == "Pretraining on 40 TB of imagery."
    with read_session(portal.api.engine) as session:
        member = session.exec(select(Membership).where(Membership.project == "vision-2026")).one()
        assert (member.user, member.role) == ("erin", "pi")
    page = erin.get("/projects/vision-2026")  # a member now: the page is hers
    assert page.status_code == 200
    text = text_of(page)
    assert "Project vision-2026 is requested; an administrator will decide on it." in text
    assert "vision-2026 requested" in text
    assert "Vision models for satellite images" in text
    assert "Pretraining on 40 TB of imagery." in text


def test_the_request_form_defaults_the_pi_to_me_and_offers_the_sectors(portal: Portal) -> None:
    page = portal.as_user("bob").get("/requests/new")
    assert 'name="pi" type="text" value="bob"' in page.text
    assert '<option value="academia"' in page.text and '<option value="industry"' in page.text


def test_an_empty_pi_is_me(portal: Portal) -> None:
    bob = portal.as_user("bob")
    bob.get("/requests/new")
    assert bob.post_form("/requests/new", REQUEST | {"pi": ""}).status_code == 303
    row = project_row(portal, "vision-2026")
    assert row is not None and row.pi == "bob"


BAD_REQUESTS: list[tuple[str, dict[str, str], str, str, str]] = [
    # (case, changed fields, field at fault, English, Korean)
    ("no name", {"name": ""}, "name", "Required.", "필수 항목입니다."),
    ("bad name", {"name": "Vision 2026!"}, "name", "1 to 63 characters", "1~63자"),
    ("no title", {"title": " "}, "title", "Required.", "필수 항목입니다."),
    ("no sector", {"sector": ""}, "sector", "Required.", "필수 항목입니다."),
    (
        "unknown sector",
        {"sector": "government"},
        "sector",
        "Not accepted: unknown sector 'government'",
        "받아들일 수 없습니다: unknown sector",
    ),
    ("GPUs in words", {"requested_gpus": "many"}, "requested_gpus", "Must be a whole number.",
     "정수여야 합니다."),
    ("negative hours", {"requested_gpu_hours": "-5"}, "requested_gpu_hours",
     "Must be at least 0.", "0 이상이어야 합니다."),
    ("hours in words", {"requested_gpu_hours": "lots"}, "requested_gpu_hours",
     "Must be a number.", "숫자"),
    (
        "another PI",
        {"pi": "bob"},
        "pi",
        "Not accepted: only an administrator may request a project for another PI",
        "받아들일 수 없습니다: only an administrator",
    ),
    (
        "a name taken",
        {"name": "p2"},
        "name",
        "Not accepted: project 'p2' exists already",
        "받아들일 수 없습니다: project 'p2' exists already",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "field", "english", "korean"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_a_bad_request_is_refused_in_place_keeping_what_was_typed(
    portal: Portal, change: dict[str, str], field: str, english: str, korean: str
) -> None:
    before = projects_count(portal)
    for language, says in (("en", english), ("ko", korean)):
        client = portal.as_user("alice", **{"Accept-Language": language})
        client.get("/requests/new")
        sent = REQUEST | change
        answer = client.post_form("/requests/new", sent)
        assert answer.status_code == 400, (language, text_of(answer))
        error = answer.text.split(f'id="e-{field}" class="error">')[1].split("</small>")[0]
        assert says in error.replace("&#39;", "'"), (language, error)
        kept = answer.text.replace("&#39;", "'")
        for name in ("name", "title", "requested_gpus", "requested_gpu_hours", "pi"):
            assert f'name="{name}" type="' in kept
            assert f'value="{sent[name]}"' in kept, name
        assert sent["justification"] in kept
        if sent["sector"]:
            assert f'<option value="{sent["sector"]}" selected>' in answer.text
    assert projects_count(portal) == before
    assert project_row(portal, "vision-2026") is None


def projects_count(portal: Portal) -> int:
    return portal.api.count(Project)


def test_an_admin_may_request_for_another_pi(portal: Portal) -> None:
    admin = portal.as_user("admin")
    admin.get("/requests/new")
    assert admin.post_form("/requests/new", REQUEST | {"pi": "dave"}).status_code == 303
    row = project_row(portal, "vision-2026")
    assert row is not None and row.pi == "dave"


# --- a project's page ----------------------------------------------------------------------


def test_the_project_page_shows_quotas_credits_and_members(portal: Portal) -> None:
    job = portal.api.submit("alice", gpus=4, flavor="H100")
    portal.api.add_node("h-test")
    portal.api.set_job(job["id"], state="running", attempt=1, flavor_used="H100")
    from web.db import write_session
    from web.models import Allocation

    with write_session(portal.api.engine) as session:
        session.add(
            Allocation(job_id=job["id"], attempt=1, node="h-test", flavor="H100", gpus=4, start=0)
        )
    page = portal.as_user("bob").get("/projects/p1")
    assert page.status_code == 200
    text = text_of(page)
    assert "p1 active" in text and "Sector academia" in text
    assert "GPUs in use (limit 16, guaranteed 8) 4 / 16 GPUs" in text
    assert "GPUs in use (limit 8, guaranteed 4) 0 / 8 GPUs" in text
    assert "Granted 1,000.0" in text and "Left 1,000.0" in text
    assert "alice (pi)" in text and "bob (member)" in text and "dave (member)" in text
    assert 'id="gauge-p1-H100"' in page.text
    assert "History of changes" not in text  # bob is a member, not the PI


def test_the_pi_and_admins_see_the_history(portal: Portal) -> None:
    changed = portal.api.put(
        "admin", "/projects/p1/quotas/H100", json={"guaranteed": 10, "limit": 20, "note": "grew"}
    )
    assert changed.status_code == 200, changed.text
    for who in ("alice", "admin"):
        text = text_of(portal.as_user(who).get("/projects/p1"))
        assert "History of changes" in text, who
        assert "admin" in text and "grew" in text
    assert "History of changes" not in text_of(portal.as_user("ops").get("/projects/p1"))


def test_a_project_in_korean(portal: Portal) -> None:
    text = text_of(portal.as_user("alice", **{"Accept-Language": "ko"}).get("/projects/p1"))
    assert "연구 책임자 alice" in text and "할당량" in text and "크레딧" in text


@pytest.mark.parametrize(("who", "name"), [("alice", "p2"), ("bob", "p3"), ("alice", "nope")])
def test_a_project_i_may_not_see_is_not_found(portal: Portal, who: str, name: str) -> None:
    answer = portal.as_user(who).get(f"/projects/{name}")
    assert answer.status_code == 404
    assert "Not found" in text_of(answer)


def test_operators_and_admins_see_any_project(portal: Portal) -> None:
    for who in ("ops", "admin"):
        page: Any = portal.as_user(who).get("/projects/p2")
        assert page.status_code == 200 and "carol (pi)" in text_of(page)


def test_every_bad_field_is_named_at_once(portal: Portal) -> None:
    alice = portal.as_user("alice")
    alice.get("/requests/new")
    sent = REQUEST | {"name": "Bad Name", "title": "", "requested_gpus": "-1"}
    answer = alice.post_form("/requests/new", sent)
    assert answer.status_code == 400
    for field in ("name", "title", "requested_gpus"):
        assert f'id="e-{field}"' in answer.text, field
    assert "1 to 63 characters" in text_of(answer)


@pytest.mark.parametrize(
    "path", ["/projects/p1%00", "/projects/p%001/statements/2026-03.json", "/jobs?project=p%001"]
)
def test_a_nul_in_a_path_or_query_is_refused_not_a_crash(portal: Portal, path: str) -> None:
    answer = portal.as_user("alice").get(path)
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("text/html")
