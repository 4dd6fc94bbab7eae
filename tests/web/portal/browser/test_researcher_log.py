"""A job's live log in a real browser: the job page's script (static/portal.js) appends what
the log route sends from where the page's log ends, asks again while an answer leaves
more, goes on to the next attempt's log when one ends and the job had another, and stops
once the job is over (or the session is); the job's state and reason follow in place.

The browser pool's dispatcher runs nothing, so it keeps no output: the log route and the
state route are answered here (Playwright's routing), in the order a job that ran twice
would answer them, while the page is the server's own."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, Route, expect

from tests.web.portal.browser.conftest import LiveServer, screenshot, sign_in

LOGS: dict[tuple[int, int], str] = {  # (attempt, offset) -> what follows there
    (1, 0): "epoch 1\n",
    (1, 8): "epoch 2\n",
    (2, 0): "resumed from the checkpoint\n",
}
FOLLOW_MS = 40_000


@pytest.fixture
def local_logs(live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The job page asks a dispatcher that keeps logs (there are none yet: it shows an
    empty log and follows it) instead of saying that this one runs nothing."""
    settings = live.pool.settings.model_copy(update={"dispatcher": "local"})
    monkeypatch.setattr(live.pool, "settings", settings)
    yield


def test_the_job_page_follows_the_log_across_attempts(
    page: Page, live: LiveServer, local_logs: None
) -> None:
    sign_in(page, "alice")
    page.goto("/submit")
    page.get_by_label("Command").fill(f"python train.py --log {uuid.uuid4().hex[:8]}")
    page.get_by_role("button", name="Submit", exact=True).click()
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])
    asked: list[str] = []
    phase: dict[str, Any] = {"attempt": 1, "state": "running", "final": False}

    def state(route: Route) -> None:
        body = {
            "id": job_id,
            "state": phase["state"],
            "state_label": phase["state"],
            "final": phase["final"],
            "attempt": phase["attempt"],
            "reason_code": "",
            "headline": "",
            "reason": "",
            "est_start": "",
            "est_start_text": "",
            "outcome": "",
        }
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    def log(route: Route) -> None:
        query = dict(
            part.split("=") for part in route.request.url.split("?", 1)[1].split("&") if part
        )
        asked.append(route.request.url.split("?", 1)[1])
        attempt = int(query.get("attempt", phase["attempt"]))
        offset = int(query.get("offset", 0))
        text = LOGS.get((attempt, offset), "")
        size = sum(len(t) for (a, _), t in LOGS.items() if a == attempt)
        ended = attempt < phase["attempt"] or bool(phase["final"])
        if attempt == 1 and offset >= size and phase["attempt"] == 1:
            phase["attempt"] = 2  # attempt 1 read to its end: it was preempted, 2 runs
            ended = True
        elif attempt == 2 and offset >= size:
            phase.update(state="succeeded", final=True)
        headers: dict[str, Any] = {
            "X-Gpupool-Attempt": str(attempt),
            "X-Gpupool-Job-Attempt": str(phase["attempt"]),
            "X-Gpupool-Job-State": str(phase["state"]),
            "X-Gpupool-Log-End": str(offset + len(text)),
            "X-Gpupool-Log-Size": str(size),
            "X-Gpupool-Log-Done": "1" if ended else "0",
        }
        route.fulfill(
            status=200, content_type="text/plain; charset=utf-8", headers=headers, body=text
        )

    page.route(re.compile(rf"/jobs/{job_id}/state\.json$"), state)
    page.route(re.compile(rf"/jobs/{job_id}/log\?"), log)
    page.goto(f"/jobs/{job_id}")
    log_box = page.locator("#job-log")
    expect(log_box).to_be_visible()
    expect(page.locator("#job-state")).to_have_attribute("data-state", "running")
    expect(log_box).to_contain_text("epoch 1\nepoch 2\n", timeout=FOLLOW_MS)
    expect(page.locator("#job-log-empty")).to_be_hidden()
    expect(log_box).to_contain_text("resumed from the checkpoint", timeout=FOLLOW_MS)
    expect(page.locator("#job-state")).to_have_attribute(
        "data-state", "succeeded", timeout=FOLLOW_MS
    )
    expect(page.get_by_text("Following the job: this page updates by itself.")).to_be_hidden(
        timeout=FOLLOW_MS
    )
    text = log_box.inner_text()
    assert text.index("epoch 2") < text.index("Attempt 2") < text.index("resumed from")
    assert text.count("epoch 1") == 1  # nothing asked twice from the same place
    screenshot(page, "job-log-followed")
    count = len(asked)
    page.wait_for_timeout(4500)  # two polls' worth: the script has stopped asking
    assert len(asked) == count
    assert "attempt=2" in asked[-1]


def test_the_job_page_stops_following_once_signed_out(page: Page, live: LiveServer) -> None:
    sign_in(page, "alice")
    page.goto("/submit")
    page.get_by_label("Command").fill(f"python train.py --wait {uuid.uuid4().hex[:8]}")
    page.get_by_role("button", name="Submit", exact=True).click()
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])
    asked: list[str] = []
    page.on(
        "request",
        lambda request: asked.append(request.url) if "/state.json" in request.url else None,
    )
    following = page.get_by_text("Following the job: this page updates by itself.")
    expect(following).to_be_visible()
    page.wait_for_timeout(2500)  # one poll, still signed in
    assert asked, "the page did not follow its job"
    other = page.context.new_page()  # the same browser signs out in another tab
    other.goto("/")
    other.get_by_role("button", name="Sign out").click()
    other.wait_for_url(re.compile(r"/signin"))
    expect(following).to_be_hidden(timeout=FOLLOW_MS)  # its next poll met the sign-in page
    count = len(asked)
    page.wait_for_timeout(4500)  # two polls' worth: it has stopped asking
    assert len(asked) == count
    assert f"/jobs/{job_id}/state.json" in asked[-1]
