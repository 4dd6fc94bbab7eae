"""The administrators' project pages: requests, decisions, modifying a request, quotas,
credits, members and the history of changes (on SQLite and PostgreSQL)."""

from __future__ import annotations

import html
import re
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlmodel import col, select

from tests.web.portal.conftest import Portal, PortalClient, text_of
from web.db import read_session
from web.models import (
    Change,
    LedgerEntry,
    Membership,
    Project,
    ProjectState,
    Quota,
)
from web.portal.i18n import translations
from web.services.changes import history

SEOUL = ZoneInfo("Asia/Seoul")  # the test pool's time zone (the default)


def said(response: httpx.Response) -> str:
    """The page's text as a person reads it (tags gone, entities such as &#39; decoded)."""
    return html.unescape(text_of(response))


def project_row(portal: Portal, name: str) -> Project:
    with read_session(portal.api.engine) as session:
        row = session.get(Project, name)
        assert row is not None
        return Project.model_validate(row.model_dump())


def quota_row(portal: Portal, name: str, flavor: str) -> tuple[int, int, float | None] | None:
    with read_session(portal.api.engine) as session:
        row = session.get(Quota, (name, flavor))
        return None if row is None else (row.guaranteed, row.limit, row.credit_rate)


def changes_of(portal: Portal, subject: str) -> list[tuple[str, str, str, str, str]]:
    """(actor, field, old, new, note) of a subject's changes, newest first."""
    with read_session(portal.api.engine) as session:
        return [(c.actor, c.field, c.old, c.new, c.note) for c in history(session, subject)]


def gauge_value(response: httpx.Response, gauge_id: str) -> str:
    """What a gauge says (in use / total and the unit)."""
    found = re.search(
        rf'id="{re.escape(gauge_id)}".*?<span class="gauge-value">([^<]*)</span>',
        response.text,
        re.DOTALL,
    )
    assert found, f"no gauge {gauge_id}"
    return " ".join(found.group(1).split())


def request_project(portal: Portal, name: str, pi: str = "carol") -> None:
    answer = portal.api.post(
        pi,
        "/projects",
        json={
            "name": name,
            "title": f"Protein folding {name}",
            "sector": "academia",
            "requested_gpus": 16,
            "requested_gpu_hours": 5000,
            "justification": "Folding 10,000 proteins needs 16 H100s for a month.",
        },
    )
    assert answer.status_code == 201, answer.text


def admin_page(portal: Portal, path: str) -> tuple[PortalClient, httpx.Response]:
    admin = portal.as_user("admin")
    page = admin.get(path)
    assert page.status_code == 200, page.text
    return admin, page


def test_requests_list_what_was_asked_for_and_link_to_the_project(portal: Portal) -> None:
    request_project(portal, "fold")
    _admin, page = admin_page(portal, "/admin/requests")
    text = said(page)
    for words in (
        "Protein folding fold",
        "carol",
        "academia",
        "Folding 10,000 proteins needs 16 H100s for a month.",
        "5,000.0",
    ):
        assert words in text
    assert 'href="/admin/projects/fold"' in page.text
    assert "p1" not in re.findall(r'id="request-([^"]+)"', page.text)  # active: not a request
    _admin, overview = admin_page(portal, "/admin")
    assert "1 requested, 0 approved but not active yet." in said(overview)


def test_approve_a_request_with_a_note_then_activate_it_with_an_end_date(portal: Portal) -> None:
    request_project(portal, "fold")
    admin, page = admin_page(portal, "/admin/projects/fold")
    assert 'value="approve"' in page.text and 'value="deny"' in page.text
    assert 'value="activate"' not in page.text  # not from "requested"
    done = admin.post_form(
        "/admin/projects/fold/decide", {"action": "approve", "note": "Fits the call for 2024."}
    )
    assert done.status_code == 303 and done.headers["location"] == "/admin/projects/fold"
    shown = admin.get("/admin/projects/fold")
    text = said(shown)
    assert "Project fold is approved." in text
    assert "approved" in text and "Fits the call for 2024." in text
    assert changes_of(portal, "project:fold")[0] == (
        "admin",
        "state",
        "requested",
        "approved",
        "Fits the call for 2024.",
    )
    row = project_row(portal, "fold")
    assert (row.state, row.decided_by, row.decision_note) == (
        "approved",
        "admin",
        "Fits the call for 2024.",
    )

    activated = admin.post_form(
        "/admin/projects/fold/decide",
        {"action": "activate", "note": "", "expires_at": "2024-06-30"},
    )
    assert activated.status_code == 303
    row = project_row(portal, "fold")
    assert row.state == "active"
    assert row.expires_at == datetime(2024, 6, 30, tzinfo=SEOUL).timestamp()
    assert "2024-06-30 00:00" in said(admin.get("/admin/projects/fold"))
    assert "fold" not in admin.get("/admin/requests").text


