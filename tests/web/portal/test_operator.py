"""The operators' pages (SQLite and PostgreSQL): who may see them; the utilization
overview from what the agents reported and the loop sampled; nodes with their GPU grid,
down and draining first, filtered and paged; draining with a reason and undraining (and
a bad drain refused in place); a node's page; the queue with its reasons; idle
allocations."""

from __future__ import annotations

import html
import math
import re

import httpx
import pytest
from sqlmodel import select

from tests.web.api.test_agents import Agent, gpu, report, running_job
from tests.web.conftest import Api
from tests.web.portal.conftest import Portal, text_of
from web.db import read_session, write_session
from web.models import Change, GpuMinute, JobUsage, Node, NodeTelemetry, UtilizationMinute
from web.portal.i18n import Formats
from web.services.utilization import sample_minute

PAGES = ["/ops", "/ops/nodes", "/ops/nodes/h-0", "/ops/queue", "/ops/idle"]
NODE_CARD = re.compile(r'<article class="node node-(\w+)" id="node-([^"]+)"')


def shown_nodes(answer: httpx.Response) -> list[str]:
    return [name for _state, name in NODE_CARD.findall(answer.text)]


def shown_jobs(answer: httpx.Response, table: str) -> list[int]:
    body = answer.text.split(f'<table id="{table}">', 1)[1].split("</table>", 1)[0]
    return [int(i) for i in re.findall(r'<tr id="job-(\d+)">', body)]


def set_node(api: Api, name: str, state: str, reason: str = "") -> None:
    with write_session(api.engine) as s:
        node = s.get(Node, name)
        assert node is not None
        node.state, node.state_reason = state, reason
        s.add(node)
    api.changed()


def node_row(api: Api, name: str) -> tuple[str, str]:
    with read_session(api.engine) as s:
        node = s.get(Node, name)
        assert node is not None
        return node.state, node.state_reason


# --- who may see them -----------------------------------------------------------------------------


@pytest.mark.parametrize("user", ["ops", "admin"])
def test_every_page_renders_for_operators_and_admins(portal: Portal, user: str) -> None:
    client = portal.as_user(user)
    for path in PAGES:
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.text)
        assert 'aria-label="Operations"' in answer.text  # the operators' own navigation


@pytest.mark.parametrize("user", ["alice", "bob", "carol"])
def test_researchers_are_refused_every_page_and_form(portal: Portal, user: str) -> None:
    client = portal.as_user(user)
    for path in PAGES:
        answer = client.get(path)
        assert answer.status_code == 403, path
        assert "Your role does not allow this page." in text_of(answer)
    for action in ("drain", "undrain"):
        answer = client.post_form(f"/ops/nodes/h-0/{action}", {"reason": "mine now"})
        assert answer.status_code == 403
    assert node_row(portal.api, "h-0") == ("up", "")


def test_signed_out_visitors_are_sent_to_sign_in(portal: Portal) -> None:
    answer = portal.anonymous().get("/ops/nodes?state=down")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/signin?next=%2Fops%2Fnodes%3Fstate%3Ddown"


# --- the overview ---------------------------------------------------------------------------------


