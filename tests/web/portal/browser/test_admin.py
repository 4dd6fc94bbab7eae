"""The administrator in a real browser, beside a researcher in a browser of their own: a
project requested through the researcher's form is approved with a note from the requests
page, and the researcher sees the decision; a quota changed on the project's admin page
moves the researcher's gauge on their dashboard; a quota refused (limit under the
guarantee) is shown in place, keeping what was typed, changing nothing."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, Page, expect
from sqlmodel import select

from tests.web.portal.browser.conftest import LiveServer, open_context, screenshot, sign_in
from web.db import read_session, write_session
from web.models import Change, MemberRole, Membership, Project, Quota


@contextmanager
def signed_in(browser: Browser, live: LiveServer, user: str) -> Iterator[Page]:
    """A browser of the user's own (its own cookies), signed in."""
    context = open_context(browser, live)
    try:
        page = context.new_page()
        sign_in(page, user)
        yield page
    finally:
        context.close()


def project_row(live: LiveServer, name: str) -> Project:
    with read_session(live.pool.engine) as session:
        project = session.get(Project, name)
        assert project is not None
        return Project.model_validate(project.model_dump())


def quota_of(live: LiveServer, project: str, flavor: str) -> tuple[int, int]:
    with read_session(live.pool.engine) as session:
        quota = session.get(Quota, (project, flavor))
        assert quota is not None
        return quota.guaranteed, quota.limit


def changes_of(live: LiveServer, project: str) -> list[tuple[str, str, str, str]]:
    with read_session(live.pool.engine) as session:
        rows = session.exec(
            select(Change).where(Change.subject == f"project:{project}").order_by(Change.id)
        ).all()
        return [(c.field, c.old, c.new, c.note) for c in rows]


def active_project_of_alice(live: LiveServer, quotas: dict[str, tuple[int, int]]) -> str:
    """A project of alice's own for this test alone, straight into the database."""
    name = f"gauge-{uuid.uuid4().hex[:6]}"
    with write_session(live.pool.engine) as session:
        session.add(
            Project(
                name=name,
                title="Gauges",
                sector="academia",
                state="active",
                pi="alice",
                created_at=time.time(),
            )
        )
        session.flush()
        session.add(Membership(project=name, user="alice", role=MemberRole.PI.value))
        for flavor, (guaranteed, limit) in quotas.items():
            session.add(Quota(project=name, flavor=flavor, guaranteed=guaranteed, limit=limit))
    live.pool.identities_changed()
    live.pool.pool_changed()
    return name


def test_approve_a_project_request(browser: Browser, live: LiveServer) -> None:
    name = f"req-{uuid.uuid4().hex[:6]}"
    with signed_in(browser, live, "alice") as alice:
        alice.get_by_role("navigation", name="Main").get_by_role(
            "link", name="Request a project"
        ).click()
        alice.get_by_label("Short name").fill(name)
        alice.get_by_label(re.compile("^Title")).fill("Protein folding at scale")
        alice.get_by_label("Sector").select_option("academia")
        alice.get_by_label("GPUs needed at once").fill("16")
        alice.get_by_label("GPU-hours in all").fill("20000")
        alice.get_by_label("Justification").fill("Folding 10,000 proteins for the atlas.")
        screenshot(alice, "request-project")
        alice.get_by_role("button", name="Send the request").click()
        alice.wait_for_url(re.compile(f"/projects/{name}$"))
        expect(alice.get_by_role("heading", level=1)).to_contain_text(name)
        expect(alice.locator("main .state").first).to_have_text("requested")
        assert project_row(live, name).state == "requested"

        with signed_in(browser, live, "admin") as admin:
            admin.get_by_role("navigation", name="Main").get_by_role(
                "link", name="Administration"
            ).click()
            admin.get_by_role("navigation", name="Administration").get_by_role(
                "link", name="Project requests"
            ).click()
            request = admin.locator(f"#request-{name}")
            expect(request).to_contain_text("Protein folding at scale")
            expect(request).to_contain_text("Folding 10,000 proteins for the atlas.")
            screenshot(admin, "admin-requests")
            request.get_by_role("link", name="Decide").click()
            admin.wait_for_url(re.compile(f"/admin/projects/{name}"))
            decide = admin.locator("#decide")
            decide.get_by_label("Note").fill("Approved by the allocation committee, round 3.")
            decide.get_by_role("button", name="Approve").click()

            expect(admin.get_by_role("status")).to_be_visible()
            expect(admin.get_by_role("heading", level=1)).to_contain_text("approved")
            expect(admin.locator("#decision-note")).to_have_text(
                "Approved by the allocation committee, round 3."
            )
            history = admin.locator("#project-history")
            expect(history).to_contain_text("Approved by the allocation committee, round 3.")
            screenshot(admin, "admin-project")

        stored = project_row(live, name)
        assert (stored.state, stored.decided_by) == ("approved", "admin")
        assert stored.decision_note == "Approved by the allocation committee, round 3."
        assert any(
            new == "approved" and "round 3" in note for _, _, new, note in changes_of(live, name)
        )
        alice.reload()
        expect(alice.locator("main .state").first).to_have_text("approved")
        expect(alice.locator("main")).to_contain_text("Approved by the allocation committee")