def test_deny_a_request(portal: Portal) -> None:
    request_project(portal, "fold")
    admin = portal.as_user("admin")
    admin.get("/admin/projects/fold")
    denied = admin.post_form(
        "/admin/projects/fold/decide", {"action": "deny", "note": "Out of scope."}
    )
    assert denied.status_code == 303
    assert project_row(portal, "fold").state == "closed"
    assert changes_of(portal, "project:fold")[0][1:] == (
        "state",
        "requested",
        "closed",
        "Out of scope.",
    )
    page = admin.get("/admin/projects/fold")
    assert "Out of scope." in said(page)
    assert 'value="approve"' not in page.text  # nothing more to decide
    assert "fold" not in admin.get("/admin/requests").text
    # The PI sees the decision on the project's own page.
    assert "Out of scope." in said(portal.as_user("carol").get("/projects/fold"))


@pytest.mark.parametrize(
    ("data", "where", "says"),
    [
        # p1 is active: approving needs "requested"
        ({"action": "approve", "note": "keep me"}, "form-error", "cannot approve project 'p1'"),
        (
            {"action": "close", "note": "keep me", "expires_at": "2024-13-45"},
            "e-decide-expires_at",
            "Must be a date (YYYY-MM-DD).",
        ),
        (
            {"action": "close", "note": "keep me", "expires_at": "9999-12-31"},
            "e-decide-expires_at",
            "Must be a date from 1970-01-02 to 2499-12-31.",
        ),
        ({"action": "explode", "note": "keep me"}, "form-error", "Choose one of the decisions."),
        ({"action": "close", "note": "x" * 5001}, "e-decide-note", "At most 5000 characters."),
    ],
)
def test_a_decision_refused_is_said_in_place_and_changes_nothing(
    portal: Portal, data: dict[str, str], where: str, says: str
) -> None:
    admin, _page = admin_page(portal, "/admin/projects/p1")
    before = changes_of(portal, "project:p1")
    answer = admin.post_form("/admin/projects/p1/decide", data)
    assert answer.status_code == 400
    assert f'id="{where}"' in answer.text
    assert says in said(answer)
    assert data["note"] in answer.text  # kept
    if "expires_at" in data:
        assert f'value="{data["expires_at"]}"' in answer.text
    assert project_row(portal, "p1").state == "active"
    assert changes_of(portal, "project:p1") == before


def test_activating_with_an_end_date_that_has_passed_is_refused_on_the_date(
    portal: Portal,
) -> None:
    request_project(portal, "fold")
    admin = portal.as_user("admin")
    admin.get("/admin/projects/fold")
    assert admin.post_form("/admin/projects/fold/decide", {"action": "approve"}).status_code == 303
    answer = admin.post_form(
        "/admin/projects/fold/decide", {"action": "activate", "expires_at": "2020-01-01"}
    )
    assert answer.status_code == 400
    assert 'id="e-decide-expires_at"' in answer.text
    assert "has passed" in said(answer)
    assert 'value="2020-01-01"' in answer.text
    assert project_row(portal, "fold").state == "approved"


def test_modify_a_request_before_approving_it(portal: Portal) -> None:
    request_project(portal, "fold")
    admin, page = admin_page(portal, "/admin/projects/fold")
    assert 'id="f-update-title" name="title" type="text" value="Protein folding fold"' in page.text
    changed = admin.post_form(
        "/admin/projects/fold/update",
        {
            "title": "Protein folding, smaller",
            "share": "2.5",
            "default_max_runtime_s": "2h",
            "expires_at": "2024-03-31",
        },
    )
    assert changed.status_code == 303
    row = project_row(portal, "fold")
    assert row.title == "Protein folding, smaller"
    assert row.share == 2.5
    assert row.default_max_runtime_s == 7200
    assert row.expires_at == datetime(2024, 3, 31, tzinfo=SEOUL).timestamp()
    fields = {c[1] for c in changes_of(portal, "project:fold")}
    assert {"title", "share", "default_max_runtime_s", "expires_at"} <= fields

    # Sent back as shown: nothing changes, nothing is recorded.
    page = admin.get("/admin/projects/fold")
    assert 'name="default_max_runtime_s" type="text" value="02:00:00"' in page.text
    before = changes_of(portal, "project:fold")
    again = admin.post_form(
        "/admin/projects/fold/update",
        {
            "title": "Protein folding, smaller",
            "share": "2.5",
            "default_max_runtime_s": "02:00:00",
            "expires_at": "2024-03-31",
        },
    )
    assert again.status_code == 303
    assert "Nothing was changed." in said(admin.get("/admin/projects/fold"))
    assert changes_of(portal, "project:fold") == before

    # Blank share and time limit: back to none.
    admin.post_form(
        "/admin/projects/fold/update",
        {"title": "Protein folding, smaller", "share": "", "default_max_runtime_s": ""},
    )
    row = project_row(portal, "fold")
    assert (row.share, row.default_max_runtime_s, row.expires_at) == (None, None, None)


