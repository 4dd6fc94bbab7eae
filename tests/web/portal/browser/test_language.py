"""Switching the portal's language in a real browser: the chooser in the header turns the
page into Korean (its text and <html lang>) and back, and the choice stays with the
session from page to page."""

from __future__ import annotations

from playwright.sync_api import Browser, Page, expect

from tests.web.portal.browser.conftest import (
    PHONE,
    LiveServer,
    open_context,
    screenshot,
    sign_in,
)
from web.portal.i18n import translations

KO = translations("ko")


def test_switch_to_korean_and_back(page: Page) -> None:
    sign_in(page, "alice")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", level=1)).to_have_text("My projects")

    page.get_by_label("Language").select_option("ko")
    page.get_by_role("button", name="Change", exact=True).click()
    expect(page.locator("html")).to_have_attribute("lang", "ko")
    korean_heading = KO.gettext("My projects")
    assert korean_heading != "My projects"  # the catalog does translate it
    expect(page.get_by_role("heading", level=1)).to_have_text(korean_heading)
    nav = page.get_by_role("navigation", name=KO.gettext("Main"))
    expect(nav.get_by_role("link", name=KO.gettext("Jobs"), exact=True)).to_be_visible()
    screenshot(page, "dashboard-ko")

    page.goto("/account")  # the choice holds on the next page
    expect(page.locator("html")).to_have_attribute("lang", "ko")

    page.get_by_label(KO.gettext("Language")).select_option("en")
    page.get_by_role("button", name=KO.gettext("Change"), exact=True).click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    assert page.url.endswith("/account")  # back on the page it was on
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def test_korean_by_accept_language_at_phone_width(browser: Browser, live: LiveServer) -> None:
    with open_context(browser, live, "ko", viewport=PHONE) as context:
        page = context.new_page()
        page.goto("/signin")
        expect(page.locator("html")).to_have_attribute("lang", "ko")
        expect(page.get_by_role("heading", level=1)).to_have_text(KO.gettext("Sign in"))
        width: int = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= PHONE["width"]  # nothing wider than the phone's screen
        screenshot(page, "signin-phone-ko")
