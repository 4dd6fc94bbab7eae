"""Node agents' reports -> records: heartbeat, each GPU's latest sample, per-job usage,
per-minute history, and node health.

A request is checked at once (`check`: the token's node, timestamps, sequence numbers) and
handed to one writer thread that takes every report waiting at that moment in one
transaction, as submissions are taken (web/services/intake.py), and answers after the
commit: an acknowledged report is stored, and an agent resends what was not acknowledged.

In that transaction, per report, in order:
1. Resend guard: a report at or below the highest `seq` taken for the node's current
   agent run (`boot`) is a duplicate: acknowledged, not counted again.
2. Attribution: a GPU process counts for a job only if that job attempt holds GPUs on
   this node at the report's time (its allocation); any other process (no GPUPOOL_JOB_ID,
   or one naming a job that holds nothing here) is reported as not the pool's.
3. Usage: each GPU's time since the node's previous report (up to `max_gap_s`: a longer
   silence is not guessed at) is shared equally among the jobs on it: GPU-seconds,
   utilization, energy from the energy counter's delta (a counter that went backwards, a
   driver reload, gives no energy for that interval), and the peak memory of each job's
   processes on one GPU.
4. Health: a GPU whose uncorrectable ECC count grew, or that reported a critical Xid,
   drains its node (no new jobs) with the reason, which operators see on the node and in
   its history. A node that was down for missed heartbeats comes back up.
5. The node's row (node_telemetry) takes the report: the latest sample of each GPU, the
   jobs on it, the heartbeat (`received_at`, the server's clock).
6. The pool's utilization per minute (utilization_minutes, the operators' charts): the
   GPU-seconds of step 3, busy (utilization-weighted) and idle, added per (minute of the
   report, flavor of the node, sector of the job's project), one upsert row per key per
   transaction. (The scheduling loop sets the rows' `allocated` and `capacity`.)
History: samples add up in memory per GPU and minute; minutes that are over are written
(one row per GPU per minute) every few seconds, and rows older than `history_days` are
deleted every hour (with the utilization minutes as old). A crash loses at most the
minutes not yet written, which only charts read.

Silent nodes are the scheduling loop's business (DbDecisionSink.take_down_silent_nodes).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from sqlalchemy import Engine, Table, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError
from sqlmodel import Session

from agents.schema import GpuSample, NodeReport, ReportAck, ReportBatch
from web.db import write_session
from web.enums import NodeStateName
from web.models import (
    Allocation,
    GpuMinute,
    Job,
    JobUsage,
    Node,
    NodeTelemetry,
    Project,
    UtilizationMinute,
)
from web.services.batching import (
    GroupCommitWriter,
    settle,
    store_one_by_one_on_failure,
    worth_retrying,
)
from web.services.changes import record_change
from web.services.errors import Conflict, Forbidden, Invalid, ServiceError

log = logging.getLogger("gpupool.telemetry")

A = Allocation.__table__  # type: ignore[attr-defined]
J = Job.__table__  # type: ignore[attr-defined]
N = Node.__table__  # type: ignore[attr-defined]
NT = NodeTelemetry.__table__  # type: ignore[attr-defined]
GM = GpuMinute.__table__  # type: ignore[attr-defined]
JU = JobUsage.__table__  # type: ignore[attr-defined]
P = Project.__table__  # type: ignore[attr-defined]
UM = UtilizationMinute.__table__  # type: ignore[attr-defined]
UTILIZATION_SUMS = ("gpu_s", "busy_gpu_s", "idle_gpu_s")
# A report that failed alone with one of these holds a value no column can take (the
# schema's bounds should keep them out): refused, not answered as a server error, which
# the agent would resend for ever.
UNSTORABLE = (DataError, OverflowError)

# Xid errors after which a GPU should not take new work until an operator has looked
# (NVIDIA's Xid catalog: the ones whose action is a GPU reset or a node reboot).
CRITICAL_XIDS: dict[int, str] = {
    48: "double-bit ECC error",
    62: "internal micro-controller halt",
    64: "ECC page retirement or row remapping failure",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    92: "high single-bit ECC error rate",
    95: "uncontained ECC error",
    119: "GSP RPC timeout",
    120: "GSP error",
    140: "unrecovered ECC error",
}
HEARTBEAT_REASON = "missed heartbeats"  # the start of a silent node's reason
DRAINED_BEFORE = "; drained before: "


def silent_reason(last_report: float, drained: str | None) -> str:
    """Why a node whose agent went silent is down; a drained node's drain reason is kept in
    it, so that the node drains again when its agent is back (see back_from_silence)."""
    last = datetime.fromtimestamp(last_report, UTC).isoformat(timespec="seconds")
    reason = f"{HEARTBEAT_REASON}: no report from its agent since {last}"
    return reason if drained is None else f"{reason}{DRAINED_BEFORE}{drained}"


def back_from_silence(reason: str) -> tuple[str, str]:
    """The state and reason of a node down for `reason` (silent_reason) whose agent
    reports again: up, or draining again for what drained it before."""
    _, drained, before = reason.partition(DRAINED_BEFORE)
    if drained:
        return NodeStateName.DRAINING.value, before
    return NodeStateName.UP.value, ""


AGENT = "agent"  # the actor of the changes the agents' reports make


# Samples to add to the history once their transaction is committed: ((uuid, minute), sample, node)
Minutes = list[tuple[tuple[str, int], GpuSample, str]]


@dataclass(frozen=True, slots=True)
class TelemetryLimits:
    interval_s: float = 5.0  # how often agents should report (told in every answer)
    max_gap_s: float = 60.0  # a GPU's time between two reports counts up to this
    max_future_s: float = 300.0  # a report's time may be this far ahead of the server's
    history_days: float = 30.0
    idle_util_pct: float = 5.0  # a GPU a job holds under this utilization is idle


@dataclass(slots=True)
class _Pending:
    node: str
    batch: ReportBatch
    received_at: float
    result: Future[ReportAck] = field(default_factory=Future)


def check(batch: ReportBatch, token_node: str, now: float, limits: TelemetryLimits) -> None:
    """What can be refused before the writer: another node's reports, times off the
    server's clock, sequence numbers out of order, a GPU twice in one report."""
    if batch.node != token_node:
        raise Forbidden(
            f"this token belongs to node {token_node!r}; it cannot report for {batch.node!r}"
        )
    boots = {report.boot for report in batch.reports}
    if len(boots) > 1:
        raise Invalid("one batch holds the reports of one agent run (one boot)", "reports")
    oldest = now - limits.history_days * 86400.0
    previous = 0
    for i, report in enumerate(batch.reports):
        if report.at > now + limits.max_future_s:
            ahead = report.at - now
            raise Invalid(
                f"{ahead:.0f} s ahead of the server's clock (at most {limits.max_future_s:g} s "
                "is allowed): is the node's clock set?",
                f"reports.{i}.at",
            )
        if report.at < oldest:
            raise Invalid(
                f"older than the history kept ({limits.history_days:g} days)", f"reports.{i}.at"
            )
        if report.seq <= previous:
            raise Invalid("sequence numbers must increase within a batch", f"reports.{i}.seq")
        previous = report.seq
        uuids = [gpu.uuid for gpu in report.gpus]
        if len(set(uuids)) != len(uuids):
            raise Invalid("a GPU appears twice in one report", f"reports.{i}.gpus")


