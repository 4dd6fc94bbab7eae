"""POST /api/v1/agents/reports and what follows from it: the heartbeat, each GPU's latest
sample, per-job usage, the per-minute history, node health; and node tokens.

Reports are built here with small builders (`gpu(...)`, `report(...)`); the agent that
really sends them is tested in tests/agents and end to end in tests/web/test_agents_e2e.py.
"""

from __future__ import annotations

import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import select

from tests.agents.test_schema import NUMBERS, TEXTS, with_value
from web.db import read_session, write_session
from web.models import Allocation, Change, GpuMinute, JobUsage, Node, NodeTelemetry
from web.services.scheduling import DbDecisionSink
from web.services.telemetry import HEARTBEAT_REASON

from ..conftest import START, Api, assert_refusal

BOOT = "00c0ffee"
GIB = 1024**3


def gpu(index: int = 0, **fields: Any) -> dict[str, Any]:
    """A GPU sample; `jobs` is a shortcut for processes of those (job, attempt) pairs."""
    jobs = fields.pop("jobs", [])
    sample = {
        "index": index,
        "uuid": f"GPU-{index:04d}",
        "name": "NVIDIA H100 80GB HBM3",
        "util_gpu_pct": 50.0,
        "util_mem_pct": 20.0,
        "mem_used_bytes": 10 * GIB,
        "mem_total_bytes": 80 * GIB,
        "power_w": 300.0,
        "energy_mj": 1_000_000,
        "temp_c": 60.0,
        "ecc_corrected": 0,
        "ecc_uncorrected": 0,
        "processes": [
            {"pid": 1000 + i, "used_memory_bytes": 5 * GIB, "job_id": str(job), "attempt": attempt}
            for i, (job, attempt) in enumerate(jobs)
        ],
    }
    return sample | fields


def report(seq: int, at: float, *gpus: dict[str, Any], boot: str = BOOT) -> dict[str, Any]:
    return {"boot": boot, "seq": seq, "at": at, "gpus": list(gpus)}


class Agent:
    """A node's agent as the API sees it: its token and what it sends."""

    def __init__(self, api: Api, node: str) -> None:
        self.api, self.node = api, node
        made = api.post("ops", f"/nodes/{node}/tokens", json={"label": "tests"})
        assert made.status_code == 201, made.text
        self.token: str = made.json()["token"]

    def send(self, *reports: dict[str, Any], node: str | None = None) -> httpx.Response:
        body = {"node": node or self.node, "reports": list(reports)}
        return self.api.client.post(
            "/api/v1/agents/reports", json=body, headers={"Authorization": f"Bearer {self.token}"}
        )

    def ok(self, *reports: dict[str, Any]) -> dict[str, Any]:
        answer = self.send(*reports)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body


def running_job(api: Api, node: str = "h-0", gpus: int = 2, attempt: int = 1) -> int:
    """A job the records say runs on `node` (its allocation from START)."""
    job_id = int(api.submit("alice", gpus=gpus)["id"])
    api.set_job(job_id, state="running", attempt=attempt, flavor_used="H100")
    with write_session(api.engine) as s:
        s.add(
            Allocation(
                job_id=job_id, attempt=attempt, node=node, flavor="H100", gpus=gpus, start=START
            )
        )
    return job_id


def usage(api: Api, job_id: int) -> list[dict[str, Any]]:
    answer = api.get("alice", f"/jobs/{job_id}/usage")
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()
    return rows


def node_row(api: Api, name: str) -> tuple[str, str]:
    with read_session(api.engine) as s:
        node = s.get(Node, name)
        assert node is not None
        return node.state, node.state_reason


# --- usage ------------------------------------------------------------------------------------