@pytest.mark.parametrize(
    ("field", "typed", "says"),
    [
        ("title", "", "Required."),
        ("share", "abc", "Must be a number."),
        ("share", "0", "Must be more than 0."),
        ("default_max_runtime_s", "forever", "is not a duration"),
        ("expires_at", "31/03/2024", "Must be a date (YYYY-MM-DD)."),
        ("expires_at", "9999-12-31", "Must be a date from 1970-01-02 to 2499-12-31."),
        ("expires_at", "0001-01-01", "Must be a date from 1970-01-02 to 2499-12-31."),
    ],
)
def test_a_bad_change_to_a_request_keeps_what_was_typed(
    portal: Portal, field: str, typed: str, says: str
) -> None:
    request_project(portal, "fold")
    admin, _page = admin_page(portal, "/admin/projects/fold")
    data = {"title": "A new title", "share": "", "default_max_runtime_s": "", "expires_at": ""}
    data[field] = typed
    answer = admin.post_form("/admin/projects/fold/update", data)
    assert answer.status_code == 400
    assert f'id="e-update-{field}"' in answer.text
    assert says in said(answer)
    if field != "title":
        assert 'value="A new title"' in answer.text and f'value="{typed}"' in answer.text
    assert project_row(portal, "fold").title == "Protein folding fold"


def test_a_quota_change_shows_on_the_project_page_and_the_pis_dashboard(portal: Portal) -> None:
    alice = portal.as_user("alice")
    assert gauge_value(alice.get("/"), "gauge-p1-H100") == "0 / 16 GPUs"
    admin, page = admin_page(portal, "/admin/projects/p1")
    assert gauge_value(page, "gauge-p1-H100") == "0 / 16 GPUs"
    done = admin.post_form(
        "/admin/projects/p1/quotas/H100",
        {"guaranteed": "10", "limit": "24", "credit_rate": "", "note": "second phase"},
    )
    assert done.status_code == 303
    page = admin.get("/admin/projects/p1")
    assert gauge_value(page, "gauge-p1-H100") == "0 / 24 GPUs"
    assert "p1 on H100: 10 GPUs guaranteed, 24 at most." in said(page)
    assert "GPUs in use (limit 24, guaranteed 10)" in said(page)
    assert quota_row(portal, "p1", "H100") == (10, 24, None)
    assert gauge_value(alice.get("/"), "gauge-p1-H100") == "0 / 24 GPUs"
    recorded = changes_of(portal, "project:p1")
    assert ("admin", "limit[H100]", "16", "24", "second phase") in recorded
    assert ("admin", "guaranteed[H100]", "8", "10", "second phase") in recorded
    history_text = said(page).split("History of changes")[1]
    assert "limit[H100] 16 24 second phase" in history_text


def test_a_quota_of_its_own_credit_rate(portal: Portal) -> None:
    admin, _page = admin_page(portal, "/admin/projects/p1")
    admin.post_form(
        "/admin/projects/p1/quotas/A100", {"guaranteed": "4", "limit": "8", "credit_rate": "0.5"}
    )
    assert quota_row(portal, "p1", "A100") == (4, 8, 0.5)
    page = admin.get("/admin/projects/p1")
    assert 'id="f-quota-A100-credit_rate" name="credit_rate" type="text" value="0.5"' in page.text