def test_a_quota_change_moves_the_researcher_s_gauge(browser: Browser, live: LiveServer) -> None:
    name = active_project_of_alice(live, {"H100": (2, 4)})
    with signed_in(browser, live, "alice") as alice:
        gauge = alice.locator(f"#gauge-{name}-H100")
        expect(gauge).to_contain_text("0 / 4 GPUs")
        expect(gauge).to_contain_text("limit 4, guaranteed 2")

        with signed_in(browser, live, "admin") as admin:
            admin.goto(f"/admin/projects/{name}")
            quota = admin.locator("#quota-H100")
            quota.get_by_label(re.compile("^Guaranteed GPUs")).fill("6")
            quota.get_by_label(re.compile(r"^Limit \(GPUs at most\)")).fill("12")
            quota.get_by_label("Note").fill("grew for the spring runs")
            quota.get_by_role("button", name="Set the H100 quota").click()
            expect(admin.get_by_role("status")).to_be_visible()
            expect(admin.locator(f"#gauge-{name}-H100")).to_contain_text("0 / 12 GPUs")
            expect(admin.locator("#project-history")).to_contain_text("grew for the spring runs")
        assert quota_of(live, name, "H100") == (6, 12)

        alice.reload()
        expect(gauge).to_contain_text("0 / 12 GPUs")
        expect(gauge).to_contain_text("limit 12, guaranteed 6")
        screenshot(alice, "dashboard-after-quota")


def test_a_refused_quota_is_shown_in_place(browser: Browser, live: LiveServer) -> None:
    name = active_project_of_alice(live, {"A100": (4, 8)})
    with signed_in(browser, live, "admin") as admin:
        admin.goto(f"/admin/projects/{name}")
        quota = admin.locator("#quota-A100")
        quota.get_by_label(re.compile("^Guaranteed GPUs")).fill("10")
        quota.get_by_label(re.compile(r"^Limit \(GPUs at most\)")).fill("3")
        quota.get_by_role("button", name="Set the A100 quota").click()

        quota = admin.locator("#quota-A100")
        limit = quota.get_by_label(re.compile(r"^Limit \(GPUs at most\)"))
        expect(limit).to_have_attribute("aria-invalid", "true")
        expect(quota.locator(".error").first).to_contain_text("at least the guarantee")
        expect(quota.get_by_label(re.compile("^Guaranteed GPUs"))).to_have_value("10")
        expect(limit).to_have_value("3")
        screenshot(admin, "admin-quota-refused")
    assert quota_of(live, name, "A100") == (4, 8)
