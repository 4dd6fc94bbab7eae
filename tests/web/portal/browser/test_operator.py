"""The operator in a real browser: the utilization charts are drawn (SVG with a summary
for screen readers); a node is drained with a reason from the nodes page and returned to
service, the page and the stored node following; the queue and idle pages open from the
operators' navigation."""

from __future__ import annotations

import re
import time

import httpx
from playwright.sync_api import Page, expect

from tests.web.portal.browser.conftest import LiveServer, screenshot, sign_in
from web.db import read_session, write_session
from web.models import Node, Role
from web.services.auth import Principal
from web.services.nodes import issue_node_token

GIB = 1024**3


def agent_reports(live: LiveServer, node: str, gpus: int, utilization: list[float]) -> None:
    """The node's agent reports its GPUs over HTTP, once per figure (a second apart)."""
    with write_session(live.pool.engine) as session:
        admin = Principal("admin", Role.ADMIN)
        token = issue_node_token(session, admin, node, "browser tests", time.time()).token
    start = time.time() - len(utilization)
    reports = [
        {
            "boot": "0be0c0de",
            "seq": seq,
            "at": start + seq,
            "reader": "simulated",
            "gpus": [
                {
                    "index": i,
                    "uuid": f"GPU-{node}-{i}",
                    "name": "NVIDIA A100",
                    "util_gpu_pct": util,
                    "mem_used_bytes": 20 * GIB,
                    "mem_total_bytes": 80 * GIB,
                    "temp_c": 55.0,
                    "ecc_uncorrected": 0,
                }
                for i in range(gpus)
            ],
        }
        for seq, util in enumerate(utilization, start=1)
    ]
    answer = httpx.post(
        f"{live.url}/api/v1/agents/reports",
        json={"node": node, "reports": reports},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text


def node_row(live: LiveServer, name: str) -> tuple[str, str]:
    with read_session(live.pool.engine) as session:
        node = session.get(Node, name)
        assert node is not None
        return node.state, node.state_reason


def test_the_utilization_charts(page: Page) -> None:
    sign_in(page, "ops")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Operations").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Pool utilization")
    charts = page.locator(".chart-card svg")
    expect(charts.first).to_be_visible()
    for i in range(charts.count()):
        expect(charts.nth(i)).to_have_attribute("role", "img")
        expect(charts.nth(i)).not_to_have_attribute("aria-label", "")
    page.get_by_label("Range", exact=True).select_option("7d")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("p.hint")).to_contain_text("Over the last 7 days")
    expect(page.get_by_label("Range", exact=True)).to_have_value("7d")
    assert re.search(r"/ops\?(.+&)?range=7d", page.url)  # a GET form: the view can be linked
    screenshot(page, "ops-utilization")


def test_drain_a_node_and_return_it_to_service(page: Page, live: LiveServer) -> None:
    sign_in(page, "ops")
    page.goto("/ops")
    ops = page.get_by_role("navigation", name="Operations")
    ops.get_by_role("link", name="Nodes").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile("nodes", re.I))
    screenshot(page, "ops-nodes")
    node = page.locator("#node-a-1")
    expect(
        node.get_by_role("list", name="GPUs of a-1").or_(
            node.get_by_text("Its agent has not reported yet.")
        )
    ).to_be_visible()
    node.get_by_label("Reason").fill("fan replacement, ticket 4711")
    node.get_by_role("button", name="Drain").click()

    expect(page.get_by_role("status")).to_have_text("Node a-1 is draining.")
    node = page.locator("#node-a-1")
    expect(node.locator(".state")).to_have_text("draining")
    expect(node).to_contain_text("Why: fan replacement, ticket 4711")
    assert node_row(live, "a-1") == ("draining", "fan replacement, ticket 4711")

    node.get_by_role("button", name="Return to service").click()
    expect(page.get_by_role("status")).to_have_text("Node a-1 is back in service.")
    expect(page.locator("#node-a-1 .state")).to_have_text("up")
    assert node_row(live, "a-1")[0] == "up"


def test_a_node_s_gpus_as_its_agent_reported_them(page: Page, live: LiveServer) -> None:
    agent_reports(live, "a-0", 4, [40.0, 87.0])
    sign_in(page, "ops")
    page.goto("/ops/nodes?q=a-0")
    grid = page.locator("#node-a-0").get_by_role("list", name="GPUs of a-0")
    expect(grid.get_by_role("listitem")).to_have_count(4)
    expect(grid.get_by_role("listitem").first).to_contain_text("87% busy")
    expect(grid.get_by_role("listitem").first).to_contain_text("55 °C")
    expect(page.locator("#node-a-0")).not_to_contain_text("Last heartbeat: \u2013")
    page.locator("#node-a-0").get_by_role("link", name="a-0").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("a-0")
    screenshot(page, "ops-node")


def test_the_queue_and_the_idle_allocations(page: Page) -> None:
    sign_in(page, "ops")
    page.goto("/ops")
    ops = page.get_by_role("navigation", name="Operations")
    ops.get_by_role("link", name="Queue").click()
    expect(page).to_have_url(page.url.split("/ops")[0] + "/ops/queue")
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    screenshot(page, "ops-queue")
    page.get_by_role("navigation", name="Operations").get_by_role(
        "link", name="Idle allocations"
    ).click()
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    screenshot(page, "ops-idle")