@pytest.mark.parametrize(
    ("guaranteed", "limit", "field", "says"),
    [
        ("8", "4", "limit", "must be at least the guarantee (8), got 4"),
        ("abc", "16", "guaranteed", "Must be a whole number."),
        ("-1", "16", "guaranteed", "Must be at least 0."),
        ("8", "-3", "limit", "Must be at least 0."),
        ("8", "", "limit", "Required."),
        ("2.5", "16", "guaranteed", "Must be a whole number."),
    ],
)
def test_a_bad_quota_keeps_the_values_and_stores_nothing(
    portal: Portal, guaranteed: str, limit: str, field: str, says: str
) -> None:
    admin, _page = admin_page(portal, "/admin/projects/p1")
    before = changes_of(portal, "project:p1")
    answer = admin.post_form(
        "/admin/projects/p1/quotas/H100",
        {"guaranteed": guaranteed, "limit": limit, "note": "typed note"},
    )
    assert answer.status_code == 400
    assert f'id="e-quota-H100-{field}"' in answer.text
    assert says in said(answer)
    assert f'id="f-quota-H100-guaranteed" name="guaranteed" type="number" value="{guaranteed}"' in (
        answer.text
    )
    assert f'name="limit" type="number" value="{limit}"' in answer.text
    assert 'value="typed note"' in answer.text
    # The other flavor's form shows what is stored, untouched by the error.
    assert 'id="f-quota-A100-limit" name="limit" type="number" value="8"' in answer.text
    assert quota_row(portal, "p1", "H100") == (8, 16, None)
    assert changes_of(portal, "project:p1") == before
    assert gauge_value(portal.as_user("alice").get("/"), "gauge-p1-H100") == "0 / 16 GPUs"


def test_errors_are_in_korean_for_a_korean_browser(portal: Portal) -> None:
    ko = translations("ko").gettext
    admin = portal.as_user("admin", **{"Accept-Language": "ko-KR,ko;q=0.9"})
    admin.get("/admin/projects/p1")
    answer = admin.post_form("/admin/projects/p1/quotas/H100", {"guaranteed": "abc", "limit": "8"})
    assert answer.status_code == 400
    text = said(answer)
    assert ko("Must be a whole number.") in text and ko("Must be a whole number.") != (
        "Must be a whole number."
    )
    assert ko("Some fields need another look; see below.") in text
    limit = admin.post_form("/admin/projects/p1/quotas/H100", {"guaranteed": "9", "limit": "8"})
    lead = ko("Not accepted: %(reason)s").split("%(reason)s")[0].strip()
    assert lead and lead in said(limit)
    assert ko("Quotas") in said(limit) and ko("Quotas") != "Quotas"
    decided = admin.post_form("/admin/projects/p1/decide", {"action": "close", "expires_at": "x"})
    assert ko("Must be a date (YYYY-MM-DD).") in said(decided)
    assert ko("Must be a date (YYYY-MM-DD).") != "Must be a date (YYYY-MM-DD)."


def test_a_quota_on_a_flavor_the_project_has_none_of(portal: Portal) -> None:
    admin, page = admin_page(portal, "/admin/projects/p2")  # H100 only
    assert '<option value="A100"' in page.text
    assert '<option value="H100"' not in page.text.split('id="quota-new"')[1]
    missing = admin.post_form("/admin/projects/p2/quotas", {"guaranteed": "2", "limit": "4"})
    assert missing.status_code == 400 and 'id="e-quota-new-flavor"' in missing.text
    assert 'id="f-quota-new-guaranteed" name="guaranteed" type="number" value="2"' in missing.text
    twice = admin.post_form(
        "/admin/projects/p2/quotas", {"flavor": "H100", "guaranteed": "1", "limit": "2"}
    )
    assert twice.status_code == 400 and "has a H100 quota already" in said(twice)
    assert quota_row(portal, "p2", "H100") == (8, 16, None)
    added = admin.post_form(
        "/admin/projects/p2/quotas",
        {"flavor": "A100", "guaranteed": "2", "limit": "4", "note": "pilot"},
    )
    assert added.status_code == 303
    assert quota_row(portal, "p2", "A100") == (2, 4, None)
    page = admin.get("/admin/projects/p2")
    assert gauge_value(page, "gauge-p2-A100") == "0 / 4 GPUs"
    assert 'id="quota-new"' not in page.text  # no flavor left to add
    unknown = admin.post_form("/admin/projects/p2/quotas/T4", {"guaranteed": "1", "limit": "2"})
    assert unknown.status_code == 404  # no such flavor: no such page
    tampered = admin.post_form(
        "/admin/projects/p2/quotas", {"flavor": "T4", "guaranteed": "1", "limit": "2"}
    )
    assert tampered.status_code == 400 and 'id="e-quota-new-flavor"' in tampered.text
    assert "unknown flavor 'T4'" in said(tampered)
    assert quota_row(portal, "p2", "T4") is None