def one_minute_of_work(portal: Portal) -> int:
    """A job of p1 (academia) holding 2 GPUs of h-0, one of them busy and one idle for a
    whole minute as its agent reports, and the loop's sample of that minute; the clock
    is in the next minute. The minute."""
    api = portal.api
    job = running_job(api, "h-0", gpus=2)
    minute = int(api.clock.now() // 60) + 3
    agent = Agent(api, "h-0")
    for seq, at in enumerate((minute * 60 - 1, minute * 60 + 29, minute * 60 + 59), start=1):
        agent.ok(
            report(
                seq,
                at,
                gpu(0, jobs=[(job, 1)], util_gpu_pct=100.0),
                gpu(1, jobs=[(job, 1)], util_gpu_pct=0.0),
            )
        )
    with write_session(api.engine) as s:
        sample_minute(s, minute)
    api.clock.t = minute * 60 + 70
    return minute


def test_the_overview_shows_the_figures_and_charts_of_what_was_reported(portal: Portal) -> None:
    one_minute_of_work(portal)
    portal.api.submit("carol", project="p2", gpus=3)  # one job waits
    answer = portal.as_user("ops").get("/ops?range=1h")
    assert answer.status_code == 200
    text = text_of(answer)
    for figure in (
        "GPUs up 24 nodes: 4",
        "GPUs down 0 nodes: 0",
        "Allocated now 2 of 24 in service",
        "Busy 1.0 in the last minute",
        "Idle 1.0 in the last minute",
        "Queued jobs 1 GPUs asked for: 3",
    ):
        assert figure in text
    # One chart for the pool, one per flavor, one by sector; each says what it shows.
    for chart_id, summary in (
        (
            "chart-all",
            "All GPUs: on average 2 GPUs allocated, 1 busy and 1 idle, of 24 in service.",
        ),
        (
            "chart-flavor-0",
            "A100: on average 0 GPUs allocated, 0 busy and 0 idle, of 8 in service.",
        ),
        (
            "chart-flavor-1",
            "H100: on average 2 GPUs allocated, 1 busy and 1 idle, of 16 in service.",
        ),
        ("chart-sectors", "GPUs allocated by sector: academia 2 on average"),
    ):
        svg = re.search(rf'<svg [^>]*aria-label="([^"]*)" id="{chart_id}"', answer.text)
        assert svg is not None, chart_id
        assert svg.group(1) == summary
    assert "chart-busy" in answer.text and "chart-capacity" in answer.text


def test_the_overview_of_one_sector_and_in_korean(portal: Portal) -> None:
    one_minute_of_work(portal)
    industry = portal.as_user("ops").get("/ops?range=6h&sector=industry")
    assert industry.status_code == 200
    assert (
        'aria-label="All GPUs: on average 0 GPUs allocated, 0 busy and 0 idle, of 24 in service."'
        in industry.text
    )
    assert 'id="chart-sectors"' not in industry.text  # one sector: no breakdown
    korean = portal.as_user("ops", **{"Accept-Language": "ko"}).get("/ops")
    assert "풀 사용률" in text_of(korean) and "전체 GPU" in text_of(korean)
    assert "Pool utilization" not in text_of(korean)


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("range=2y", "range", "Must be one of: 1h, 6h, 24h, 7d."),
        ("sector=agriculture", "sector", "No such sector."),
    ],
)
def test_a_bad_choice_is_named_and_the_page_still_shows(
    portal: Portal, query: str, field: str, message: str
) -> None:
    answer = portal.as_user("ops").get(f"/ops?{query}")
    assert answer.status_code == 400
    assert f'<small id="e-{field}" class="error">{message}</small>' in answer.text
    assert 'id="chart-all"' in answer.text


# --- nodes ----------------------------------------------------------------------------------------


