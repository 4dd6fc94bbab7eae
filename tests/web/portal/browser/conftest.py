"""The portal in a real browser: Playwright for Python driving Debian's Chromium
(/usr/bin/chromium; Playwright never downloads a browser of its own here) against the app
served over real HTTP.

One browser for the whole session, one server for the whole session: uvicorn in a thread
of this process on a free loopback port, over a SQLite pool seeded as tests/web/conftest.py
seeds it (users admin, ops, alice, bob, dave, carol, erin; projects p1 p2 p3; flavors H100
and A100), every user with the password `password-<name>`. The scheduling loop runs with
the in-process dispatcher on the system clock, so a submitted job is admitted, "runs" for
RUN_S seconds and succeeds. Tests keep out of each other's way by what they create
(their own projects, jobs, ...), as the tests over `module_api` do.

Screenshots go to test-artifacts/screenshots/ at the repository's root (gitignored; CI
keeps it as an artifact). Without /usr/bin/chromium every test here is skipped, saying so.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from scheduler.runtime.clock import SystemClock
from scheduler.runtime.fake import InProcessDispatcher
from tests.web.conftest import POOL_TOML, USERS, served_in_thread
from tests.web.portal.conftest import password_of, seed_passwords
from web.bench import free_port
from web.db import make_engine, migrate, write_session
from web.pool import Pool, build_pool
from web.services.seed import seed_pool
from web.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[4]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
RUN_S = 6.0  # how long a job "runs" on the in-process dispatcher
PHONE = {"width": 390, "height": 844}
WAIT_MS = 15_000  # the longest a test waits for something to appear on a page


@dataclass
class LiveServer:
    """The portal over real HTTP, and the pool behind it (to check what was stored)."""

    url: str
    pool: Pool
    dispatcher: InProcessDispatcher


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(
            f"browser tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium "
            "fonts-noto-cjk; .ci/run installs it)"
        )
    with sync_playwright() as playwright:
        browser = _launch(playwright)
        try:
            yield browser
        finally:
            browser.close()


def _launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("browser-pool")
    port = free_port()
    settings = Settings(
        data_dir=tmp / "data",
        port=port,
        dispatcher="simulated",
        simulated_run_s=RUN_S,
        loop_interval_s=0.5,
        max_array_size=50,
        # A node whose agent reported once (tests do) is not taken down while the session
        # runs, which would end its jobs.
        agent_heartbeat_timeout_s=24 * 3600.0,
    )
    toml = tmp / "pool.toml"
    toml.write_text(POOL_TOML)
    engine = make_engine(settings)
    migrate(engine)
    clock = SystemClock()
    with write_session(engine) as session:
        seed_pool(session, toml, clock.now())
        session.flush()
        seed_passwords(session, USERS)
    dispatcher = InProcessDispatcher(clock, run_for=lambda order: RUN_S)
    pool = build_pool(settings, dispatcher, clock=clock, engine=engine)
    try:
        with served_in_thread(pool, port, "portal server") as url:
            yield LiveServer(url, pool, dispatcher)
    finally:
        engine.dispose()


def open_context(
    browser: Browser,
    live: LiveServer,
    language: str = "en",
    viewport: dict[str, int] | None = None,
) -> BrowserContext:
    """A fresh browser profile (no cookies) asking for `language`, at desktop width unless
    a viewport is given."""
    context = browser.new_context(
        base_url=live.url,
        locale={"en": "en-US", "ko": "ko-KR"}[language],
        extra_http_headers={"Accept-Language": language},
        viewport=viewport or {"width": 1280, "height": 900},
        accept_downloads=True,
    )
    context.set_default_timeout(WAIT_MS)
    return context


@pytest.fixture
def context(browser: Browser, live: LiveServer) -> Iterator[BrowserContext]:
    """A fresh browser profile in English."""
    context = open_context(browser, live)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    """A tab of `context`; the test fails if a script on any page it opened threw."""
    page = context.new_page()
    thrown: list[str] = []
    page.on("pageerror", lambda error: thrown.append(f"{page.url}: {error}"))
    yield page
    assert not thrown, f"scripts threw on the pages: {thrown}"


def sign_in(page: Page, user: str) -> None:
    """Sign in through the form, as a person does; lands on the dashboard."""
    page.goto("/signin")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password", exact=True).fill(password_of(user))
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(lambda url: not url.endswith("/signin"))


def screenshot(page: Page, name: str) -> Path:
    """A full-page PNG of what the page shows now, kept as a test artifact."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