def grants(portal: Portal, project: str) -> list[tuple[float, str, str]]:
    with read_session(portal.api.engine) as session:
        rows = session.exec(
            select(LedgerEntry)
            .where(LedgerEntry.project == project, LedgerEntry.kind == "grant")
            .order_by(col(LedgerEntry.id))
        ).all()
        return [(r.amount, r.actor, r.note) for r in rows]


def test_a_credit_grant_moves_the_balance_through_the_ledger(portal: Portal) -> None:
    admin, page = admin_page(portal, "/admin/projects/p1")
    assert re.search(r'id="credits-left">1,000.0<', page.text)
    before = grants(portal, "p1")
    done = admin.post_form("/admin/projects/p1/credits", {"amount": "500", "note": "second call"})
    assert done.status_code == 303
    page = admin.get("/admin/projects/p1")
    assert "Credits of p1 changed: 1,500.0 left." in said(page)
    assert re.search(r'id="credits-left">1,500.0<', page.text)
    assert grants(portal, "p1") == [*before, (500.0, "admin", "second call")]
    assert project_row(portal, "p1").credits == 1500.0
    assert "1,500.0 credits left" in said(portal.as_user("alice").get("/"))

    admin.post_form("/admin/projects/p1/credits", {"amount": "-300"})
    assert project_row(portal, "p1").credits == 1200.0
    admin.post_form("/admin/projects/p1/credits", {"set_to": "200", "note": "cut"})
    assert project_row(portal, "p1").credits == 200.0
    assert grants(portal, "p1")[-1] == (-1000.0, "admin", "cut")
    admin.post_form("/admin/projects/p1/credits", {"unlimited": "yes", "note": "lifted"})
    assert project_row(portal, "p1").credits is None
    assert "No credit budget" in said(admin.get("/admin/projects/p1"))
    assert changes_of(portal, "project:p1")[0][1:] == ("credits", "200.0", "", "lifted")


@pytest.mark.parametrize(
    ("data", "field", "says"),
    [
        ({"amount": "-2000"}, "amount", "below the 0 already used"),
        ({"amount": "5", "set_to": "10"}, "amount", "give exactly one of amount"),
        ({}, "amount", "give exactly one of amount"),
        ({"amount": "lots"}, "amount", "Must be a number."),
        ({"set_to": "-1"}, "set_to", "Must be at least 0."),
    ],
)
def test_a_bad_credit_change_keeps_what_was_typed_and_moves_nothing(
    portal: Portal, data: dict[str, str], field: str, says: str
) -> None:
    admin, _page = admin_page(portal, "/admin/projects/p1")
    before = grants(portal, "p1")
    answer = admin.post_form("/admin/projects/p1/credits", data | {"note": "kept"})
    assert answer.status_code == 400
    assert f'id="e-credits-{field}"' in answer.text
    assert says in said(answer)
    for value in data.values():
        assert f'value="{value}"' in answer.text
    assert project_row(portal, "p1").credits == 1000.0
    assert grants(portal, "p1") == before


def members(portal: Portal, project: str) -> dict[str, str]:
    with read_session(portal.api.engine) as session:
        rows = session.exec(select(Membership).where(Membership.project == project)).all()
        return {m.user: m.role for m in rows}


def test_members_are_added_and_removed(portal: Portal) -> None:
    admin, _page = admin_page(portal, "/admin/projects/p1")
    added = admin.post_form("/admin/projects/p1/members", {"user": "erin", "role": "member"})
    assert added.status_code == 303
    assert members(portal, "p1")["erin"] == "member"
    page = admin.get("/admin/projects/p1")
    assert "erin is a member of p1 now." in said(page)
    assert 'id="member-erin"' in page.text
    # erin sees p1 at once (the principal cache was cleared)
    assert portal.as_user("erin").get("/projects/p1").status_code == 200

    removed = admin.post_form("/admin/projects/p1/members/erin/remove")
    assert removed.status_code == 303
    assert "erin" not in members(portal, "p1")
    assert ("admin", "member:erin", "member", "", "") in changes_of(portal, "project:p1")

    nobody = admin.post_form("/admin/projects/p1/members", {"user": "zed", "role": "member"})
    assert nobody.status_code == 400 and 'id="e-member-user"' in nobody.text
    assert "no user 'zed'" in said(nobody) and 'value="zed"' in nobody.text
    blank = admin.post_form("/admin/projects/p1/members", {"user": "", "role": "member"})
    assert blank.status_code == 400 and 'id="e-member-user"' in blank.text
    pi = admin.post_form("/admin/projects/p1/members/alice/remove")
    assert pi.status_code == 400 and "is the PI of 'p1'" in said(pi)
    not_member = admin.post_form("/admin/projects/p1/members/carol/remove")
    assert not_member.status_code == 400 and "is not a member of 'p1'" in said(not_member)
    assert members(portal, "p1") == {"alice": "pi", "bob": "member", "dave": "member"}