def test_a_jobs_gpus_count_their_time_utilization_energy_and_peak_memory(api: Api) -> None:
    job = running_job(api)
    agent = Agent(api, "h-0")
    t = api.clock.now()
    ack = agent.ok(report(1, t, gpu(0, jobs=[(job, 1)]), gpu(1, jobs=[(job, 1)]), gpu(2)))
    assert ack == {"accepted": 1, "duplicates": 0, "last_seq": 1, "interval_s": 5.0}
    assert usage(api, job) == []  # one sample: no interval yet

    agent.ok(
        report(
            2,
            t + 10,
            gpu(0, jobs=[(job, 1)], util_gpu_pct=100.0, energy_mj=1_000_000 + 3_000_000),
            gpu(1, jobs=[(job, 1)], util_gpu_pct=0.0, energy_mj=1_000_000 + 1_000_000),
            gpu(2, energy_mj=9_000_000),  # not the pool's: counts for nobody
        )
    )
    [attempt] = usage(api, job)
    assert attempt["gpu_s"] == pytest.approx(20.0)  # two GPUs, 10 s
    assert attempt["mean_util_pct"] == pytest.approx(50.0)
    assert attempt["energy_kwh"] == pytest.approx(4_000 / 3.6e6)  # 3 kJ + 1 kJ
    assert attempt["peak_mem_bytes"] == 5 * GIB

    status = api.get("ops", "/nodes/h-0/gpus").json()
    assert [g["jobs"] for g in status["gpus"]] == [[[job, 1]], [[job, 1]], []]
    assert status["gpus"][0]["util_gpu_pct"] == 100.0
    assert api.get("ops", "/nodes").json()[2]["last_heartbeat"] is not None


def test_a_resent_report_is_acknowledged_and_not_counted_again(api: Api) -> None:
    job = running_job(api, gpus=1)
    agent = Agent(api, "h-0")
    t = api.clock.now()
    first = report(1, t, gpu(0, jobs=[(job, 1)]))
    second = report(2, t + 5, gpu(0, jobs=[(job, 1)], energy_mj=2_000_000))
    agent.ok(first, second)
    before = usage(api, job)

    again = agent.ok(first, second)
    assert (again["accepted"], again["duplicates"], again["last_seq"]) == (0, 2, 2)
    assert usage(api, job) == before
    # A new run of the agent numbers from 1 again: taken.
    fresh = agent.ok(report(1, t + 10, gpu(0, jobs=[(job, 1)]), boot="feedbeef"))
    assert (fresh["accepted"], fresh["last_seq"]) == (1, 1)
    assert usage(api, job)[0]["gpu_s"] == pytest.approx(10.0)


def test_a_counter_going_backwards_gives_no_energy_for_that_interval(api: Api) -> None:
    job = running_job(api, gpus=1)
    agent = Agent(api, "h-0")
    t = api.clock.now()
    agent.ok(
        report(1, t, gpu(0, jobs=[(job, 1)], energy_mj=50_000_000)),
        report(2, t + 5, gpu(0, jobs=[(job, 1)], energy_mj=1_000)),  # the driver reloaded
        report(3, t + 10, gpu(0, jobs=[(job, 1)], energy_mj=2_001_000)),
    )
    [attempt] = usage(api, job)
    assert attempt["gpu_s"] == pytest.approx(10.0)
    assert attempt["energy_gpu_s"] == pytest.approx(5.0)  # only the second interval
    assert attempt["energy_kwh"] == pytest.approx(2_000 / 3.6e6)


def test_processes_of_jobs_that_hold_no_gpus_on_the_node_count_for_nobody(api: Api) -> None:
    elsewhere = running_job(api, node="h-1")
    agent = Agent(api, "h-0")
    t = api.clock.now()
    claims = [(elsewhere, 1), (elsewhere, 2), (999_999, 1)]
    agent.ok(report(1, t, gpu(0, jobs=claims)), report(2, t + 5, gpu(0, jobs=claims)))
    assert usage(api, elsewhere) == []
    assert api.count(JobUsage) == 0
    assert api.get("ops", "/nodes/h-0/gpus").json()["gpus"][0]["jobs"] == []


