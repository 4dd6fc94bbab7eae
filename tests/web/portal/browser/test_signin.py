"""Signing in, in a real browser: each role sees its own entries in the navigation and
not the others'; the sign-in form works from the keyboard alone; a wrong password is
refused in place, keeping the user name typed."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.web.portal.browser.conftest import LiveServer, screenshot, sign_in
from tests.web.portal.conftest import password_of

EVERYONE = ["Dashboard", "Jobs", "Submit", "Statements", "Request a project"]


@pytest.mark.parametrize(
    ("user", "role", "sees", "does_not_see"),
    [
        ("alice", "researcher", EVERYONE, ["Administration", "Operations"]),
        ("admin", "admin", [*EVERYONE, "Administration", "Operations"], []),
        ("ops", "operator", [*EVERYONE, "Operations"], ["Administration"]),
    ],
)
def test_each_role_sees_its_own_navigation(
    page: Page, user: str, role: str, sees: list[str], does_not_see: list[str]
) -> None:
    sign_in(page, user)
    expect(page).to_have_title(re.compile("Dashboard"))
    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link").all_inner_texts() == sees
    for entry in does_not_see:
        expect(nav.get_by_role("link", name=entry)).to_have_count(0)
    expect(page.locator("header .who")).to_have_text(f"{user} ({role})")
    screenshot(page, f"dashboard-{role}")


def focused(page: Page) -> str:
    """The name (or, failing that, the text) of the element that has the keyboard's focus."""
    name: str = page.evaluate(
        "() => document.activeElement.name || document.activeElement.textContent.trim()"
    )
    return name


def test_sign_in_with_the_keyboard_only(page: Page, live: LiveServer) -> None:
    page.goto("/signin")
    screenshot(page, "signin")
    for _ in range(20):  # from the top of the page, Tab until the user name field
        page.keyboard.press("Tab")
        if focused(page) == "user":
            break
    assert focused(page) == "user"
    page.keyboard.type("bob")
    page.keyboard.press("Tab")
    assert focused(page) == "password"
    page.keyboard.type(password_of("bob"))
    page.keyboard.press("Enter")
    expect(page).to_have_url(live.url + "/")
    expect(page.locator("header .who")).to_have_text("bob (researcher)")
    expect(page.get_by_role("heading", name="My projects")).to_be_visible()


def test_a_wrong_password_is_refused_in_place_keeping_the_name(page: Page) -> None:
    page.goto("/signin")
    page.get_by_label("User name").fill("carol")
    page.get_by_label("Password", exact=True).fill("not-her-password")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_text("Wrong user name or password.")).to_be_visible()
    expect(page.get_by_label("User name")).to_have_value("carol")
    expect(page.get_by_label("Password", exact=True)).to_have_value("")
    expect(page.locator("header .who")).to_have_count(0)  # not signed in


def test_signing_out_ends_the_session(page: Page, live: LiveServer) -> None:
    sign_in(page, "erin")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/signin$"))
    page.goto("/account")
    expect(page).to_have_url(re.compile(r"/signin\?next=%2Faccount$"))