def test_nodes_down_and_draining_first_with_why_and_each_gpus_state(portal: Portal) -> None:
    api = portal.api
    set_node(api, "a-1", "down", "missed heartbeats: no report from its agent since noon")
    set_node(api, "h-1", "draining", "fan replacement")
    job = running_job(api, "h-0", gpus=3)
    t = api.clock.now()
    Agent(api, "h-0").ok(
        report(
            1,
            t,
            gpu(0, jobs=[(job, 1)], util_gpu_pct=90.0),
            gpu(1, jobs=[(job, 1)], util_gpu_pct=1.0),
            gpu(2, util_gpu_pct=0.0),
            gpu(3, jobs=[(job, 1)], ecc_uncorrected=2),  # drains h-0
        )
    )
    answer = portal.as_user("ops").get("/ops/nodes")
    assert answer.status_code == 200
    assert NODE_CARD.findall(answer.text) == [
        ("down", "a-1"),
        ("draining", "h-0"),
        ("draining", "h-1"),
        ("up", "a-0"),
    ]
    text = text_of(answer)
    assert "Why: missed heartbeats: no report from its agent since noon" in text
    assert "Why: fan replacement" in text
    assert "Why: uncorrectable ECC errors on GPU 3 (GPU-0003)" in text
    cells = re.findall(r'<li class="gpu (\w+)" id="gpu-(GPU-\d+)">', answer.text)
    assert cells == [
        ("busy", "GPU-0000"),
        ("idle", "GPU-0001"),
        ("free", "GPU-0002"),
        ("bad", "GPU-0003"),
    ]
    assert "90% busy" in text and "ECC errors: 2" in text
    assert "10.0 GiB / 80.0 GiB" in text and "60 °C" in text
    assert f'href="/jobs/{job}"' in answer.text
    assert "Last heartbeat: " + Formats("en", api.pool.settings.timezone).when(t) in text
    # Up nodes have a drain form, draining ones an undrain form, down ones neither.
    assert 'action="/ops/nodes/a-0/drain"' in answer.text
    assert 'action="/ops/nodes/h-1/undrain"' in answer.text
    assert 'action="/ops/nodes/a-1/' not in answer.text


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("state=down", ["a-1"]),
        ("state=up", ["a-0", "h-0", "h-1"]),
        ("flavor=A100", ["a-1", "a-0"]),
        ("q=h-", ["h-0", "h-1"]),
        ("q=H-1", ["h-1"]),
        ("state=up&flavor=A100", ["a-0"]),
        ("q=%25", []),  # a literal %, not a wildcard
    ],
)
def test_nodes_are_filtered_by_state_flavor_and_name(
    portal: Portal, query: str, names: list[str]
) -> None:
    set_node(portal.api, "a-1", "down", "power")
    answer = portal.as_user("ops").get(f"/ops/nodes?{query}")
    assert answer.status_code == 200
    assert shown_nodes(answer) == names


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("state=sideways", "state", "No such state."),
        ("flavor=B200", "flavor", "No such flavor."),
        ("group=rack-9", "group", "No such group."),
    ],
)
def test_a_node_filter_naming_nothing_is_an_error_on_its_field(
    portal: Portal, query: str, field: str, message: str
) -> None:
    answer = portal.as_user("ops").get(f"/ops/nodes?{query}")
    assert answer.status_code == 400
    assert f'<small id="e-{field}" class="error">{message}</small>' in answer.text
    assert len(shown_nodes(answer)) == 4  # the filter is left out


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/ops/nodes/h-01%00"),
        ("get", "/ops/nodes?q=h%00"),
        ("get", "/ops/queue?reason=%00"),
        ("post", "/ops/nodes/h-01%00/drain"),
    ],
)
def test_a_nul_in_a_path_or_query_is_refused_not_a_crash(
    portal: Portal, method: str, path: str
) -> None:
    ops = portal.as_user("ops")
    answer = ops.get(path) if method == "get" else ops.post_form(path, {"reason": "x"})
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("text/html")
    assert "NUL" in text_of(answer)


def test_nodes_come_fifty_a_page(portal: Portal) -> None:
    for i in range(60):
        portal.api.add_node(f"z-{i:03d}")
    ops = portal.as_user("ops")
    first = ops.get("/ops/nodes")
    assert len(shown_nodes(first)) == 50
    assert "1\N{EN DASH}50 of 64" in text_of(first)
    assert 'href="/ops/nodes?offset=50" rel="next"' in first.text
    second = ops.get("/ops/nodes?offset=50")
    assert shown_nodes(second) == [f"z-{i:03d}" for i in range(46, 60)]
    assert not set(shown_nodes(first)) & set(shown_nodes(second))
    filtered = ops.get("/ops/nodes?flavor=H100&offset=50")
    assert 'href="/ops/nodes?offset=0&amp;flavor=H100" rel="prev"' in filtered.text