def test_a_gpu_shared_by_two_jobs_gives_each_half(api: Api) -> None:
    one, two = running_job(api, gpus=1), running_job(api, gpus=1)
    agent = Agent(api, "h-0")
    t = api.clock.now()
    shared = gpu(0, jobs=[(one, 1), (two, 1)])
    agent.ok(report(1, t, shared), report(2, t + 8, shared | {"energy_mj": 1_800_000}))
    for job in (one, two):
        [attempt] = usage(api, job)
        assert attempt["gpu_s"] == pytest.approx(4.0)
        assert attempt["energy_kwh"] == pytest.approx(400 / 3.6e6)


def test_gpus_a_job_holds_but_does_not_use_count_as_its_idle_gpus(api: Api) -> None:
    half, none = running_job(api, gpus=2), running_job(api, gpus=2)
    agent = Agent(api, "h-0")
    t = api.clock.advance(1200)
    used = gpu(0, jobs=[(half, 1)], util_gpu_pct=80.0)  # GPU 1 of `half` has no process
    agent.ok(report(1, t - 900, used), report(2, t - 890, used))
    [attempt] = usage(api, half)
    assert attempt["gpu_s"] == pytest.approx(20.0)  # both GPUs, 10 s
    assert attempt["mean_util_pct"] == pytest.approx(40.0)  # 80 % and an unused GPU
    [nothing] = usage(api, none)  # no process on any of its GPUs: all idle
    assert (nothing["gpu_s"], nothing["mean_util_pct"]) == (pytest.approx(20.0), 0.0)
    flagged = api.get("alice", f"/jobs/{none}").json()["idle_since"]
    assert flagged is not None and api.get("alice", f"/jobs/{half}").json()["idle_since"] is None


def test_a_long_silence_is_not_guessed_at(api: Api) -> None:
    job = running_job(api)
    agent = Agent(api, "h-0")
    t = api.clock.advance(3600)  # the job runs since an hour
    agent.ok(report(1, t - 600, gpu(0, jobs=[(job, 1)])), report(2, t, gpu(0, jobs=[(job, 1)])))
    assert usage(api, job) == []  # 600 s > telemetry_max_gap_s (60 s)


# --- history ----------------------------------------------------------------------------------


