"""/metrics: the pool in Prometheus' text format.

GPU metrics carry dcgm-exporter's names, units and labels (`gpu`, `UUID`, `device`,
`modelName`, `Hostname`), so dashboards and alerts written for dcgm-exporter work unchanged,
from the latest report of each node's agent; plus `job` and `project` on a GPU that a job's
processes run on (empty otherwise, which Prometheus reads as absent). Two differences from
dcgm-exporter, both of type only: DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION is declared a gauge
(the Python client would rename a counter to ..._total; PromQL's rate() and increase() do
not mind), and a field a GPU does not report is left out rather than sent as 0.

`gpupool_*` gauges: the queue by project and flavor, allocated, borrowed, guaranteed and
limit GPUs, credits left, nodes and their GPUs by state and flavor, when each node's agent
last reported, processes on GPUs that belong to no job of the pool (worth an alert), and
how long each running job's GPUs have all been idle.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import case, func, select
from sqlmodel import Session

from web.enums import NodeStateName
from web.models import (
    Allocation,
    Job,
    JobState,
    JobUsage,
    Node,
    NodeTelemetry,
    Project,
    Quota,
)
from web.services.projects import credits_left

# Core tables: aggregate queries read plainer on them than on the ORM classes.
A = Allocation.__table__  # type: ignore[attr-defined]
J = Job.__table__  # type: ignore[attr-defined]
N = Node.__table__  # type: ignore[attr-defined]
NT = NodeTelemetry.__table__  # type: ignore[attr-defined]
JU = JobUsage.__table__  # type: ignore[attr-defined]
P = Project.__table__  # type: ignore[attr-defined]
Q = Quota.__table__  # type: ignore[attr-defined]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
GPU_LABELS = ["gpu", "UUID", "device", "modelName", "Hostname", "job", "project"]
MIB = 1024 * 1024

# name, help, the sample's field, how to turn it into the metric's unit
DCGM_FIELDS: list[tuple[str, str, str, float]] = [
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", "util_gpu_pct", 1.0),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %).", "util_mem_pct", 1.0),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", "mem_used_bytes", 1 / MIB),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", "power_w", 1.0),
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", "temp_c", 1.0),
    (
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "Total energy consumption since boot (in mJ).",
        "energy_mj",
        1.0,
    ),
    ("DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered.", "last_xid", 1.0),
]


class PoolCollector:
    """Reads the pool once per scrape (one read transaction) and yields the families."""

    def __init__(self, session: Session, idle_flag_after_s: float = 0.0) -> None:
        self.session, self.idle_flag_after_s = session, idle_flag_after_s

    def collect(self) -> Iterator[Metric]:
        s = self.session
        projects_of = self._projects_of_running_jobs()
        yield from self._gpus(projects_of)
        yield from self._queue()
        yield from self._allocations()
        yield from self._quotas()
        credits = GaugeMetricFamily(
            "gpupool_credits_left",
            "Credits a project has left (GPU-hours weighted by flavor); budgeted projects only.",
            labels=["project"],
        )
        for p in s.execute(
            select(P.c.name, P.c.credits, P.c.credits_used, P.c.credits_earned).where(
                P.c.credits.is_not(None)
            )
        ):
            credits.add_metric([p.name], credits_left(p) or 0.0)
        yield credits
        yield from self._nodes()
        yield self._idle_jobs()

    def _idle_jobs(self) -> Metric:
        idle = GaugeMetricFamily(
            "gpupool_job_idle_seconds",
            "How long all the GPUs of a running job have been idle (the agents' figures), for "
            "jobs flagged: idle at least GPUPOOL_IDLE_FLAG_AFTER_S.",
            # job_id, not job: Prometheus gives every series its own `job` (the scrape's).
            labels=["job_id", "project"],
        )
        now = time.time()
        for job_id, project, since in self.session.execute(
            select(J.c.id, J.c.project, JU.c.idle_since)
            .join(JU, (JU.c.job_id == J.c.id) & (JU.c.attempt == J.c.attempt))
            .where(J.c.state == JobState.RUNNING.value, JU.c.idle_since.is_not(None))
        ):
            if now - since >= self.idle_flag_after_s:  # flagged only after that long
                idle.add_metric([str(job_id), project], now - since)
        return idle

    def _projects_of_running_jobs(self) -> dict[int, str]:
        active = (JobState.ADMITTED.value, JobState.RUNNING.value)
        rows = self.session.execute(select(J.c.id, J.c.project).where(J.c.state.in_(active)))
        return {job_id: project for job_id, project in rows}

    def _gpus(self, projects_of: dict[int, str]) -> Iterator[Metric]:
        families = {
            name: GaugeMetricFamily(name, doc, labels=GPU_LABELS) for name, doc, _, _ in DCGM_FIELDS
        }
        free = GaugeMetricFamily(
            "DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", labels=GPU_LABELS
        )
        foreign = GaugeMetricFamily(
            "gpupool_gpu_foreign_processes",
            "Processes on the GPU that belong to no job of the pool.",
            labels=["gpu", "UUID", "Hostname"],
        )
        rows = self.session.execute(select(NT.c.node, NT.c.gpus).order_by(NT.c.node))
        for node, gpus in rows:
            for sample in gpus or []:
                labels = _gpu_labels(node, sample, projects_of)
                for name, _, key, scale in DCGM_FIELDS:
                    value = sample.get(key)
                    if value is not None:
                        families[name].add_metric(labels, float(value) * scale)
                used, total = sample.get("mem_used_bytes"), sample.get("mem_total_bytes")
                if used is not None and total is not None:
                    free.add_metric(labels, (total - used) / MIB)
                outsiders = sum(1 for p in sample.get("processes", []) if not p.get("job_id"))
                foreign.add_metric([str(sample["index"]), sample["uuid"], node], outsiders)
        yield from families.values()
        yield free
        yield foreign

    def _queue(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "gpupool_queue_length",
            "Jobs waiting, by project and flavor.",
            labels=["project", "flavor"],
        )
        gpus = GaugeMetricFamily(
            "gpupool_queue_gpus", "GPUs the waiting jobs ask for.", labels=["project", "flavor"]
        )
        for project, flavor, count, asked in self.session.execute(
            select(J.c.project, J.c.flavor, func.count(), func.sum(J.c.gpus))
            .where(J.c.state == JobState.QUEUED.value)
            .group_by(J.c.project, J.c.flavor)
        ):
            jobs.add_metric([project, flavor], count)
            gpus.add_metric([project, flavor], float(asked or 0))
        yield jobs
        yield gpus

    def _allocations(self) -> Iterator[Metric]:
        allocated = GaugeMetricFamily(
            "gpupool_allocated_gpus", "GPUs held by jobs now.", labels=["project", "flavor"]
        )
        borrowed = GaugeMetricFamily(
            "gpupool_borrowed_gpus",
            "GPUs held beyond the project's guarantee (preemptible).",
            labels=["project", "flavor"],
        )
        for project, flavor, held, lent in self.session.execute(
            select(
                J.c.project,
                A.c.flavor,
                func.sum(A.c.gpus),
                func.sum(case((A.c.borrowed, A.c.gpus), else_=0)),
            )
            .join(J, J.c.id == A.c.job_id)
            .where(A.c.end.is_(None))
            .group_by(J.c.project, A.c.flavor)
        ):
            allocated.add_metric([project, flavor], float(held or 0))
            borrowed.add_metric([project, flavor], float(lent or 0))
        yield allocated
        yield borrowed

    def _quotas(self) -> Iterator[Metric]:
        guaranteed = GaugeMetricFamily(
            "gpupool_guaranteed_gpus",
            "The project's guaranteed GPUs.",
            labels=["project", "flavor"],
        )
        limit = GaugeMetricFamily(
            "gpupool_limit_gpus",
            "The most GPUs the project may hold.",
            labels=["project", "flavor"],
        )
        for project, flavor, g, cap in self.session.execute(
            select(Q.c.project, Q.c.flavor, Q.c.guaranteed, Q.c.limit)
        ):
            guaranteed.add_metric([project, flavor], g)
            limit.add_metric([project, flavor], cap)
        yield guaranteed
        yield limit

    def _nodes(self) -> Iterator[Metric]:
        nodes = GaugeMetricFamily(
            "gpupool_nodes", "Nodes by state and flavor.", labels=["state", "flavor"]
        )
        gpus = GaugeMetricFamily(
            "gpupool_node_gpus",
            "GPUs of the nodes by state and flavor.",
            labels=["state", "flavor"],
        )
        counts: dict[tuple[str, str], tuple[int, int]] = defaultdict(lambda: (0, 0))
        for state, flavor, count, total in self.session.execute(
            select(N.c.state, N.c.flavor, func.count(), func.sum(N.c.gpus)).group_by(
                N.c.state, N.c.flavor
            )
        ):
            counts[(state, flavor)] = (count, int(total or 0))
        flavors = {flavor for _, flavor in counts}
        for flavor in sorted(flavors):
            for state in NodeStateName:  # every state, 0 included, for alerts on a change
                count, total = counts.get((state.value, flavor), (0, 0))
                nodes.add_metric([state.value, flavor], count)
                gpus.add_metric([state.value, flavor], total)
        yield nodes
        yield gpus
        heard = GaugeMetricFamily(
            "gpupool_node_last_report_timestamp_seconds",
            "When the node's agent last reported (the server's clock).",
            labels=["Hostname"],
        )
        for node, at in self.session.execute(select(NT.c.node, NT.c.received_at)):
            heard.add_metric([node], at)
        yield heard


def _gpu_labels(node: str, sample: dict[str, Any], projects_of: dict[int, str]) -> list[str]:
    jobs = sample.get("jobs") or []
    job = ",".join(str(job_id) for job_id, _ in jobs)
    project = ",".join(sorted({projects_of.get(job_id, "") for job_id, _ in jobs} - {""}))
    return [
        str(sample["index"]),
        sample["uuid"],
        f"nvidia{sample['index']}",
        sample.get("name", ""),
        node,
        job,
        project,
    ]


def render_metrics(session: Session, idle_flag_after_s: float = 0.0) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PoolCollector(session, idle_flag_after_s))
    return generate_latest(registry)