# What a GPU's next sample is compared with: (energy_mj, ecc_uncorrected, last_xid). A
# plain tuple for the garbage collector's sake (see MINUTE_COLUMNS): one per GPU is kept.
Previous = tuple[int | None, int | None, int | None]


def _previous(stored: dict[str, Any]) -> Previous:
    return (stored.get("energy_mj"), stored.get("ecc_uncorrected"), stored.get("last_xid"))


@dataclass(slots=True)
class _Usage:
    gpu_s: float = 0.0
    busy_gpu_s: float = 0.0
    util_gpu_s: float = 0.0
    energy_j: float = 0.0
    energy_gpu_s: float = 0.0
    idle_gpu_s: float = 0.0
    busy_seen: bool = False  # a report of this batch saw one of its GPUs busy
    idle_from: float | None = None  # when the idle run its latest reports show began
    peak_mem_bytes: int = 0
    first_at: float = math.inf
    last_at: float = 0.0


# A GPU's minute so far, as a plain tuple of these (the gpu_minutes columns): the history of
# the current minute is one per GPU of the pool, and tuples of numbers and strings are
# untracked by the garbage collector, whose full passes would otherwise scan them all.
MINUTE_COLUMNS = (
    "node",
    "gpu_index",
    "samples",
    "util_gpu_samples",
    "util_gpu_sum",
    "util_mem_sum",
    "power_w_sum",
    "power_samples",
    "mem_used_max",
    "temp_max",
)
Minute = tuple[str, int, int, int, float, float, float, int, int | None, float | None]