# --- draining -------------------------------------------------------------------------------------


def changes_of(api: Api, node: str) -> list[tuple[str, str, str, str]]:
    with read_session(api.engine) as s:
        rows = s.exec(select(Change).where(Change.subject == f"node:{node}")).all()
        return [(c.actor, c.old, c.new, c.note) for c in rows if c.field == "state"]


def test_drain_with_a_reason_then_undrain(portal: Portal) -> None:
    api = portal.api
    ops = portal.as_user("ops")
    ops.get("/ops/nodes")
    answer = ops.post_form(
        "/ops/nodes/h-0/drain", {"reason": "  fan replacement ", "next": "/ops/nodes?flavor=H100"}
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ops/nodes?flavor=H100"
    assert node_row(api, "h-0") == ("draining", "fan replacement")
    assert changes_of(api, "h-0") == [("ops", "up", "draining", "fan replacement")]
    listed = ops.get(answer.headers["location"])
    assert "Node h-0 is draining." in text_of(listed)
    assert ("draining", "h-0") in NODE_CARD.findall(listed.text)
    assert "Why: fan replacement" in text_of(listed)
    assert 'action="/ops/nodes/h-0/undrain"' in listed.text
    # The scheduler sees it at once (the pool's caches were told).
    assert api.get("ops", "/nodes").json()[2]["state"] == "draining"

    answer = ops.post_form("/ops/nodes/h-0/undrain", {})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ops/nodes/h-0"
    assert node_row(api, "h-0") == ("up", "")
    page = ops.get("/ops/nodes/h-0")
    assert "Node h-0 is back in service." in text_of(page)
    assert 'action="/ops/nodes/h-0/drain"' in page.text
    assert changes_of(api, "h-0")[-1] == ("ops", "draining", "up", "")


def test_drain_without_a_reason(portal: Portal) -> None:
    ops = portal.as_user("ops")
    ops.get("/ops/nodes/a-0")
    assert ops.post_form("/ops/nodes/a-0/drain", {"reason": ""}).status_code == 303
    assert node_row(portal.api, "a-0") == ("draining", "")


@pytest.mark.parametrize(
    ("language", "message"),
    [("en", "At most 2000 characters."), ("ko", "2000자 이하여야 합니다.")],
)
def test_a_reason_too_long_is_refused_in_place_keeping_what_was_typed(
    portal: Portal, language: str, message: str
) -> None:
    ops = portal.as_user("ops", **{"Accept-Language": language})
    ops.get("/ops/nodes")
    typed = "the fans " + "x" * 2000
    answer = ops.post_form("/ops/nodes/h-0/drain", {"reason": typed, "next": "/ops/nodes"})
    assert answer.status_code == 400
    assert f'<small id="e-reason" class="error">{message}</small>' in answer.text
    assert f">{typed}</textarea>" in answer.text
    assert node_row(portal.api, "h-0") == ("up", "")
    assert changes_of(portal.api, "h-0") == []


def test_a_down_node_cannot_be_drained_and_says_why(portal: Portal) -> None:
    set_node(portal.api, "a-1", "down", "power supply")
    ops = portal.as_user("ops")
    ops.get("/ops/nodes")
    answer = ops.post_form("/ops/nodes/a-1/drain", {"reason": "check it"})
    assert answer.status_code == 400
    assert "Not accepted: node 'a-1' is down (power supply)" in html.unescape(text_of(answer))
    assert node_row(portal.api, "a-1") == ("down", "power supply")


def test_a_drain_without_the_form_token_changes_nothing(portal: Portal) -> None:
    ops = portal.as_user("ops")
    answer = ops.post_form("/ops/nodes/h-0/drain", {"reason": "x"}, csrf="forged")
    assert answer.status_code == 400
    assert "This form has expired or did not come from this site." in text_of(answer)
    assert node_row(portal.api, "h-0") == ("up", "")


@pytest.mark.parametrize("path", ["/ops/nodes/nope", "/ops/nodes/" + "n" * 64])
def test_an_unknown_node_is_not_found(portal: Portal, path: str) -> None:
    ops = portal.as_user("ops")
    answer = ops.get(path)
    assert answer.status_code == 404
    assert "Not found" in text_of(answer)
    assert ops.post_form(path + "/drain", {"reason": "x"}).status_code == 404
    assert ops.post_form(path + "/undrain", {}).status_code == 404


def test_a_node_page_shows_its_gpus_in_detail_and_its_last_hour(portal: Portal) -> None:
    api = portal.api
    job = running_job(api, "h-0", gpus=1)
    agent = Agent(api, "h-0")
    t = (api.clock.advance(300) // 60) * 60  # a minute's start, after the job's
    agent.ok(
        report(1, t - 119, gpu(0, jobs=[(job, 1)], util_gpu_pct=20.0), gpu(1, util_gpu_pct=0.0)),
        report(2, t - 59, gpu(0, jobs=[(job, 1)], util_gpu_pct=80.0), gpu(1, util_gpu_pct=0.0)),
        report(3, t + 1, gpu(0, jobs=[(job, 1)], util_gpu_pct=60.0), gpu(1, util_gpu_pct=0.0)),
    )
    api.clock.advance(90)
    api.pool.telemetry.flush_minutes()
    answer = portal.as_user("ops").get("/ops/nodes/h-0")
    assert answer.status_code == 200
    text = text_of(answer)
    assert "Node h-0" in text and "NVIDIA H100 80GB HBM3" in text
    assert "ECC corrected 0, uncorrected 0" in text and "300 W" in text
    assert f'href="/jobs/{job}"' in answer.text
    util = answer.text.split('id="chart-util"', 1)[1].split("</svg>", 1)[0]
    lines = re.findall(r'class="chart-line chart-(gpu\d)"[^>]* points="([^"]+)"', util)
    assert [(name, len(points.split())) for name, points in lines] == [("gpu0", 3), ("gpu1", 3)]
    assert re.search(
        r'aria-label="GPU utilization over the last hour, the mean of each GPU: '
        r'GPU 0 53.3, GPU 1 0."',
        answer.text,
    )


def test_a_node_that_never_reported_says_so(portal: Portal) -> None:
    answer = portal.as_user("admin").get("/ops/nodes/a-0")
    assert answer.status_code == 200
    assert "Its agent has not reported yet." in text_of(answer)
    assert "GPU utilization over the last hour: no figures for this range." in answer.text


# --- the queue ------------------------------------------------------------------------------------


@pytest.fixture
def queued(portal: Portal) -> dict[str, int]:
    api = portal.api
    jobs = {
        "small": int(api.submit("alice", gpus=1)["id"]),
        "industrial": int(api.submit("carol", project="p2", gpus=2)["id"]),
        "large": int(api.submit("bob", gpus=4, flavor="H100")["id"]),
    }
    now = api.clock.now()
    api.set_job(
        jobs["small"], reason_code="capacity", reason="waiting for 1 GPU", est_start=now + 3600
    )
    api.set_job(jobs["industrial"], reason_code="credits", reason="p2 has no credits left")
    api.set_job(jobs["large"], reason_code="capacity", reason="waiting for 4 H100")
    return jobs


def test_the_queue_shows_why_each_job_waits_and_counts_per_reason(
    portal: Portal, queued: dict[str, int]
) -> None:
    answer = portal.as_user("ops").get("/ops/queue")
    assert answer.status_code == 200
    assert shown_jobs(answer, "queue") == [queued["small"], queued["industrial"], queued["large"]]
    text = text_of(answer)
    assert "<strong>Waiting for free GPUs</strong>: waiting for 1 GPU" in answer.text
    assert (
        "<strong>Not enough credits for its limit</strong>: p2 has no credits left" in answer.text
    )
    when = Formats("en", portal.api.pool.settings.timezone).when(portal.api.clock.now() + 3600)
    assert when in text
    reasons = answer.text.split('<table id="reasons">', 1)[1].split("</table>", 1)[0]
    counted = re.findall(
        r'<tr id="reason-(\w+)">.*?"num">(\d+)</td><td class="num">(\d+)<', reasons, re.S
    )
    assert counted == [("capacity", "2", "5"), ("credits", "1", "2")]


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("reason=credits", ["industrial"]),
        ("reason=capacity", ["small", "large"]),
        ("project=p1", ["small", "large"]),
        ("project=p2&reason=capacity", []),
        ("flavor=H100", ["large"]),
        ("flavor=*", ["small", "industrial"]),
        ("reason=never_fits", []),
    ],
)
def test_the_queue_is_filtered_by_project_flavor_and_reason(
    portal: Portal, queued: dict[str, int], query: str, names: list[str]
) -> None:
    answer = portal.as_user("ops").get(f"/ops/queue?{query}")
    assert answer.status_code == 200
    if names:
        assert shown_jobs(answer, "queue") == [queued[n] for n in names]
    else:
        assert "No jobs to show." in text_of(answer)


