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

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_REPORTS_PER_BATCH = 1_000
MAX_GPUS_PER_REPORT = 64 * 7  # 64 GPUs, each split into up to 7 MIG devices
MAX_PROCESSES_PER_GPU = 1_024
NodeName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
Text = Annotated[str, StringConstraints(max_length=200)]


class Strict(BaseModel):
    """Unknown fields are refused (a typo is an error, not a silently dropped value);
    numbers must be finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class GpuProcess(Strict):
    """A compute process on a GPU, and the job it belongs to (from GPUPOOL_JOB_ID and
    GPUPOOL_ATTEMPT in its environment; None: it belongs to no job of the pool, or its
    environment could not be read, which `note` then says)."""

    pid: int = Field(ge=0)
    used_memory_bytes: int | None = Field(default=None, ge=0)
    job_id: str | None = Field(default=None, max_length=32)
    attempt: int | None = Field(default=None, ge=0)
    note: Text = ""


class XidEvent(Strict):
    """An Xid error NVML reported for the GPU since the previous poll."""

    xid: int = Field(ge=0)
    at: float  # seconds since the epoch, when the agent received it


class GpuSample(Strict):
    index: int = Field(ge=0)  # NVML's index (for a MIG device: its parent's index)
    uuid: Annotated[str, StringConstraints(min_length=1, max_length=96)]
    name: Text = ""  # the model name, "NVIDIA H100 80GB HBM3"
    mig_parent_uuid: str | None = Field(default=None, max_length=96)  # set on MIG devices
    util_gpu_pct: float | None = Field(default=None, ge=0, le=100)
    util_mem_pct: float | None = Field(default=None, ge=0, le=100)
    mem_used_bytes: int | None = Field(default=None, ge=0)
    mem_total_bytes: int | None = Field(default=None, ge=0)
    power_w: float | None = Field(default=None, ge=0)
    energy_mj: int | None = Field(default=None, ge=0)  # total since the driver loaded
    temp_c: float | None = Field(default=None, ge=-100, le=200)
    ecc_corrected: int | None = Field(default=None, ge=0)  # volatile (since driver load)
    ecc_uncorrected: int | None = Field(default=None, ge=0)
    xids: list[XidEvent] = Field(default_factory=list, max_length=1_000)
    processes: list[GpuProcess] = Field(default_factory=list, max_length=MAX_PROCESSES_PER_GPU)
    errors: dict[Text, Text] = Field(default_factory=dict, max_length=64)


class NodeReport(Strict):
    boot: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{8,64}$")]
    seq: int = Field(ge=1)
    at: float  # seconds since the epoch, when the GPUs were read
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
