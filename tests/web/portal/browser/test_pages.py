"""Every main page in a real browser, as the role it is for: it answers 200 with its
heading and no script error, and a full-page screenshot of it is kept as a test artifact
(test-artifacts/screenshots/page-*.png). A role's pages are closed to the other roles."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.web.portal.browser.conftest import screenshot, sign_in

PAGES = [
    ("alice", "/", "dashboard"),
    ("alice", "/jobs", "jobs"),
    ("alice", "/submit", "submit"),
    ("alice", "/statements", "statements"),
    ("alice", "/verify", "verify"),
    ("alice", "/requests/new", "request-project"),
    ("alice", "/projects/p1", "project"),
    ("alice", "/account", "account"),
    ("admin", "/admin", "admin"),
    ("admin", "/admin/requests", "admin-requests"),
    ("admin", "/admin/projects", "admin-projects"),
    ("admin", "/admin/projects/p1", "admin-project"),
    ("admin", "/admin/sectors", "admin-sectors"),
    ("admin", "/admin/users", "admin-users"),
    ("admin", "/admin/users/alice", "admin-user"),
    ("admin", "/admin/changes", "admin-changes"),
    ("ops", "/ops", "ops"),
    ("ops", "/ops/nodes", "ops-nodes"),
    ("ops", "/ops/nodes/h-0", "ops-node"),
    ("ops", "/ops/queue", "ops-queue"),
    ("ops", "/ops/idle", "ops-idle"),
]


@pytest.mark.parametrize(("user", "path", "name"), PAGES, ids=[p[1] for p in PAGES])
def test_each_main_page(page: Page, user: str, path: str, name: str) -> None:
    sign_in(page, user)
    answer = page.goto(path)
    assert answer is not None and answer.status == 200, path
    heading = page.get_by_role("heading", level=1)
    expect(heading).to_be_visible()
    expect(heading).not_to_have_text("Something went wrong")
    expect(page).to_have_title(re.compile(r".+ · gpupool$"))
    screenshot(page, f"page-{name}")


@pytest.mark.parametrize(
    ("user", "path"),
    [("alice", "/admin"), ("alice", "/ops/nodes"), ("ops", "/admin/users"), ("bob", "/admin")],
)
def test_a_role_s_pages_are_closed_to_the_others(page: Page, user: str, path: str) -> None:
    sign_in(page, user)
    answer = page.goto(path)
    assert answer is not None and answer.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    expect(page.get_by_text("Your role does not allow this page.")).to_be_visible()