def test_the_queue_counts_follow_the_project_filter_and_speak_korean(
    portal: Portal, queued: dict[str, int]
) -> None:
    answer = portal.as_user("ops", **{"Accept-Language": "ko"}).get("/ops/queue?project=p2")
    reasons = answer.text.split('<table id="reasons">', 1)[1].split("</table>", 1)[0]
    assert re.findall(r'<tr id="reason-(\w+)">', reasons) == ["credits"]
    assert (
        "<strong>최대 실행 시간만큼의 크레딧 부족</strong>: p2 has no credits left" in answer.text
    )


def test_a_queue_filter_naming_no_project_is_an_error(portal: Portal) -> None:
    answer = portal.as_user("ops").get("/ops/queue?project=nope")
    assert answer.status_code == 400
    assert '<small id="e-project" class="error">No such project.</small>' in answer.text


# --- idle allocations -----------------------------------------------------------------------------


def idle_since(api: Api, job: int, since: float | None) -> None:
    with write_session(api.engine) as s:
        s.add(JobUsage(job_id=job, attempt=1, gpu_s=100.0, idle_since=since))


def test_idle_allocations_list_jobs_idle_long_enough(portal: Portal) -> None:
    api = portal.api
    now = api.clock.now()
    long_idle = running_job(api, "h-0", gpus=2)
    briefly = running_job(api, "h-1", gpus=1)
    busy = running_job(api, "a-0", gpus=1)
    idle_since(api, long_idle, now - 700)  # flagged after 600 s
    idle_since(api, briefly, now - 100)
    idle_since(api, busy, None)
    answer = portal.as_user("ops").get("/ops/idle")
    assert answer.status_code == 200
    assert shown_jobs(answer, "idle") == [long_idle]
    row = text_of(answer).split("Idle for", 1)[1]
    assert f"{long_idle} p1 alice 2 \N{MULTIPLICATION SIGN} H100 h-0" in row
    assert "11 min 40 s" in row
    assert f'href="/jobs/{long_idle}"' in answer.text
    assert 'href="/ops/nodes/h-0"' in answer.text


