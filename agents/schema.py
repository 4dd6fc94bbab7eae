"""What a node agent sends to the control plane, and what it gets back: the one module the
agent and the server share (DESIGN.md, "Layers").

POST /api/v1/agents/reports with the node's own token, body `ReportBatch`, answer
`ReportAck`. A batch holds one or more `NodeReport`s of one node, oldest first (an agent
that could not reach the server sends what it buffered). Each report is a poll of all the
node's GPUs at one moment.

Resends are never counted twice: an agent numbers its reports `seq` = 1, 2, 3, ... within
one run (`boot`, a random id it draws at start); the server keeps the highest seq it took
per (node, boot) and acknowledges but ignores a report at or below it.

A field a GPU does not support, or that NVML could not read, is None (absent), never 0;
`errors` says why for each field that failed for any reason other than "not supported"
(so a failing reading is seen, not swallowed). Units are in the names: bytes, watts,
millijoules (NVML's total-energy counter, which only grows until the driver reloads),
degrees Celsius, percent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

MAX_REPORTS_PER_BATCH = 1_000
MAX_GPUS_PER_REPORT = 64 * 7  # 64 GPUs, each split into up to 7 MIG devices
MAX_PROCESSES_PER_GPU = 1_024

# Upper bounds of the numbers: what hardware can report, and what the server's columns
# hold (BigInteger: int64; Integer: int32 on PostgreSQL; Float: a finite double). A number
# past them is refused with a 422 naming the field (unbounded, one made the writer's group
# commit or the per-minute history fail for every node).
MAX_GPU_INDEX = 1_023  # NVML numbers a node's GPUs from 0; no machine has near 1,024
# 16 TiB of memory on one GPU (today's largest have under 300 GB); the peak of a job's
# processes on one GPU adds up MAX_PROCESSES_PER_GPU of them, far within a BigInteger.
MAX_MEMORY_BYTES = 2**44
MAX_POWER_W = 10_000.0  # no GPU draws 10 kW (today's largest: about 1.2 kW)
# NVML's energy counter (mJ since the driver loaded) and its ECC counters: up to 2**53, so
# exact as doubles (the energy's float sums, every JSON reader); 10 kW for 28 years.
MAX_COUNTER = 2**53 - 1
MIN_TEMP_C, MAX_TEMP_C = -100.0, 200.0  # a reading outside is a broken sensor
MAX_XID = 2**16 - 1  # NVIDIA's Xid catalog numbers them below 200
MAX_PID = 2**32 - 1  # NVML's pid is an unsigned 32-bit int
MAX_ATTEMPT = 2**31 - 1  # job_usage.attempt is a 32-bit INTEGER column
# node_telemetry.seq is a 32-bit INTEGER column on PostgreSQL: one report a second for
# 68 years of one agent run.
MAX_SEQ = 2**31 - 1
# Times (seconds since the epoch) up to 2500-01-01: the history's minute numbers stay
# within 32-bit INTEGER columns; the server refuses times far off its clock anyway.
MAX_TIME_S = datetime(2500, 1, 1, tzinfo=UTC).timestamp()
MAX_TEXT = 200  # node_telemetry.driver_version is a VARCHAR(200); names, notes, errors too
MAX_UUID = 96  # gpu_minutes.uuid is a VARCHAR(96)
JOB_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,32}$"  # what the agent reads from GPUPOOL_JOB_ID


def _storable(text: str) -> str:
    """Refuse NUL, which PostgreSQL's text cannot hold. (A lone UTF-16 surrogate, which no
    UTF-8 text can hold, pydantic refuses itself: in JSON, and in a Python str.)"""
    if "\x00" in text:
        raise ValueError("must not contain NUL characters (\\x00)")
    return text


def _text(max_length: int, min_length: int = 0, pattern: str | None = None) -> StringConstraints:
    return StringConstraints(min_length=min_length, max_length=max_length, pattern=pattern)


def _int(low: int, high: int) -> Any:
    return Field(strict=True, ge=low, le=high)  # strict: true is not 1, nor "5" 5


def _float(low: float, high: float) -> Any:
    return Field(strict=True, ge=low, le=high)  # strict: "5.0" is not 5.0


Storable = AfterValidator(_storable)
NodeName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
Text = Annotated[str, _text(MAX_TEXT), Storable]
Uuid = Annotated[str, _text(MAX_UUID, min_length=1), Storable]
JobId = Annotated[str, _text(32, pattern=JOB_ID_PATTERN), Storable]
Time = Annotated[float, _float(0.0, MAX_TIME_S)]
Bytes = Annotated[int, _int(0, MAX_MEMORY_BYTES)]
Counter = Annotated[int, _int(0, MAX_COUNTER)]
Percent = Annotated[float, _float(0.0, 100.0)]


class Strict(BaseModel):
    """Unknown fields are refused (a typo is an error, not a silently dropped value);
    numbers must be finite and within their bounds."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class GpuProcess(Strict):
    """A compute process on a GPU, and the job it belongs to (from GPUPOOL_JOB_ID and
    GPUPOOL_ATTEMPT in its environment; None: it belongs to no job of the pool, or its
    environment could not be read, which `note` then says)."""

    pid: Annotated[int, _int(0, MAX_PID)]
    used_memory_bytes: Bytes | None = None
    job_id: JobId | None = None
    attempt: Annotated[int, _int(0, MAX_ATTEMPT)] | None = None
    note: Text = ""


class XidEvent(Strict):
    """An Xid error NVML reported for the GPU since the previous poll."""

    xid: Annotated[int, _int(0, MAX_XID)]
    at: Time  # seconds since the epoch, when the agent received it


class GpuSample(Strict):
    index: Annotated[int, _int(0, MAX_GPU_INDEX)]  # NVML's (a MIG device: its parent's)
    uuid: Uuid
    name: Text = ""  # the model name, "NVIDIA H100 80GB HBM3"
    mig_parent_uuid: Uuid | None = None  # set on MIG devices
    util_gpu_pct: Percent | None = None
    util_mem_pct: Percent | None = None
    mem_used_bytes: Bytes | None = None
    mem_total_bytes: Bytes | None = None
    power_w: Annotated[float, _float(0.0, MAX_POWER_W)] | None = None
    energy_mj: Counter | None = None  # total since the driver loaded
    temp_c: Annotated[float, _float(MIN_TEMP_C, MAX_TEMP_C)] | None = None
    ecc_corrected: Counter | None = None  # volatile (since driver load)
    ecc_uncorrected: Counter | None = None
    xids: list[XidEvent] = Field(default_factory=list, max_length=1_000)
    processes: list[GpuProcess] = Field(default_factory=list, max_length=MAX_PROCESSES_PER_GPU)
    errors: dict[Text, Text] = Field(default_factory=dict, max_length=64)


class NodeReport(Strict):
    boot: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{8,64}$")]
    seq: Annotated[int, _int(1, MAX_SEQ)]
    at: Time  # seconds since the epoch, when the GPUs were read
    reader: Annotated[str, StringConstraints(pattern=r"^(nvml|simulated)$")] = "nvml"
    driver_version: Text = ""
    gpus: list[GpuSample] = Field(default_factory=list, max_length=MAX_GPUS_PER_REPORT)


class ReportBatch(Strict):
    node: NodeName
    reports: list[NodeReport] = Field(min_length=1, max_length=MAX_REPORTS_PER_BATCH)


class ReportAck(Strict):
    accepted: int  # reports taken now
    duplicates: int  # reports already taken earlier (a resend): ignored
    last_seq: int  # the highest seq the server holds for this boot
    interval_s: float  # how often the server wants a report