def test_history_has_one_row_per_gpu_per_minute(api: Api) -> None:
    agent = Agent(api, "h-0")
    t = (api.clock.now() // 60) * 60
    agent.ok(
        report(1, t + 1, gpu(0, util_gpu_pct=20.0), gpu(1, util_gpu_pct=0.0)),
        report(2, t + 31, gpu(0, util_gpu_pct=40.0, temp_c=70.0), gpu(1, util_gpu_pct=0.0)),
        report(3, t + 61, gpu(0, util_gpu_pct=90.0), gpu(1, util_gpu_pct=0.0)),
    )
    api.clock.advance(120)
    api.pool.telemetry.flush_minutes()
    rows = api.get("ops", "/nodes/h-0/history", params={"minutes": 10}).json()
    first = [(r["gpu_index"], r["util_gpu_pct"], r["temp_c"]) for r in rows]
    assert first == [(0, 30.0, 70.0), (1, 0.0, 60.0), (0, 90.0, 60.0), (1, 0.0, 60.0)]


# --- health -----------------------------------------------------------------------------------


def test_an_uncorrectable_ecc_error_drains_the_node_and_says_why(api: Api) -> None:
    agent = Agent(api, "h-0")
    t = api.clock.now()
    agent.ok(report(1, t, gpu(0), gpu(3)))
    agent.ok(report(2, t + 5, gpu(0), gpu(3, ecc_uncorrected=2)))
    state, reason = node_row(api, "h-0")
    assert state == "draining"
    assert reason == "uncorrectable ECC errors on GPU 3 (GPU-0003): 2 since the driver loaded"
    with read_session(api.engine) as s:
        change = s.exec(select(Change).where(Change.subject == "node:h-0")).all()[-1]
        assert (change.actor, change.old, change.new, change.note) == (
            "agent",
            "up",
            "draining",
            reason,
        )
    # An operator returns it to service: the count that stays does not drain it again.
    assert api.post("ops", "/nodes/h-0/undrain").status_code == 200
    agent.ok(report(3, t + 10, gpu(0), gpu(3, ecc_uncorrected=2)))
    assert node_row(api, "h-0") == ("up", "")


@pytest.mark.parametrize(
    ("xid", "drained"), [(79, "Xid 79 (GPU has fallen off the bus) on GPU 0 (GPU-0000)"), (13, "")]
)
def test_a_critical_xid_drains_the_node_and_an_application_error_does_not(
    api: Api, xid: int, drained: str
) -> None:
    agent = Agent(api, "h-0")
    agent.ok(report(1, api.clock.now(), gpu(0, xids=[{"xid": xid, "at": api.clock.now()}])))
    assert node_row(api, "h-0") == (("draining", drained) if drained else ("up", ""))
    assert api.get("ops", "/nodes/h-0/gpus").json()["gpus"][0]["last_xid"] == xid


def test_a_silent_node_goes_down_its_jobs_are_requeued_and_it_comes_back(api: Api) -> None:
    job = running_job(api)
    agent = Agent(api, "h-0")
    sink = DbDecisionSink(api.engine, 30.0, 86400.0, heartbeat_timeout_s=60.0)
    sink.claim("tests", api.clock.now())
    agent.ok(report(1, api.clock.now(), gpu(0, jobs=[(job, 1)])))

    api.clock.advance(59)
    assert sink.take_down_silent_nodes(api.clock.now()) == []
    api.clock.advance(10)
    [stop] = sink.take_down_silent_nodes(api.clock.now())
    assert (stop.job_id, stop.attempt, stop.why.value) == (str(job), 1, "node down")
    state, reason = node_row(api, "h-0")
    assert state == "down" and reason.startswith(HEARTBEAT_REASON)
    row = api.job_row(job)
    assert (row.state, row.reason_code) == ("queued", "lost")
    assert node_row(api, "h-1") == ("up", "")  # never reported: not judged

    agent.ok(report(2, api.clock.now(), gpu(0)))
    assert node_row(api, "h-0") == ("up", "")


def test_a_new_leader_waits_a_whole_timeout_before_judging_silence(api: Api) -> None:
    agent = Agent(api, "h-0")
    agent.ok(report(1, api.clock.now(), gpu(0)))
    api.clock.advance(3600)  # the control plane was down for an hour
    sink = DbDecisionSink(api.engine, 30.0, 86400.0, heartbeat_timeout_s=60.0, heartbeat_check_s=0)
    sink.claim("tests", api.clock.now())
    assert sink.take_down_silent_nodes(api.clock.now()) == []
    api.clock.advance(61)
    assert len(sink.take_down_silent_nodes(api.clock.now())) == 0
    assert node_row(api, "h-0")[0] == "down"


# --- bad input and tokens -----------------------------------------------------------------------


def test_one_nodes_token_cannot_report_for_another(api: Api) -> None:
    agent = Agent(api, "h-0")
    answer = agent.send(report(1, api.clock.now(), gpu(0)), node="h-1")
    assert answer.status_code == 403
    assert "this token belongs to node 'h-0'; it cannot report for 'h-1'" in answer.text


def test_users_tokens_revoked_tokens_and_no_token_are_refused(api: Api) -> None:
    agent = Agent(api, "h-0")
    body = {"node": "h-0", "reports": [report(1, api.clock.now(), gpu(0))]}
    as_user = api.post("admin", "/agents/reports", json=body)
    assert as_user.status_code == 401 and "node token" in as_user.text
    assert api.post(None, "/agents/reports", json=body).status_code == 401

    [token] = api.get("ops", "/nodes/h-0/tokens").json()
    assert api.delete("ops", f"/nodes/h-0/tokens/{token['id']}").status_code == 200
    refused = agent.send(report(1, api.clock.now(), gpu(0)))
    assert refused.status_code == 401 and "revoked" in refused.text
    assert api.post("alice", "/nodes/h-0/tokens", json={}).status_code == 403


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r | {"at": START + 10_000}, "reports.0.at"),
        (lambda r: r | {"seq": 0}, "reports.0.seq"),
        (lambda r: r | {"boot": "not hex"}, "reports.0.boot"),
        (lambda r: r | {"gpus": [gpu(0, util_gpu_pct=101.0)]}, "reports.0.gpus.0.util_gpu_pct"),
        (lambda r: r | {"gpus": [gpu(0, power_w=-1.0)]}, "reports.0.gpus.0.power_w"),
        (lambda r: r | {"gpus": [gpu(0, surprise=1)]}, "reports.0.gpus.0.surprise"),
        (lambda r: r | {"gpus": [gpu(0), gpu(0)]}, "reports.0.gpus"),
    ],
)
def test_bad_reports_are_refused_naming_the_field_and_nothing_is_stored(
    api: Api, change: Any, field: str
) -> None:
    agent = Agent(api, "h-0")
    answer = agent.send(change(report(1, api.clock.now(), gpu(0))))
    assert answer.status_code == 422, answer.text
    assert field in answer.text
    assert api.get("ops", "/nodes/h-0/gpus").json()["gpus"] == []


