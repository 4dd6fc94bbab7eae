"""Jobs in a real browser: a job submitted from the form is admitted, runs and succeeds
while its page is open, the page following it by itself (portal.js) without a reload; a
refused form shows its errors in place and keeps what was typed; the jobs list shows the
job; and the pages at a phone's width."""

from __future__ import annotations

import re
import uuid

from playwright.sync_api import Page, expect
from sqlmodel import select

from tests.web.portal.browser.conftest import (
    PHONE,
    RUN_S,
    WAIT_MS,
    LiveServer,
    screenshot,
    sign_in,
)
from web.db import read_session
from web.models import Job

GPUS = re.compile(r"^GPUs")  # the label, with the required field's mark after it


def stored_jobs(live: LiveServer, entrypoint: str) -> list[Job]:
    with read_session(live.pool.engine) as session:
        rows = session.exec(select(Job).where(Job.entrypoint == entrypoint)).all()
        return [Job.model_validate(j.model_dump()) for j in rows]


def test_submit_a_job_and_watch_it_run_to_the_end(page: Page, live: LiveServer) -> None:
    command = f"python train.py --run {uuid.uuid4().hex[:8]}"
    sign_in(page, "alice")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Submit").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Submit a job")
    page.get_by_label("Project").select_option("p1")
    page.get_by_label("Command").fill(command)
    page.get_by_label(GPUS).fill("2")
    page.get_by_label("GPU flavor").select_option("H100")
    page.get_by_label("Time limit").fill("30m")
    page.get_by_label("Name", exact=True).fill("browser-run")
    screenshot(page, "submit")
    page.get_by_role("button", name="Submit", exact=True).click()

    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    (job,) = stored_jobs(live, command)
    assert page.url.endswith(f"/jobs/{job.id}")
    expect(page.get_by_role("status")).to_have_text(f"Job {job.id} is queued.")
    page.evaluate("() => { window.stayedOnThePage = true; }")  # gone if the page reloads
    state = page.locator("#job-state")
    expect(state).to_have_attribute("data-state", re.compile("queued|admitted|running"))
    expect(page.get_by_text("Following the job: this page updates by itself.")).to_be_visible()
    expect(state).to_have_attribute("data-state", "running", timeout=WAIT_MS)
    expect(state).to_have_text("running")
    # The facts follow the state: the job's allocation, on one of the H100 nodes.
    facts = page.locator("#job-facts")
    expect(facts.get_by_role("cell", name=re.compile(r"^h-\d+$"))).to_have_count(1)
    screenshot(page, "job-running")
    expect(state).to_have_attribute("data-state", "succeeded", timeout=(RUN_S + 15) * 1000)
    expect(state).to_have_text("succeeded")
    ended = facts.locator("dt", has_text="Ended").locator("xpath=following-sibling::dd[1]")
    expect(ended).not_to_have_text("\u2013")  # a time, no longer the dash of "not yet"
    expect(page.get_by_text("Following the job: this page updates by itself.")).to_be_hidden()
    assert page.evaluate("() => window.stayedOnThePage === true")  # followed, not reloaded
    screenshot(page, "job-succeeded")

    (job,) = stored_jobs(live, command)
    assert (job.state, job.gpus, job.flavor_used, job.attempt) == ("succeeded", 2, "H100", 1)
    assert job.started_at is not None and job.ended_at is not None

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Jobs").click()
    row = page.get_by_role("row").filter(has_text="browser-run").filter(has_text=str(job.id))
    expect(row).to_contain_text("succeeded")
    screenshot(page, "jobs")


def expect_error_on(page: Page, name: str) -> None:
    """The field is marked invalid, its error shown beside it and tied to it for screen
    readers."""
    box = page.locator(f"#f-{name}")
    expect(box).to_have_attribute("aria-invalid", "true")
    expect(box).to_have_attribute("aria-describedby", re.compile(f"e-{name}"))
    expect(page.locator(f"#e-{name}")).to_be_visible()
    expect(page.locator(f"#e-{name}")).not_to_be_empty()


def test_a_refused_submission_shows_its_errors_in_place(page: Page, live: LiveServer) -> None:
    command = f"python train.py --refused {uuid.uuid4().hex[:8]}"
    sign_in(page, "bob")
    page.goto("/submit")
    page.get_by_label("Command").fill(command)
    page.get_by_label(GPUS).fill("0")
    page.get_by_label("Time limit").fill("2x")
    page.get_by_label("Working directory").fill("/data/bob/run")
    page.get_by_role("button", name="Submit", exact=True).click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Submit a job")
    expect_error_on(page, "gpus")
    expect_error_on(page, "time")
    expect(page.get_by_label("Command")).to_have_value(command)
    expect(page.get_by_label(GPUS)).to_have_value("0")
    expect(page.get_by_label("Time limit")).to_have_value("2x")
    expect(page.get_by_label("Working directory")).to_have_value("/data/bob/run")
    screenshot(page, "submit-refused")
    assert stored_jobs(live, command) == []

    page.get_by_label(GPUS).fill("1")  # one fixed; the time is still wrong
    page.get_by_role("button", name="Submit", exact=True).click()
    expect_error_on(page, "time")
    expect(page.locator("#f-gpus")).not_to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Time limit")).to_have_value("2x")
    assert stored_jobs(live, command) == []

    page.get_by_label("Time limit").fill("10m")  # both fixed, in the same form: it goes
    page.get_by_role("button", name="Submit", exact=True).click()
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    (job,) = stored_jobs(live, command)
    assert (job.gpus, job.max_runtime_s, job.runtime_env) == (
        1,
        600.0,
        {"working_dir": "/data/bob/run"},
    )


def test_the_pages_at_a_phone_width(page: Page, live: LiveServer) -> None:
    page.set_viewport_size(PHONE)
    sign_in(page, "alice")
    for path, name in (
        ("/", "phone-dashboard"),
        ("/jobs", "phone-jobs"),
        ("/submit", "phone-submit"),
    ):
        page.goto(path)
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        width: int = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= PHONE["width"], (path, width)  # tables scroll inside, not the page
        screenshot(page, name)
