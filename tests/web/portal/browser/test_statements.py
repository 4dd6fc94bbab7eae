"""Statements in a real browser: a project's statement downloaded as JSON from the
statements page (a file, as the browser saves it) verifies as valid on /verify, uploaded
as a file; a copy with one figure changed is refused there, saying what fails."""

from __future__ import annotations

import json
import time
from pathlib import Path

from playwright.sync_api import Page, expect
from sqlalchemy import func
from sqlmodel import select

from tests.web.portal.browser.conftest import LiveServer, screenshot, sign_in
from web.db import read_session
from web.enums import FINAL_JOB_STATE_VALUES
from web.models import Job
from web.services.statements import to_json


def wait_until_no_job_runs(live: LiveServer, project: str) -> None:
    """A job ending appends its charge to the project's ledger, and a statement made before
    it is then rightly not valid (an entry of its period left out): let them end first."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with read_session(live.pool.engine) as session:
            unfinished = session.exec(
                select(func.count())
                .select_from(Job)
                .where(Job.project == project)
                .where(Job.state.not_in(FINAL_JOB_STATE_VALUES))  # type: ignore[attr-defined]
            ).one()
        if unfinished == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"{project}'s jobs did not end in 60 s")


def download_statement(page: Page, project: str, fmt: str, folder: Path) -> Path:
    page.goto("/statements")
    expect(page.get_by_role("heading", level=1)).to_have_text("Usage statements")
    page.get_by_label("Project").select_option(project)
    page.get_by_label("Format").select_option(fmt)
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download").click()
    download = download_info.value
    path = folder / download.suggested_filename
    download.save_as(path)
    return path


def verify_file(page: Page, path: Path) -> None:
    page.goto("/verify")
    page.get_by_label("Statement file (JSON)").set_input_files(path)
    page.get_by_role("button", name="Verify", exact=True).click()


def test_download_a_statement_and_verify_it(page: Page, live: LiveServer, tmp_path: Path) -> None:
    wait_until_no_job_runs(live, "p1")
    sign_in(page, "alice")
    page.goto("/statements")
    screenshot(page, "statements")
    path = download_statement(page, "p1", "json", tmp_path)
    assert path.suffix == ".json" and "p1" in path.name
    statement = json.loads(path.read_text())
    assert statement["project"] == "p1"
    assert statement["signature"]

    verify_file(page, path)
    verdict = page.locator("#verify-result")
    expect(verdict).to_have_class("verdict valid")
    expect(verdict.get_by_role("heading")).to_have_text("Valid")
    expect(verdict).to_contain_text(f"The statement of p1 for {statement['period']}")
    screenshot(page, "verify-valid")

    tampered = tmp_path / "tampered.json"
    statement["credits"]["granted"] = statement["credits"]["granted"] + 5000
    tampered.write_bytes(to_json(statement))  # in the signed form: only a figure differs
    verify_file(page, tampered)
    expect(verdict).to_have_class("verdict invalid")
    expect(verdict.get_by_role("heading")).to_have_text("Not valid")
    problems = page.locator("#verify-problems li")
    expect(problems.first).to_be_visible()
    expect(page.locator("#verify-problems")).to_contain_text("signature")
    expect(page.locator("#verify-problems")).to_contain_text("credits.granted")
    screenshot(page, "verify-tampered")


def test_the_statement_in_its_other_formats(page: Page, tmp_path: Path) -> None:
    sign_in(page, "alice")
    csv = download_statement(page, "p1", "csv", tmp_path)
    assert csv.suffix == ".csv"
    assert "# signature" in csv.read_text()
    html = download_statement(page, "p1", "html", tmp_path)
    assert html.suffix == ".html"
    assert "Signed by the pool" in html.read_text()


def test_verify_works_signed_out(page: Page, live: LiveServer, tmp_path: Path) -> None:
    """Anyone may verify: a funding agency has no account here."""
    wait_until_no_job_runs(live, "p1")
    sign_in(page, "alice")
    path = download_statement(page, "p1", "json", tmp_path)
    page.get_by_role("button", name="Sign out").click()
    verify_file(page, path)
    expect(page.locator("#verify-result").get_by_role("heading")).to_have_text("Valid")
    expect(page.locator("header .who")).to_have_count(0)