def test_reports_out_of_order_in_a_batch_and_oversized_bodies_are_refused(api: Api) -> None:
    agent = Agent(api, "h-0")
    t = api.clock.now()
    answer = agent.send(report(2, t, gpu(0)), report(1, t, gpu(0)))
    assert answer.status_code == 422 and "reports.1.seq" in answer.text
    huge = agent.api.client.post(
        "/api/v1/agents/reports",
        content=b"[" + b" " * (8 * 1024 * 1024) + b"]",
        headers={"Authorization": f"Bearer {agent.token}", "Content-Type": "application/json"},
    )
    assert huge.status_code == 413


def test_a_drained_node_that_goes_silent_drains_again_when_its_agent_is_back(api: Api) -> None:
    agent = Agent(api, "h-0")
    sink = DbDecisionSink(api.engine, 30.0, 86400.0, heartbeat_timeout_s=60.0, heartbeat_check_s=0)
    sink.claim("tests", api.clock.now())
    agent.ok(report(1, api.clock.now(), gpu(0)))
    assert api.post("ops", "/nodes/h-0/drain", json={"reason": "fan swap"}).status_code == 200
    api.clock.advance(61)
    sink.take_down_silent_nodes(api.clock.now())
    state, reason = node_row(api, "h-0")
    assert state == "down" and reason.startswith(HEARTBEAT_REASON) and "fan swap" in reason

    agent.ok(report(2, api.clock.now(), gpu(0)))
    assert node_row(api, "h-0") == ("draining", "fan swap")


def test_history_older_than_the_days_kept_is_pruned(api: Api) -> None:
    agent = Agent(api, "h-0")
    days = api.pool.settings.telemetry_history_days
    t = api.clock.now()
    agent.ok(report(1, t - (days * 86400 - 120), gpu(0)), report(2, t - 30, gpu(0)))
    api.pool.telemetry.flush_minutes(everything=True)  # (the writer may have written some)
    assert api.count(GpuMinute) == 2
    api.clock.advance(600)  # the first minute is now older than the history kept
    assert api.pool.telemetry.prune_history() == 1
    rows = api.get("ops", "/nodes/h-0/history", params={"minutes": 60}).json()
    assert [r["gpu_index"] for r in rows] == [0]