def test_no_idle_allocations_says_so(portal: Portal) -> None:
    answer = portal.as_user("ops").get("/ops/idle")
    assert "No idle allocations: every running job uses its GPUs." in text_of(answer)


# --- bad rows -------------------------------------------------------------------------------------


def store_extreme_telemetry(api: Api, node: str) -> None:
    """What agents could store before their numbers were bounded (and what a row edited by
    hand may hold), written straight to the database: sums that overflowed (power 1e308
    twice in a minute is infinity), NaN, the largest integers, and samples of the wrong
    shape in the node's latest report."""
    minute = int(api.clock.now() // 60) - 5
    huge = 2**63 - 1
    rows = [
        GpuMinute(
            uuid="GPU-0000",
            minute=minute,
            node=node,
            gpu_index=0,
            samples=2,
            util_gpu_samples=2,
            util_gpu_sum=1e308,
            util_mem_sum=1e308,
            power_w_sum=math.inf,
            power_samples=2,
            mem_used_max=huge,
            temp_max=1e308,
        ),
        GpuMinute(
            uuid="GPU-0000",
            minute=minute + 1,
            node=node,
            gpu_index=0,
            samples=1,
            util_gpu_samples=1,
            util_gpu_sum=-math.inf,
            util_mem_sum=-math.inf,
            power_w_sum=-math.inf,
            power_samples=1,
            mem_used_max=-huge,
            temp_max=-math.inf,
        ),
        GpuMinute(
            uuid="GPU-0001",
            minute=minute,
            node=node,
            gpu_index=2**31 - 1,
            samples=2**31 - 1,
            util_gpu_samples=2**31 - 1,
            util_gpu_sum=math.inf,
            util_mem_sum=0.0,
            power_w_sum=-1e308,
            power_samples=-1,
            mem_used_max=None,
            temp_max=math.nan,
        ),
    ]
    sample = {
        "index": 0,
        "uuid": "GPU-0000",
        "name": "x" * 5000,
        "util_gpu_pct": 1e308,
        "util_mem_pct": -1e308,
        "mem_used_bytes": 2**70,
        "mem_total_bytes": 10**400,
        "power_w": 1e308,
        "energy_mj": 10**400,
        "temp_c": -1e308,
        "ecc_corrected": 10**30,
        "ecc_uncorrected": 2**70,
        "last_xid": 2**70,
        "errors": {"power_w": "a" * 3000},
        "processes": [{"pid": 2**70, "used_memory_bytes": 10**30, "job_id": "9" * 40}],
        "jobs": [[2**70, 2**70]],
    }
    wrong = [{"index": "first", "uuid": 5, "jobs": "none"}, {"garbage": True}, "not a GPU", None]
    pool_minutes = [
        UtilizationMinute(
            minute=minute,
            flavor="H100",
            sector="academia",
            capacity=16,
            allocated=2**31 - 1,
            gpu_s=math.inf,
            busy_gpu_s=1e308,
            idle_gpu_s=-math.inf,
        ),
        UtilizationMinute(
            minute=minute + 1,
            flavor="H100",
            sector="",
            capacity=2**31 - 1,
            allocated=-5,
            gpu_s=1e308,
            busy_gpu_s=1e308,
            idle_gpu_s=1e308,
        ),
    ]
    with write_session(api.engine) as s:
        s.add_all(rows)
        s.add_all(pool_minutes)
        s.add(
            NodeTelemetry(
                node=node,
                boot="00c0ffee",
                seq=2**31 - 1,
                reports=1,
                reader="nvml",
                at=api.clock.now(),
                received_at=api.clock.now(),
                gpus=[sample, *wrong],
            )
        )


def test_extreme_values_stored_before_the_bounds_never_take_a_page_down(portal: Portal) -> None:
    store_extreme_telemetry(portal.api, "h-0")
    client = portal.as_user("ops")
    for path in ("/ops", "/ops?range=1h", "/ops/nodes", "/ops/nodes/h-0", "/ops/nodes?state=up"):
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.text[-2000:])
    page = text_of(client.get("/ops/nodes/h-0"))
    assert "unreadable" in page  # the samples of the wrong shape, shown as such
    assert "1e+308 W" in page  # a power no GPU draws, shown as stored
    api = portal.api
    for path in ("/nodes/h-0/gpus", "/nodes/h-0/history?minutes=60", "/nodes"):
        answer = api.get("ops", path)
        assert answer.status_code == 200, (path, answer.text)