class TelemetryIngest(GroupCommitWriter["_Pending"]):
    what = "agent reports"
    thread_name = "gpupool-telemetry"

    def __init__(
        self,
        engine: Engine,
        limits: TelemetryLimits,
        clock: Callable[[], float] = time.time,
        max_batch: int = 1_000,
        flush_every_s: float = 5.0,
    ) -> None:
        super().__init__(max_batch)
        self.engine, self.limits, self.clock = engine, limits, clock
        self.flush_every_s = flush_every_s
        self._minutes: dict[tuple[str, int], Minute] = {}
        # node -> its node_telemetry row as this server last wrote it, so that a report
        # needs no JSON read back while no other server took one of that node's since.
        self._rows: dict[str, dict[str, Any]] = {}
        self._minutes_lock = threading.Lock()
        self._next_flush = 0.0
        self._next_prune = 0.0

    def stop(self) -> None:
        super().stop()
        self._guarded(partial(self.flush_minutes, everything=True))

    def submit(self, token_node: str, batch: ReportBatch, now: float) -> Future[ReportAck]:
        """Check now (raises the service's errors); store with the next group commit."""
        check(batch, token_node, now, self.limits)
        pending = _Pending(batch.node, batch, now)
        self.enqueue(pending)
        return pending.result

    # -- the writer ---------------------------------------------------------------------------

    def store(self, batch: list[_Pending]) -> None:
        """One transaction for the batch; if it fails, one per request, so that a report
        that cannot be stored fails alone and the other nodes' are stored."""
        answers = store_one_by_one_on_failure(
            batch, self._take_answered, self.what, lambda item: f"node {item.node}"
        )
        for item, answer in answers:
            if isinstance(answer, UNSTORABLE):  # a resend would fail the same way
                answer = Invalid(
                    f"this report holds a value the database cannot store ({answer}); "
                    "nothing of it was stored",
                    "reports",
                )
            settle(item.result, answer)

    def _take_answered(self, batch: list[_Pending]) -> list[tuple[_Pending, object]]:
        return list(zip(batch, self.take(batch), strict=True))

    def between_batches(self) -> None:
        now = self.clock()
        if now >= self._next_flush:
            self._next_flush = now + self.flush_every_s
            self._guarded(self.flush_minutes)
        if now >= self._next_prune:
            self._next_prune = now + 3600.0
            self._guarded(self.prune_history)

    @staticmethod
    def _guarded(step: Callable[[], object]) -> None:
        try:
            step()
        except Exception:  # history waits for the next round; reports go on
            log.exception("%s failed; trying again later", getattr(step, "__name__", step))

    def take(self, batch: list[_Pending]) -> list[ReportAck | ServiceError]:
        """Store the reports of `batch` in one transaction; each request's answer."""
        minutes: Minutes = []
        since = min(r.at for item in batch for r in item.batch.reports) - self.limits.max_gap_s
        nodes = {item.node for item in batch}
        with write_session(self.engine) as s:
            taking = _Taking(s, self.limits, nodes, since, self._rows)
            answers = [taking.add(item, minutes) for item in batch]
            taking.write()
        # Only what was committed is remembered (without the samples: few objects per node
        # keep the garbage collector's full passes short), and goes into the history.
        for node in taking.taken:
            row = taking.rows[node]
            self._rows[node] = {key: value for key, value in row.items() if key != "gpus"}
        with self._minutes_lock:
            for key, sample, node in minutes:
                self._add_minute(key, sample, node)
        return answers

    def _add_minute(self, key: tuple[str, int], sample: GpuSample, node: str) -> None:
        _, _, samples, util_n, util, mem_util, power, power_n, mem_max, temp_max = (
            self._minutes.get(key) or (node, sample.index, 0, 0, 0.0, 0.0, 0.0, 0, None, None)
        )
        if sample.util_gpu_pct is not None:
            util_n, util = util_n + 1, util + sample.util_gpu_pct
            mem_util += sample.util_mem_pct or 0.0
        if sample.power_w is not None:
            power_n, power = power_n + 1, power + sample.power_w
        if sample.mem_used_bytes is not None:
            mem_max = max(mem_max or 0, sample.mem_used_bytes)
        if sample.temp_c is not None:
            temp_max = sample.temp_c if temp_max is None else max(temp_max, sample.temp_c)
        self._minutes[key] = (
            node,
            sample.index,
            samples + 1,
            util_n,
            util,
            mem_util,
            power,
            power_n,
            mem_max,
            temp_max,
        )

    def flush_minutes(self, everything: bool = False) -> int:
        """Write the minutes that are over (all of them, with `everything`); how many."""
        with self._minutes_lock:  # the writer's own calls, and stop()'s (or a test's)
            return self._flush_minutes(everything)

    def _flush_minutes(self, everything: bool) -> int:
        current = int(self.clock() // 60)
        done = [key for key in self._minutes if everything or key[1] < current]
        if not done:
            return 0
        rows = [
            {
                "uuid": key[0],
                "minute": key[1],
                **dict(zip(MINUTE_COLUMNS, self._minutes[key], strict=True)),
            }
            for key in done
        ]
        written = self._write_minutes(rows)
        for key in done:
            del self._minutes[key]
        return written

    def _write_minutes(self, rows: list[dict[str, Any]]) -> int:
        """Write the rows in one transaction; if that fails for a reason a part may not
        share, in halves, down to the rows that fail alone, which are logged and dropped
        (one bad value never keeps the others, nor the next minutes, out). How many were
        written. The database out of reach raises: the minutes wait for the next round."""
        try:
            with write_session(self.engine) as s:
                upsert(
                    s,
                    GM,
                    rows,
                    keys=("uuid", "minute"),
                    add=MINUTE_COLUMNS[2:8],  # the counts and sums; the maxima below
                    greatest=MINUTE_COLUMNS[8:],
                )
            return len(rows)
        except Exception as err:
            if not worth_retrying(err):
                raise
            if len(rows) == 1:
                log.error(
                    "dropped GPU %s's minute %d of node %s: it cannot be stored (%s)",
                    rows[0]["uuid"],
                    rows[0]["minute"],
                    rows[0]["node"],
                    err,
                )
                return 0
        half = len(rows) // 2
        return self._write_minutes(rows[:half]) + self._write_minutes(rows[half:])

    def prune_history(self) -> int:
        """Delete the per-minute history older than `history_days` (the GPUs' minutes and
        the pool's utilization minutes); how many GPU minutes went."""
        oldest = int((self.clock() - self.limits.history_days * 86400.0) // 60)
        with write_session(self.engine) as s:
            result = s.execute(delete(GM).where(GM.c.minute < oldest))
            s.execute(delete(UM).where(UM.c.minute < oldest))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


class _Taking:
    """One transaction's worth of reports (see the module docstring)."""

    def __init__(
        self,
        s: Session,
        limits: TelemetryLimits,
        nodes: set[str],
        since: float,
        written: dict[str, dict[str, Any]],
    ) -> None:
        self.s, self.limits = s, limits
        self.rows = self._rows(nodes, written)
        self.taken: dict[str, float] = {}  # node -> when its latest report taken here came
        # (job, attempt) -> (flavor, sector) of the allocations below, for the utilization
        self.places: dict[tuple[int, int], tuple[str, str]] = {}
        self.allocations = self._allocations(nodes, since)
        self.usage: dict[tuple[int, int], _Usage] = defaultdict(_Usage)
        # (minute, flavor, sector) -> [gpu_s, busy_gpu_s, idle_gpu_s] of this transaction
        self.utilization: dict[tuple[int, str, str], list[float]] = {}
        self.drains: dict[str, str] = {}  # node -> why it should drain

    def _rows(
        self, nodes: set[str], written: dict[str, dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        """The nodes' node_telemetry rows: the ones this server wrote last (`written`) where
        the database still holds them (same boot and seq), the others read in full."""
        head = [column for column in NT.c if column.name != "gpus"]
        query = select(*head).where(NT.c.node.in_(nodes))
        if self.s.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()  # two servers taking one node's reports
        rows: dict[str, dict[str, Any]] = {}
        stale = []
        for r in self.s.execute(query):
            mine = written.get(r.node)
            if mine is not None and (mine["boot"], mine["seq"]) == (r.boot, r.seq):
                rows[r.node] = mine
            else:
                stale.append(r.node)
        if stale:
            for r in self.s.execute(select(NT).where(NT.c.node.in_(stale))):
                row = dict(r._mapping)
                row["prev"] = {g["uuid"]: _previous(g) for g in row.pop("gpus") or []}
                rows[r.node] = row
        return rows

    def _allocations(
        self, nodes: set[str], since: float
    ) -> dict[str, dict[tuple[int, int], tuple[float, float, int]]]:
        """Per node: (job, attempt) -> (start, end, GPUs) of the allocations the reports may
        fall in: open ones, and those that ended after `since` (and in `places`, each
        attempt's flavor and its project's sector)."""
        found: dict[str, dict[tuple[int, int], tuple[float, float, int]]] = defaultdict(dict)
        rows = self.s.execute(
            select(
                A.c.node,
                A.c.job_id,
                A.c.attempt,
                A.c.start,
                A.c.end,
                A.c.gpus,
                A.c.flavor,
                P.c.sector,
            )
            .join(J, J.c.id == A.c.job_id)
            .join(P, P.c.name == J.c.project)
            .where(A.c.node.in_(nodes), or_(A.c.end.is_(None), A.c.end >= since))
        )
        for r in rows:
            end = math.inf if r.end is None else r.end
            found[r.node][(r.job_id, r.attempt)] = (r.start, end, r.gpus)
            self.places[(r.job_id, r.attempt)] = (r.flavor, r.sector)
        return found

    def _utilization(self, key: tuple[int, int], at: float) -> list[float]:
        """The sums of the pool's minute of `at` that the job attempt `key` adds to."""
        flavor, sector = self.places[key]
        where = (int(at // 60), flavor, sector)
        sums = self.utilization.get(where)
        if sums is None:
            sums = self.utilization[where] = [0.0, 0.0, 0.0]
        return sums

    def add(self, item: _Pending, minutes: Minutes) -> ReportAck | ServiceError:
        node = item.node
        accepted = duplicates = 0
        row = self.rows.get(node)
        refusal = _earlier_run(row, item.batch.reports[0])
        if refusal is not None:
            return refusal
        for report in item.batch.reports:
            if row is not None and row["boot"] == report.boot and report.seq <= row["seq"]:
                duplicates += 1
                continue
            row = self._take(node, row, report, item.received_at, minutes)
            accepted += 1
        last_seq = row["seq"] if row is not None else 0
        return ReportAck(
            accepted=accepted,
            duplicates=duplicates,
            last_seq=last_seq,
            interval_s=self.limits.interval_s,
        )

    def _take(
        self,
        node: str,
        row: dict[str, Any] | None,
        report: NodeReport,
        received_at: float,
        minutes: Minutes,
    ) -> dict[str, Any]:
        before: dict[str, Previous] = row["prev"] if row is not None else {}
        gap = report.at - row["at"] if row is not None else 0.0
        counts = 0.0 < gap <= self.limits.max_gap_s
        minute = int(report.at // 60)
        gpus = []
        busy: dict[tuple[int, int], bool] = {}  # job -> one of its GPUs is busy here
        working: dict[tuple[int, int], int] = defaultdict(int)  # job -> GPUs its processes use
        for sample in report.gpus:
            jobs = self._jobs_of(node, sample, report.at)
            previous = before.get(sample.uuid)
            if sample.mig_parent_uuid is None:
                for key in jobs:
                    working[key] += 1
            if counts and jobs and previous is not None:
                self._count(sample, previous, jobs, gap, report.at)
                if sample.util_gpu_pct is not None:
                    for key in jobs:
                        is_busy = sample.util_gpu_pct >= self.limits.idle_util_pct
                        busy[key] = busy.get(key, False) or is_busy
            self._check_health(node, sample, previous)
            minutes.append(((sample.uuid, minute), sample, node))
            kept = _stored(sample)
            kept["jobs"] = sorted(jobs)
            if sample.xids:
                kept["last_xid"] = sample.xids[-1].xid
            elif previous is not None and previous[2] is not None:
                kept["last_xid"] = previous[2]
            gpus.append(kept)
        if counts:
            self._count_unused(node, working, busy, gap, report.at)
        fresh = {
            "node": node,
            "boot": report.boot,
            "seq": report.seq,
            "reports": (row["reports"] if row is not None else 0) + 1,
            "reader": report.reader,
            "driver_version": report.driver_version,
            "at": max(report.at, row["at"]) if row is not None else report.at,
            "received_at": received_at,
            "gpus": gpus,  # written, then dropped: the next report needs only `prev`
            "prev": {g["uuid"]: _previous(g) for g in gpus},
        }
        for key, is_busy in busy.items():
            usage = self.usage[key]
            if is_busy:
                usage.busy_seen, usage.idle_from = True, None
            elif usage.idle_from is None:
                usage.idle_from = report.at - gap
        self.rows[node] = fresh
        self.taken[node] = received_at
        return fresh

    def _jobs_of(self, node: str, sample: GpuSample, at: float) -> set[tuple[int, int]]:
        """The job attempts the GPU's processes belong to, among those holding GPUs here."""
        jobs: set[tuple[int, int]] = set()
        held = self.allocations.get(node)
        if not held:
            return jobs
        for process in sample.processes:
            if process.job_id is None or process.attempt is None or not process.job_id.isdigit():
                continue
            key = (int(process.job_id), process.attempt)
            span = held.get(key)
            if span is not None and span[0] <= at <= span[1]:
                jobs.add(key)
        return jobs

    def _count_unused(
        self,
        node: str,
        working: dict[tuple[int, int], int],
        busy: dict[tuple[int, int], bool],
        gap: float,
        at: float,
    ) -> None:
        """GPUs a job holds on this node that none of its processes use are idle GPUs it
        holds: counted as such (utilization 0), and a job with no process on any of them
        is idle here. (Its processes' environment must be readable: see the agent.)"""
        for key, (start, end, gpus) in self.allocations.get(node, {}).items():
            if not (start <= at - gap and at <= end):
                continue
            unused = gpus - working.get(key, 0)
            if unused <= 0:
                continue
            usage = self.usage[key]
            seconds = unused * gap
            usage.gpu_s += seconds
            usage.util_gpu_s += seconds
            usage.idle_gpu_s += seconds
            sums = self._utilization(key, at)
            sums[0] += seconds
            sums[2] += seconds
            usage.first_at = min(usage.first_at, at - gap)
            usage.last_at = max(usage.last_at, at)
            busy[key] = busy.get(key, False)

    def _count(
        self,
        sample: GpuSample,
        previous: Previous,
        jobs: set[tuple[int, int]],
        gap: float,
        at: float,
    ) -> None:
        share = gap / len(jobs)
        energy_j: float | None = None
        before = previous[0]
        if sample.energy_mj is not None and before is not None:
            delta = sample.energy_mj - before
            energy_j = delta / 1000.0 if delta >= 0 else None  # backwards: a driver reload
        memory: dict[tuple[int, int], int] = defaultdict(int)
        for process in sample.processes:
            if process.job_id is not None and process.job_id.isdigit() and process.attempt:
                memory[(int(process.job_id), process.attempt)] += process.used_memory_bytes or 0
        for key in jobs:
            usage = self.usage[key]
            usage.gpu_s += share
            sums = self._utilization(key, at)
            sums[0] += share
            if sample.util_gpu_pct is not None:
                busy = sample.util_gpu_pct / 100.0 * share
                usage.busy_gpu_s += busy
                usage.util_gpu_s += share
                sums[1] += busy
                if sample.util_gpu_pct < self.limits.idle_util_pct:
                    usage.idle_gpu_s += share
                    sums[2] += share
            if energy_j is not None:
                usage.energy_j += energy_j / len(jobs)
                usage.energy_gpu_s += share
            usage.peak_mem_bytes = max(usage.peak_mem_bytes, memory.get(key, 0))
            usage.first_at = min(usage.first_at, at - gap)
            usage.last_at = max(usage.last_at, at)

    def _check_health(self, node: str, sample: GpuSample, previous: Previous | None) -> None:
        if node in self.drains:
            return
        where = f"GPU {sample.index} ({sample.uuid})"
        before = previous[1] if previous is not None else 0
        if sample.ecc_uncorrected is not None and sample.ecc_uncorrected > (before or 0):
            self.drains[node] = (
                f"uncorrectable ECC errors on {where}: {sample.ecc_uncorrected} since the "
                "driver loaded"
            )
            return
        for event in sample.xids:
            if event.xid in CRITICAL_XIDS:
                self.drains[node] = f"Xid {event.xid} ({CRITICAL_XIDS[event.xid]}) on {where}"
                return

    def write(self) -> None:
        columns = [column.name for column in NT.c]
        rows = [{name: self.rows[node][name] for name in columns} for node in self.taken]
        upsert(self.s, NT, rows, keys=("node",))
        self._write_usage()
        self._write_utilization()
        self._write_health()

    def _write_utilization(self) -> None:
        """Add this transaction's GPU-seconds to the pool's minutes (in key order: two
        servers' transactions lock the rows in the same order)."""
        rows = [
            {"minute": minute, "flavor": flavor, "sector": sector}
            | dict(zip(UTILIZATION_SUMS, sums, strict=True))
            for (minute, flavor, sector), sums in sorted(self.utilization.items())
        ]
        upsert(self.s, UM, rows, keys=("minute", "flavor", "sector"), add=UTILIZATION_SUMS)

    def _write_usage(self) -> None:
        if not self.usage:
            return
        rows: list[dict[str, Any]] = [
            {
                "job_id": job,
                "attempt": attempt,
                "gpu_s": u.gpu_s,
                "busy_gpu_s": u.busy_gpu_s,
                "util_gpu_s": u.util_gpu_s,
                "energy_j": u.energy_j,
                "energy_gpu_s": u.energy_gpu_s,
                "idle_gpu_s": u.idle_gpu_s,
                "peak_mem_bytes": u.peak_mem_bytes,
                "first_at": u.first_at,
                "last_at": u.last_at,
                "idle_since": u.idle_from,
            }
            for (job, attempt), u in self.usage.items()
        ]
        # A busy GPU seen in this batch sets idle_since anew (to the idle run after it, or
        # none); only idle ones keep the run that began before this batch.
        for busy_seen in (True, False):
            upsert(
                self.s,
                JU,
                [
                    r
                    for r, u in zip(rows, self.usage.values(), strict=True)
                    if u.busy_seen is busy_seen
                ],
                keys=("job_id", "attempt"),
                add=("gpu_s", "busy_gpu_s", "util_gpu_s", "energy_j", "energy_gpu_s", "idle_gpu_s"),
                greatest=("peak_mem_bytes", "last_at"),
                least=("first_at",) if busy_seen else ("first_at", "idle_since"),
            )

    def _write_health(self) -> None:
        """Nodes down for missed heartbeats whose agents report again come back up first;
        then nodes with a failing GPU drain."""
        up, down = NodeStateName.UP.value, NodeStateName.DOWN.value
        draining = NodeStateName.DRAINING.value
        if not self.taken:
            return
        back = self.s.execute(
            select(N.c.name, N.c.state_reason).where(
                N.c.name.in_(self.taken),
                N.c.state == down,
                N.c.state_reason.startswith(HEARTBEAT_REASON),
            )
        ).all()
        for node, reason in back:
            state, why = back_from_silence(reason)
            self.s.execute(update(N).where(N.c.name == node).values(state=state, state_reason=why))
            note = "its agent reports again"
            at = self.taken[node]
            record_change(self.s, AGENT, f"node:{node}", "state", down, state, at, note)
        for node, why in self.drains.items():
            result = self.s.execute(
                update(N)
                .where(N.c.name == node, N.c.state == up)
                .values(state=draining, state_reason=why)
            )
            if result.rowcount:  # type: ignore[attr-defined]
                log.warning("node %s drained: %s", node, why)
                at = self.taken[node]
                record_change(self.s, AGENT, f"node:{node}", "state", up, draining, at, why)


def _earlier_run(row: dict[str, Any] | None, first: NodeReport) -> Conflict | None:
    """A report of another run of the node's agent is taken only if it was read after
    every report taken from the node: a run's reports are counted once per (boot, seq), so
    a report of an earlier run (a replay, or an old agent still running) coming after a
    new run's would be counted again."""
    if row is None or row["boot"] == first.boot or first.at > row["at"]:
        return None
    latest = datetime.fromtimestamp(row["at"], UTC).isoformat(timespec="seconds")
    return Conflict(
        f"a report of another run of this node's agent (boot {first.boot}) no newer than the "
        f"node's latest report (boot {row['boot']}, read at {latest}) is not taken: it is "
        "from an earlier run (a replay, or an old agent still running); a restarted agent's "
        "clock must not go back",
        "reports.0.boot",
    )


def _stored(sample: GpuSample) -> dict[str, Any]:
    """The sample as node_telemetry keeps it: its fields, without the Xid events (a
    shallow copy of the validated model's own dict: model_dump costs several times more,
    and this runs for every GPU of every report)."""
    kept = dict(sample.__dict__)
    del kept["xids"]
    kept["processes"] = [dict(process.__dict__) for process in sample.processes]
    return kept


def upsert(
    s: Session,
    table: Table,
    rows: list[dict[str, Any]],
    keys: Iterable[str],
    add: Iterable[str] = (),
    greatest: Iterable[str] = (),
    least: Iterable[str] = (),
) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE, on SQLite and PostgreSQL: columns in `add`
    add up, `greatest`/`least` keep the larger/smaller value, the others take the new."""
    if not rows:
        return
    dialect = s.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table)
    new, keys = statement.excluded, tuple(keys)
    add, greatest, least = set(add), set(greatest), set(least)
    values: dict[str, Any] = {}
    for name in rows[0]:
        if name in keys:
            continue
        old, fresh = table.c[name], new[name]
        if name in add:
            values[name] = old + fresh
        elif name in greatest or name in least:
            pick = _greatest if name in greatest else _least
            values[name] = pick(dialect, old, fresh)
        else:
            values[name] = fresh
    s.execute(statement.on_conflict_do_update(index_elements=list(keys), set_=values), rows)


def _greatest(dialect: str, old: Any, new: Any) -> Any:
    # SQLite's two-argument max() is its GREATEST; both ignore NULL differently, so coalesce.
    if dialect == "postgresql":
        return func.greatest(old, new)
    return func.max(func.coalesce(old, new), func.coalesce(new, old))


def _least(dialect: str, old: Any, new: Any) -> Any:
    if dialect == "postgresql":
        return func.least(old, new)
    return func.min(func.coalesce(old, new), func.coalesce(new, old))