def test_a_job_whose_gpus_all_idle_is_flagged_until_one_is_busy(api: Api) -> None:
    job = running_job(api)
    agent = Agent(api, "h-0")
    t = api.clock.advance(600)
    busy, idle = gpu(0, jobs=[(job, 1)]), gpu(0, jobs=[(job, 1)], util_gpu_pct=1.0)
    half = gpu(1, jobs=[(job, 1)], util_gpu_pct=0.0)
    agent.ok(report(1, t - 300, busy, half), report(2, t - 290, idle, half))
    agent.ok(report(3, t - 280, idle, half))  # a later batch keeps the run's start

    assert api.get("alice", f"/jobs/{job}").json()["idle_since"] is None  # not 600 s yet
    api.clock.advance(400)  # idle for 700 s now: GPUPOOL_IDLE_FLAG_AFTER_S is 600
    shown = api.get("alice", f"/jobs/{job}").json()
    assert shown["idle_since"] is not None
    listed = api.get("alice", "/jobs", params={"state": "running"}).json()["items"]
    assert [j["idle_since"] for j in listed] == [shown["idle_since"]]
    assert abs(datetime.fromisoformat(shown["idle_since"]).timestamp() - (t - 300)) < 1e-6
    [attempt] = usage(api, job)
    assert attempt["gpu_s"] == pytest.approx(40.0)  # two GPUs, 20 s

    agent.ok(report(4, t - 270, busy, half))  # one of its GPUs works again
    assert api.get("alice", f"/jobs/{job}").json()["idle_since"] is None


def test_a_project_idle_stop_policy_is_set_by_its_pi_within_bounds(api: Api) -> None:
    refused = api.patch("alice", "/projects/p1", json={"idle_stop_after_s": 10})
    assert refused.status_code == 422 and "idle_stop_after_s" in refused.text
    assert api.patch("bob", "/projects/p1", json={"idle_stop_after_s": 3600}).status_code == 403
    set_ = api.patch("alice", "/projects/p1", json={"idle_stop_after_s": 3600})
    assert set_.status_code == 200 and set_.json()["idle_stop_after_s"] == 3600


# --- bounds, earlier runs, and one bad report among many --------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("gpus.0.mem_used_bytes", 2**70, "allowed: 0 to 17,592,186,044,416"),
        ("gpus.0.power_w", 1e308, "allowed: 0.0 to 10,000.0"),
        ("gpus.0.energy_mj", int("9" * 400), "allowed: 0 to 9,007,199,254,740,991"),
        ("gpus.0.processes.0.used_memory_bytes", 2**70, "allowed: 0 to 17,592,186,044,416"),
        ("seq", 2**70, "allowed: 1 to 2,147,483,647"),
        ("gpus.0.temp_c", -273.0, "allowed: -100.0 to 200.0"),
    ],
)
def test_a_number_past_its_bound_is_refused_naming_the_field_and_the_range(
    api: Api, field: str, value: object, allowed: str
) -> None:
    job = running_job(api, gpus=1)
    agent = Agent(api, "h-0")
    body = report(1, api.clock.now(), gpu(0, jobs=[(job, 1)]))
    here: Any = body
    *parents, last = field.split(".")
    for part in parents:
        here = here[int(part)] if part.isdigit() else here[part]
    here[last] = value
    answer = agent.send(body)
    assert_refusal(answer, 422, f"reports.0.{field}", allowed)
    assert api.get("ops", "/nodes/h-0/gpus").json()["gpus"] == []


def test_a_report_of_an_earlier_run_of_the_agent_is_refused_after_a_new_run(api: Api) -> None:
    job = running_job(api, gpus=1)
    agent = Agent(api, "h-0")
    t = api.clock.now()
    old = [
        report(seq, t + 5 * seq, gpu(0, jobs=[(job, 1)], energy_mj=seq * 10**6)) for seq in (1, 2)
    ]
    agent.ok(*old)
    new = report(1, t + 20, gpu(0, jobs=[(job, 1)]), boot="feedbeef")  # the agent restarted
    agent.ok(new)
    before = usage(api, job)

    for replay in (old, [old[1]], [report(3, t + 15, gpu(0), boot=BOOT)]):
        answer = agent.send(*replay)
        detail = assert_refusal(answer, 409, "reports.0.boot", "an earlier run")
        assert "boot feedbeef" in detail
    assert usage(api, job) == before
    with read_session(api.engine) as s:
        row = s.get(NodeTelemetry, "h-0")
        assert row is not None and (row.boot, row.seq, row.reports) == ("feedbeef", 1, 3)
    # The new run goes on; a later run after it too.
    agent.ok(report(2, t + 25, gpu(0, jobs=[(job, 1)]) | {"energy_mj": 2 * 10**6}, boot="feedbeef"))
    agent.ok(report(1, t + 30, gpu(0), boot="0ddba110"))