def test_the_project_list_filters_and_pages(portal: Portal) -> None:
    for i in range(52):
        portal.api.add_project(f"bulk{i:02d}", pi="erin", sector="industry", quotas={})
    request_project(portal, "fold")
    admin, page = admin_page(portal, "/admin/projects")
    assert "Projects found: 56" in said(page)
    assert len(re.findall(r'<tr id="project-', page.text)) == 50
    assert 'rel="next"' in page.text
    second = admin.get("/admin/projects?offset=50")
    assert len(re.findall(r'<tr id="project-', second.text)) == 6
    requested = admin.get("/admin/projects?state=requested")
    assert re.findall(r'<tr id="project-([^"]+)"', requested.text) == ["fold"]
    academia = admin.get("/admin/projects?sector=academia")
    assert re.findall(r'<tr id="project-([^"]+)"', academia.text) == ["fold", "p1", "p3"]
    found = admin.get("/admin/projects?q=PROTEIN")
    assert re.findall(r'<tr id="project-([^"]+)"', found.text) == ["fold"]
    wild = admin.get("/admin/projects?q=%25")  # a literal %, not a wildcard
    assert "Projects found: 0" in said(wild)
    bad = admin.get("/admin/projects?state=frozen&sector=arts")
    assert bad.status_code == 400
    assert 'id="e-state"' in bad.text and 'id="e-sector"' in bad.text
    assert "Projects found: 56" in said(bad)  # the bad filters are left out


def test_unknown_projects_are_not_found(portal: Portal) -> None:
    admin = portal.as_user("admin")
    assert admin.get("/admin/projects/nope").status_code == 404
    admin.get("/admin")
    for path in (
        "/admin/projects/nope/decide",
        "/admin/projects/nope/credits",
        "/admin/projects/nope/quotas/H100",
    ):
        answer = admin.post_form(path, {"action": "close", "guaranteed": "1", "limit": "2"})
        assert answer.status_code == 404, path
        assert answer.headers["content-type"].startswith("text/html")


def test_the_change_log_across_projects(portal: Portal) -> None:
    admin, _page = admin_page(portal, "/admin/projects/p1")
    admin.post_form("/admin/projects/p1/quotas/A100", {"guaranteed": "2", "limit": "8"})
    admin.post_form("/admin/projects/p3/credits", {"set_to": "50"})
    log = admin.get("/admin/changes")
    assert log.status_code == 200
    rows = re.findall(r'<tr id="change-(\d+)"', log.text)
    assert [int(r) for r in rows] == sorted((int(r) for r in rows), reverse=True)
    text = said(log)
    assert "project:p3 credits" in text and "project:p1 guaranteed[A100] 4 2" in text
    overview = said(admin.get("/admin"))
    assert "project:p3 credits" in overview
    with read_session(portal.api.engine) as session:
        users_only = len(
            session.exec(select(Change).where(col(Change.subject).startswith("user:"))).all()
        )
    only = admin.get("/admin/changes?kind=user")
    assert len(re.findall(r'<tr id="change-', only.text)) == min(users_only, 50)
    assert "project:p3" not in only.text
    assert admin.get("/admin/changes?kind=galaxy").status_code == 400


def test_waiting_counts_on_the_overview(portal: Portal) -> None:
    request_project(portal, "fold")
    request_project(portal, "dock")
    admin = portal.as_user("admin")
    admin.get("/admin")
    admin.post_form("/admin/projects/dock/decide", {"action": "approve"})
    page = admin.get("/admin")
    assert "1 requested, 1 approved but not active yet." in said(page)
    assert re.search(r'id="count-active">3<', page.text)
    assert re.search(r'id="count-requested">1<', page.text)
    assert ProjectState.REQUESTED.value in page.text
