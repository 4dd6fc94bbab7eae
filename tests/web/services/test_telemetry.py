"""The telemetry writer (web/services/telemetry.py) given what the schema's bounds keep out
today but a report could still hold (a value no column takes): a report that cannot be
stored fails alone, and the history's minutes that cannot be written are dropped alone.

Reports are built with `model_construct` (no validation), as if the bounds had a hole."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlmodel import select

from agents.schema import GpuProcess, GpuSample, NodeReport, ReportAck, ReportBatch
from tests.web.api.test_agents import running_job
from tests.web.conftest import Api
from web.db import read_session
from web.models import GpuMinute, JobUsage, NodeTelemetry
from web.services.errors import Invalid
from web.services.telemetry import TelemetryIngest, TelemetryLimits, _Pending

BOOT = "00c0ffee"
GIB = 1024**3


def sample(index: int = 0, node: str = "h-0", **fields: Any) -> GpuSample:
    values = {
        "index": index,
        "uuid": f"GPU-{node}-{index}",
        "name": "",
        "mig_parent_uuid": None,
        "util_gpu_pct": 50.0,
        "util_mem_pct": 10.0,
        "mem_used_bytes": GIB,
        "mem_total_bytes": 80 * GIB,
        "power_w": 300.0,
        "energy_mj": 1_000_000,
        "temp_c": 60.0,
        "ecc_corrected": 0,
        "ecc_uncorrected": 0,
        "xids": [],
        "processes": [],
        "errors": {},
    } | fields
    return GpuSample.model_construct(**values)


def unchecked(node: str, *reports: tuple[int, float, list[GpuSample]]) -> _Pending:
    """A request as the writer gets it, its reports not validated."""
    batch = ReportBatch.model_construct(
        node=node,
        reports=[
            NodeReport.model_construct(
                boot=BOOT, seq=seq, at=at, reader="nvml", driver_version="", gpus=gpus
            )
            for seq, at, gpus in reports
        ],
    )
    return _Pending(node, batch, reports[-1][1])


def job_process(job: int, memory: int) -> GpuProcess:
    return GpuProcess.model_construct(
        pid=1000, used_memory_bytes=memory, job_id=str(job), attempt=1, note=""
    )


def telemetry_rows(api: Api) -> dict[str, int]:
    with read_session(api.engine) as s:
        return {row.node: row.seq for row in s.exec(select(NodeTelemetry))}


def test_a_report_that_cannot_be_stored_fails_alone_and_the_others_are_stored(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's "24 of 60": seq 2**70, a 400-digit energy counter or a huge process
    memory in one report failed the whole group commit, so the other nodes' got 500."""
    ingest = TelemetryIngest(api.engine, TelemetryLimits(), clock=api.clock.now)
    t = api.clock.now()
    job = running_job(api, "a-0", gpus=1)
    other = running_job(api, "a-1", gpus=1)
    batch = [
        unchecked("h-0", (1, t, [sample(0)])),
        unchecked("h-1", (2**70, t, [sample(0)])),  # node_telemetry.seq
        unchecked(
            "a-0",  # the energy's delta / 1000 overflows a float
            (1, t, [sample(0, processes=[job_process(job, GIB)])]),
            (2, t + 5, [sample(0, energy_mj=10**400, processes=[job_process(job, GIB)])]),
        ),
        unchecked(
            "a-1",  # job_usage.peak_mem_bytes
            (1, t, [sample(0, processes=[job_process(other, GIB)])]),
            (2, t + 5, [sample(0, processes=[job_process(other, 2**70)])]),
        ),
        unchecked("h-0", (2, t + 5, [sample(0)])),
    ]
    with caplog.at_level(logging.ERROR):
        ingest.store(batch)
    good = [batch[0], batch[4]]
    for item in good:
        ack = item.result.result(timeout=0)
        assert isinstance(ack, ReportAck) and ack.accepted == 1
    for item in batch[1:4]:
        refusal = item.result.exception(timeout=0)
        assert isinstance(refusal, Invalid), refusal
        assert "a value the database cannot store" in str(refusal)
        assert refusal.field == "reports"
    assert telemetry_rows(api) == {"h-0": 2}
    assert api.count(JobUsage) == 0  # nothing of the bad reports
    assert "storing agent reports of node h-1 failed" in caplog.text


def test_a_minute_that_cannot_be_written_is_dropped_alone_and_the_history_goes_on(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """mem_used_bytes = 2**70 (gpu_minutes.mem_used_max is a BigInteger) made every later
    flush fail until a restart, for every node, and the server's shutdown fail."""
    ingest = TelemetryIngest(api.engine, TelemetryLimits(), clock=api.clock.now)
    t = (api.clock.now() // 60) * 60
    ingest.take(
        [
            unchecked("h-0", (1, t + 1, [sample(0), sample(1, mem_used_bytes=2**70)])),
            unchecked("h-1", (1, t + 2, [sample(0, "h-1"), sample(1, "h-1")])),
        ]
    )
    api.clock.advance(120)
    with caplog.at_level(logging.ERROR):
        assert ingest.flush_minutes() == 3
    assert "dropped GPU GPU-h-0-1's minute" in caplog.text and "of node h-0" in caplog.text
    with read_session(api.engine) as s:
        written = sorted((m.node, m.gpu_index) for m in s.exec(select(GpuMinute)))
    assert written == [("h-0", 0), ("h-1", 0), ("h-1", 1)]

    # The next minutes are written, the bad GPU's too; and a bad minute left at shutdown
    # does not make it fail.
    ingest.take([unchecked("h-0", (2, api.clock.now(), [sample(0), sample(1)]))])
    api.clock.advance(60)
    assert ingest.flush_minutes() == 2
    ingest.take([unchecked("h-0", (3, api.clock.now(), [sample(1, mem_used_bytes=2**70)]))])
    ingest.stop()
    assert api.count(GpuMinute) == 5