def test_bad_reports_among_many_concurrent_good_ones_fail_alone(api: Api) -> None:
    """The issue's "24 of 60": seq 2**70, a 400-digit energy counter or a huge process
    memory from a few nodes, in the same moment as good reports of the others: every good
    one is stored and answered 200, every bad one 422 naming its field."""
    nodes = [api.add_node(f"n-{i}") for i in range(40)]
    agents = {node: Agent(api, node) for node in nodes}
    t = api.clock.now()
    bad = {
        "n-3": ({"seq": 2**70}, "reports.0.seq"),
        "n-11": ({"gpus": [gpu(0, energy_mj=int("7" * 400))]}, "reports.0.gpus.0.energy_mj"),
        "n-19": (
            {"gpus": [gpu(0, processes=[{"pid": 1, "used_memory_bytes": 2**70}])]},
            "reports.0.gpus.0.processes.0.used_memory_bytes",
        ),
        "n-27": ({"gpus": [gpu(0, mem_used_bytes=2**70)]}, "reports.0.gpus.0.mem_used_bytes"),
        "n-35": ({"gpus": [gpu(0, power_w=1e308)]}, "reports.0.gpus.0.power_w"),
    }

    def send(node: str) -> httpx.Response:
        change, _ = bad.get(node, ({}, ""))
        return agents[node].send(report(1, t, gpu(0), gpu(1)) | change)

    # The writer is held after its first batch until the other requests wait in its
    # queue, so that they are taken together (one group commit, as under load).
    telemetry = api.pool.telemetry
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        with telemetry._minutes_lock:
            sent = [pool.submit(send, node) for node in nodes]
            waiting_since, waiting = time.monotonic(), -1
            while time.monotonic() - waiting_since < 0.5 and not all(f.done() for f in sent):
                if telemetry._queue.qsize() != waiting:
                    waiting_since, waiting = time.monotonic(), telemetry._queue.qsize()
                time.sleep(0.01)
        answers = {node: future.result() for node, future in zip(nodes, sent, strict=True)}
    for node, answer in answers.items():
        if node in bad:
            assert_refusal(answer, 422, bad[node][1])
        else:
            assert answer.status_code == 200, (node, answer.text)
            assert answer.json()["accepted"] == 1
    with read_session(api.engine) as s:
        stored = {row.node for row in s.exec(select(NodeTelemetry))}
    assert stored == set(nodes) - set(bad)


# --- hostile input, property-based ------------------------------------------------------------

PLACEHOLDER = '"@value@"'
HOSTILE_NUMBER_TEXTS = st.one_of(
    st.sampled_from(
        ["1e308", "-1e308", "1e400", "NaN", "Infinity", "-Infinity", "-0", "-0.0", "true", '"5"']
    ),
    st.sampled_from([str(2**70), str(2**63), str(2**64), "9" * 400, "-" + "9" * 400, "9" * 5000]),
    st.integers(min_value=2**53).map(str),
    st.integers(max_value=-1).map(str),
)


def hostile_body(path: tuple[str | int, ...], value_json: str, at: float, seq: int) -> bytes:
    """h-1's good batch of one report (tests/agents/test_schema.py's) with `value_json` at
    `path`, as raw JSON (so that NaN, lone surrogate escapes and any depth can be sent)."""
    batch = with_value(path, "@value@")
    batch["node"] = "h-1"
    first = batch["reports"][0]
    for where, name, value in ((first, "at", at), (first, "seq", seq)):
        if where[name] != "@value@":
            where[name] = value
    xid = first["gpus"][0]["xids"][0]
    if xid["at"] != "@value@":
        xid["at"] = at
    return json.dumps(batch).replace(PLACEHOLDER, value_json).encode()


class Nodes:
    """h-0 sends good reports between the bad ones h-1 sends."""

    def __init__(self, api: Api) -> None:
        self.api, self.good, self.bad = api, Agent(api, "h-0"), Agent(api, "h-1")
        self.seq = self.bad_seq = 0

    def body(self, path: tuple[str | int, ...], value_json: str) -> bytes:
        self.bad_seq += 1
        return hostile_body(path, value_json, self.api.clock.now(), self.bad_seq)

    def post(self, agent: Agent, body: bytes) -> httpx.Response:
        return self.api.client.post(
            "/api/v1/agents/reports",
            content=body,
            headers={"Authorization": f"Bearer {agent.token}", "Content-Type": "application/json"},
        )

    def bad_row(self) -> tuple[int, int] | None:
        with read_session(self.api.engine) as s:
            row = s.get(NodeTelemetry, "h-1")
            return None if row is None else (row.seq, row.reports)

    def refused_naming(self, body: bytes, path: tuple[str | int, ...]) -> None:
        before = self.bad_row()
        answer = self.post(self.bad, body)
        assert answer.status_code == 422, answer.text
        named = {e["field"] for e in answer.json()["errors"]}
        # "body": what no JSON parser can read (past Python's digits limit or its depth)
        assert ".".join(map(str, path)) in named or named == {"body"}, answer.text
        assert self.bad_row() == before  # nothing stored
        self.seq += 1
        self.good.ok(report(self.seq, self.api.clock.now(), gpu(0)))
        with read_session(self.api.engine) as s:
            row = s.get(NodeTelemetry, "h-0")
            assert row is not None and row.seq == self.seq


_nodes: dict[int, tuple[Api, Nodes]] = {}


def nodes_of(api: Api) -> Nodes:
    """One Nodes per pool, for all the examples of a test (a node token made after the
    pool's token directory was read is not known to it for a while)."""
    found = _nodes.get(id(api))
    if found is None or found[0] is not api:
        _nodes.clear()
        found = _nodes[id(api)] = (api, Nodes(api))
    return found[1]


HOSTILE = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@HOSTILE
@given(path=st.sampled_from(sorted(NUMBERS, key=str)), value=HOSTILE_NUMBER_TEXTS)
def test_huge_and_special_numbers_are_refused_naming_the_field_and_others_go_on(
    api: Api, path: tuple[str | int, ...], value: str
) -> None:
    nodes = nodes_of(api)
    low, high = NUMBERS[path]
    with contextlib.suppress(ValueError):
        if low <= float(value) <= high and value not in ("-0", "-0.0"):
            return  # (a negative number is in the bounds of temp_c)
    if value in ("-0", "-0.0") and low <= 0:
        return  # -0 is 0: taken
    nodes.refused_naming(nodes.body(path, value), path)


@HOSTILE
@given(
    path=st.sampled_from(sorted(TEXTS, key=str)),
    text=st.text(alphabet=st.characters(codec=None), min_size=1, max_size=250),
)
def test_any_text_is_stored_as_sent_or_refused_naming_the_field(
    api: Api, path: tuple[str | int, ...], text: str
) -> None:
    nodes = nodes_of(api)
    body = nodes.body(path, json.dumps(text))
    storable = "\x00" not in text and not any("\ud800" <= c <= "\udfff" for c in text)
    if storable and len(text) <= TEXTS[path]:
        answer = nodes.post(nodes.bad, body)
        assert answer.status_code == 200, answer.text
        shown = api.get("ops", "/nodes/h-1/gpus").json()
        place = {"driver_version": shown, "note": shown["gpus"][0]["processes"][0]}
        where = place.get(str(path[-1]), shown["gpus"][0])
        assert where[str(path[-1])] == text
        return
    nodes.refused_naming(body, path)


@HOSTILE
@given(
    path=st.sampled_from(sorted([*NUMBERS, *TEXTS], key=str)),
    depth=st.integers(min_value=1, max_value=5_000),
)
def test_deep_nesting_in_any_field_is_refused_naming_it(
    api: Api, path: tuple[str | int, ...], depth: int
) -> None:
    nodes = nodes_of(api)
    nodes.refused_naming(nodes.body(path, "[" * depth + "]" * depth), path)
