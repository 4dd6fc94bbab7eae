"""`gpupool bench portal`: every main page of the portal, timed on a pool the size of the
issue's target (10,000 nodes, 100,000 jobs), served over real HTTP.

The database is built straight with bulk inserts (one transaction, executemany over rows
made in memory; not the services one at a time), then the app is served by uvicorn in a
process of its own, as `gpupool serve` runs it but without the scheduling loop: the loop
would admit the queued jobs and, with no agents reporting, take the nodes down a minute
later, and the pages would be timed over a pool changing under them. Each page is asked
`requests` times, one request after another on one keep-alive connection, by a user of
the role the page is for (after a few untimed requests to warm the caches).

The pool: `nodes` 8-GPU nodes of two flavors in 40 racks (1% down, 1% draining, with
reasons), each with its agent's latest report of 8 GPUs (the jobs' processes on them);
`projects` projects over three sectors (a few requested, approved and closed), a PI and a
member each, with quotas on both flavors and credits; `jobs` jobs over the active
projects, a tenth of them in the first project (the bench researcher's, so their pages
are the heavy ones), in mixed states: most ended, some queued with a reason and an
estimated start, some running with allocations packed onto the nodes (a few flagged idle);
an attempt, allocations and usage for every job that ran; a week of utilization_minutes;
an hour of per-GPU minutes for the nodes whose pages are timed; a change history.

Times are measured in the server (a Server-Timing header added by a wrapper around the
app: from the request's arrival to the response's start, which for these pages comes
after the whole page is rendered) and by the client over loopback (the request's round
trip), both in milliseconds. A page that answers 404 is reported as missing (not built
yet), any other failure as an error with its status; neither is timed.
"""

from __future__ import annotations

import math
import multiprocessing
import random
import re
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, Table, text

from web.bench import free_port, scratch_database
from web.db import make_engine, migrate, write_session
from web.models import (
    Allocation,
    Attempt,
    Change,
    Flavor,
    GpuMinute,
    Job,
    JobUsage,
    Membership,
    Node,
    NodeTelemetry,
    Project,
    Quota,
    Role,
    Sector,
    User,
    UtilizationMinute,
)
from web.services.auth import Principal, set_password
from web.settings import Settings

GPUS = 8
GIB = 1024**3
TARGET_MS = 200.0  # the target: every page under 200 ms at the 95th percentile
WARM_UP = 3  # untimed requests per page first
BATCH = 20_000  # rows per executemany
UTILIZATION_DAYS = 7
FLAVORS = (("H100-80GB", 2.0, 0.6), ("A100-80GB", 1.0, 0.4))  # name, credit rate, share
SECTORS = (("academia", 1.5), ("industry", 1.0), ("research", 1.0))
REASONS = (
    ("capacity", "waiting for {gpus} {flavor} GPUs in quota"),
    ("over_limit", "over the project's limit of {limit} {flavor} GPUs"),
    ("credits", "credits exhausted"),
    ("reserved", "next in line: {gpus} {flavor} GPUs held for it"),
    ("backfill", "would delay the job next in line"),
)
ENDED = (("succeeded", 0.70), ("failed", 0.15), ("cancelled", 0.10), ("timeout", 0.05))
PASSWORD = "bench-password"
RESEARCHER, ADMIN, OPERATOR = "u0000", "admin", "ops"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
TIMING = re.compile(r"app;dur=([0-9.]+)")


@dataclass
class World:
    """What was built, for choosing the pages' parameters."""

    project: str  # the bench researcher's project (the largest)
    other_project: str  # an admin's project page with a history
    jobs: dict[str, list[int]] = field(default_factory=dict)  # state group -> job ids
    node: str = ""  # a node with jobs on it and an hour of GPU minutes
    down_node: str = ""
    user: str = RESEARCHER
    counts: dict[str, int] = field(default_factory=dict)


def bench_portal(
    nodes: int = 10_000,
    jobs: int = 100_000,
    requests: int = 50,
    database_url: str | None = None,
    projects: int = 300,
    seed: int = 7,
) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="gpupool-bench-") as tmp,
        scratch_database(database_url) as db,
    ):
        settings = Settings(
            data_dir=Path(tmp) / "data", database_url=db, port=free_port(), dispatcher="none"
        )
        engine = make_engine(settings)
        migrate(engine)
        began = time.perf_counter()
        world = build_pool_database(engine, nodes, jobs, projects, time.time(), seed)
        build_s = time.perf_counter() - began
        if not settings.is_sqlite:
            # PostgreSQL's autovacuum analyzes tables this size within a minute of loading.
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE"))
        with write_session(engine) as session:
            for user in (RESEARCHER, ADMIN, OPERATOR):
                set_password(session, Principal("bench", Role.ADMIN), user, PASSWORD, 0.0)
        engine.dispose()
        server = start_portal(settings)
        try:
            base = f"http://127.0.0.1:{settings.port}"
            wait_up(base, server)
            pages = time_pages(base, pages_to_time(world), requests)
        finally:
            stop_portal(server)
    slow = [p for p, r in pages.items() if r.get("p95_ms") is not None and r["p95_ms"] > TARGET_MS]
    return {
        "database": "sqlite" if not db else "postgresql",
        "nodes": nodes,
        "jobs": jobs,
        "projects": projects,
        "build_s": round(build_s, 1),
        "rows": world.counts,
        "requests_per_page": requests,
        "measured": "server-side (Server-Timing, ms) and client-side over loopback (ms)",
        "pages": pages,
        "over_200ms_p95": slow,
        "missing": [p for p, r in pages.items() if r["status"] == 404],
        "errors": {p: r["status"] for p, r in pages.items() if r["status"] not in (200, 404)},
    }


# --- the database ------------------------------------------------------------------------


def build_pool_database(
    engine: Engine, nodes: int, jobs: int, projects: int, now: float, seed: int = 7
) -> World:
    """Fill a migrated, empty database with the bench pool in one transaction."""
    rng = random.Random(seed)
    rows: dict[Table, list[dict[str, Any]]] = {}

    def add(model: Any, row: dict[str, Any]) -> None:
        rows.setdefault(model.__table__, []).append(row)

    for name, rate, _ in FLAVORS:
        add(Flavor, {"name": name, "credit_rate": rate})
    for name, weight in SECTORS:
        add(Sector, {"name": name, "weight": weight})

    def user(name: str, role: str) -> None:
        add(
            User,
            {
                "name": name,
                "full_name": f"User {name}",
                "email": f"{name}@example.org",
                "role": role,
                "active": True,
                "created_at": now - 90 * 86400,
                "password_hash": None,
            },
        )

    user(ADMIN, "admin")
    user(OPERATOR, "operator")
    names = [f"p{i:03d}" for i in range(projects)]
    states = _project_states(projects)
    for i, project in enumerate(names):
        pi, member = f"u{2 * i:04d}", f"u{2 * i + 1:04d}"
        user(pi, "researcher")
        user(member, "researcher")
        state = states[i]
        decided = state != "requested"
        add(
            Project,
            {
                "name": project,
                "title": f"Project {i}: models of things at scale",
                "sector": SECTORS[i % len(SECTORS)][0],
                "state": state,
                "pi": pi,
                "justification": "We train models; the pool's GPUs would let us train larger ones.",
                "requested_gpus": 8 * (1 + i % 8),
                "requested_gpu_hours": 10_000.0 * (1 + i % 5),
                "credits": 200_000.0,
                "credits_used": rng.uniform(0, 150_000),
                "credits_earned": rng.uniform(0, 5_000),
                "share": None,
                "default_max_runtime_s": None,
                "idle_stop_after_s": None,
                "usage_gpu_s": rng.uniform(0, 1e7),
                "usage_at": now,
                "created_at": now - 60 * 86400,
                "expires_at": now + 300 * 86400,
                "decided_by": ADMIN if decided else None,
                "decided_at": now - 59 * 86400 if decided else None,
                "decision_note": "approved by the allocation committee" if decided else "",
            },
        )
        add(Membership, {"project": project, "user": pi, "role": "pi"})
        add(Membership, {"project": project, "user": member, "role": "member"})
        for flavor, _, _ in FLAVORS:
            guaranteed = 8 * (1 + i % 6)
            add(
                Quota,
                {
                    "project": project,
                    "flavor": flavor,
                    "guaranteed": guaranteed,
                    "limit": guaranteed * 4,
                    "credit_rate": None,
                },
            )
            for k in range(3):
                add(
                    Change,
                    {
                        "at": now - (50 - k) * 86400,
                        "actor": ADMIN,
                        "subject": f"project:{project}",
                        "field": f"quota.{flavor}.limit",
                        "old": str(guaranteed * (k + 1)),
                        "new": str(guaranteed * (k + 2)),
                        "note": "allocation review",
                    },
                )

    node_names, node_flavor, node_state = _nodes(add, nodes, now)
    active = [p for p, s in zip(names, states, strict=True) if s == "active"]
    world = World(project=active[0], other_project=active[1])
    running = _jobs(add, rng, jobs, active, node_names, node_flavor, node_state, now, world)
    _telemetry(add, rng, node_names, node_flavor, node_state, running, now)
    world.node = next(n for n in node_names if n in running)
    world.down_node = next(n for n in node_names if node_state[n] == "down")
    _gpu_minutes(add, rng, [world.node, world.down_node, *node_names[:8]], now)
    _utilization(add, rng, nodes, now)

    with engine.begin() as conn:
        for table, batch in rows.items():
            for start in range(0, len(batch), BATCH):
                conn.execute(table.insert(), batch[start : start + BATCH])
        if engine.dialect.name == "postgresql":
            for serial in ("jobs", "allocations", "changes"):
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{serial}', 'id'), "
                        f"(SELECT max(id) FROM {serial}))"
                    )
                )
    world.counts = {table.name: len(batch) for table, batch in rows.items()}
    return world


def _project_states(projects: int) -> list[str]:
    """Most active; a few requested (the admins' queue), approved and closed."""
    states = ["active"] * projects
    for i in range(projects):
        if i % 25 == 24:
            states[i] = "requested"
        elif i % 50 == 23:
            states[i] = "approved"
        elif i % 100 == 22:
            states[i] = "closed"
    return states


def _nodes(
    add: Callable[[Any, dict[str, Any]], None], nodes: int, now: float
) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """The nodes; their flavors and states by name. One in a hundred is down and one
    draining, counted from the last (so a pool of two has one of each)."""
    width = len(str(nodes))
    names: list[str] = []
    flavor_of: dict[str, str] = {}
    state_of: dict[str, str] = {}
    first_a100 = round(nodes * FLAVORS[0][2])
    for i in range(nodes):
        flavor = FLAVORS[0][0] if i < first_a100 else FLAVORS[1][0]
        state, reason = "up", ""
        if (nodes - 1 - i) % 100 == 0:
            state, reason = "down", "no report for 60 s (last heartbeat missed)"
        elif (nodes - 1 - i) % 100 == 1:
            state, reason = "draining", "GPU 3: uncorrectable ECC errors"
        name = f"n-{i:0{width}d}"
        names.append(name)
        flavor_of[name], state_of[name] = flavor, state
        add(
            Node,
            {
                "name": name,
                "flavor": flavor,
                "gpus": GPUS,
                "group": f"rack-{i % 40:02d}",
                "state": state,
                "state_reason": reason,
                "registered_at": now - 90 * 86400,
                "last_heartbeat": now - (600 if state == "down" else 2),
            },
        )
    return names, flavor_of, state_of


def _jobs(
    add: Callable[[Any, dict[str, Any]], None],
    rng: random.Random,
    jobs: int,
    active: list[str],
    node_names: list[str],
    node_flavor: dict[str, str],
    node_state: dict[str, str],
    now: float,
    world: World,
) -> dict[str, list[tuple[int, int, int]]]:
    """`jobs` jobs over the active projects; the running ones packed onto nodes not down.
    Returns node -> [(job, attempt, gpus)] of the running jobs."""
    pis = {p: f"u{2 * int(p[1:]):04d}" for p in active}
    members = {p: f"u{2 * int(p[1:]) + 1:04d}" for p in active}
    free = {n: GPUS for n in node_names if node_state[n] != "down"}
    order = {f: [n for n in free if node_flavor[n] == f] for f, _, _ in FLAVORS}
    cursor = dict.fromkeys(order, 0)
    running: dict[str, list[tuple[int, int, int]]] = {}
    queued_share, running_share = 0.04, 0.06
    groups: dict[str, list[int]] = {"queued": [], "running": [], "ended": []}
    for job_id in range(1, jobs + 1):
        project = active[0] if job_id % 10 == 0 else active[rng.randrange(len(active))]
        user = pis[project] if rng.random() < 0.6 else members[project]
        flavor = rng.choice([FLAVORS[0][0], FLAVORS[0][0], FLAVORS[1][0]])
        gpus = rng.choice([1, 1, 2, 4, 8])
        submitted = now - rng.uniform(60, 30 * 86400)
        roll = rng.random()
        state = "queued" if roll < queued_share else "running"
        if roll >= queued_share + running_share:
            state = _pick(rng, ENDED)
        node = ""
        if state == "running":  # on the first node of its flavor with room (best fit)
            nodes_of, at = order[flavor], cursor[flavor]
            while at < len(nodes_of) and free[nodes_of[at]] < gpus:
                at += 1
            if at >= len(nodes_of):
                state = "succeeded"  # no room left: it ran earlier instead
            else:
                node = nodes_of[at]
                free[node] -= gpus
                cursor[flavor] = at if free[node] else at + 1
        reason_code, reason, est_start = "", "", None
        admitted = started = ended = None
        outcome, attempt = "", 0
        if state == "queued":
            code, words = REASONS[rng.randrange(len(REASONS))]
            reason_code = code
            reason = words.format(gpus=gpus, flavor=flavor, limit=gpus * 4)
            est_start = (
                now + rng.uniform(60, 6 * 3600) if code in ("capacity", "reserved") else None
            )
        else:
            attempt = 1
            admitted = submitted + rng.uniform(1, 3600)
            started = admitted + rng.uniform(0.5, 5)
            if state == "running":
                admitted = min(admitted, now - 120)
                started = min(started, now - 60)
            else:
                ended = min(started + rng.uniform(60, 8 * 3600), now - 1)
                outcome = {"succeeded": "exited 0", "failed": "exited 1"}.get(state, state)
        add(
            Job,
            {
                "id": job_id,
                "project": project,
                "user": user,
                "name": f"train-{job_id}",
                "entrypoint": "python train.py --epochs 90",
                "runtime_env": {"working_dir": "/home/lab/model"},
                "gpus": gpus,
                "flavor": flavor,
                "flavor_used": flavor if attempt else None,
                "nodes": None,
                "max_runtime_s": 8 * 3600.0,
                "priority": 0,
                "state": state,
                "attempt": attempt,
                "reason_code": reason_code,
                "reason": reason,
                "est_start": est_start,
                "submitted_at": submitted,
                "admitted_at": admitted,
                "started_at": started,
                "ended_at": ended,
                "idempotency_key": None,
                "array_id": None,
                "array_index": 0,
                "borrowed": False,
                "reserved_flavor": None,
                "preempted_for": None,
                "stopping_at": None,
                "stop_reason": None,
                "cancel_requested_at": None,
                "outcome": outcome,
            },
        )
        if project == world.project:
            groups["queued" if state == "queued" else "running" if node else "ended"].append(job_id)
        if not attempt:
            continue
        assert admitted is not None and started is not None
        add(
            Attempt,
            {
                "job_id": job_id,
                "number": 1,
                "flavor": flavor,
                "gpus": gpus,
                "borrowed": False,
                "admitted_at": admitted,
                "started_at": started,
                "ended_at": ended,
                "outcome": state if ended is not None else "",
                "message": "",
            },
        )
        if not node:
            node = node_names[rng.randrange(len(node_names))]
            flavor_of_node = node_flavor[node]
        else:
            flavor_of_node = flavor
            running.setdefault(node, []).append((job_id, 1, gpus))
        add(
            Allocation,
            {
                "job_id": job_id,
                "attempt": 1,
                "node": node,
                "flavor": flavor_of_node,
                "gpus": gpus,
                "start": admitted,
                "end": ended,
                "borrowed": False,
            },
        )
        held = ((ended if ended is not None else now) - started) * gpus
        idle = state == "running" and job_id % 29 == 0
        add(
            JobUsage,
            {
                "job_id": job_id,
                "attempt": 1,
                "gpu_s": held,
                "busy_gpu_s": held * (0.02 if idle else 0.7),
                "util_gpu_s": held,
                "energy_j": held * 300.0,
                "energy_gpu_s": held,
                "idle_gpu_s": held if idle else held * 0.05,
                "idle_since": now - 3600 if idle else None,
                "peak_mem_bytes": 60 * GIB,
                "first_at": started,
                "last_at": ended if ended is not None else now - 2,
            },
        )
    world.jobs = groups
    return running


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    roll, total = rng.random(), 0.0
    for value, weight in weighted:
        total += weight
        if roll < total:
            return value
    return weighted[-1][0]


def _telemetry(
    add: Callable[[Any, dict[str, Any]], None],
    rng: random.Random,
    node_names: list[str],
    node_flavor: dict[str, str],
    node_state: dict[str, str],
    running: dict[str, list[tuple[int, int, int]]],
    now: float,
) -> None:
    """Each node's latest report: 8 GPUs, the running jobs' processes on theirs."""
    for name in node_names:
        down = node_state[name] == "down"
        owners: list[tuple[int, int] | None] = []
        for job_id, attempt, count in running.get(name, []):
            owners.extend([(job_id, attempt)] * count)
        owners.extend([None] * (GPUS - len(owners)))
        gpus: list[dict[str, Any]] = []
        for index, owner in enumerate(owners):
            busy = owner is not None and owner[0] % 29 != 0
            gpus.append(
                {
                    "index": index,
                    "uuid": f"GPU-{name}-{index}",
                    "name": f"NVIDIA {node_flavor[name].split('-')[0]}",
                    "mig_parent_uuid": None,
                    "util_gpu_pct": rng.uniform(60, 100) if busy else 0.0,
                    "util_mem_pct": rng.uniform(20, 60) if busy else 0.0,
                    "mem_used_bytes": 60 * GIB if owner else 0,
                    "mem_total_bytes": 80 * GIB,
                    "power_w": rng.uniform(250, 700) if busy else 60.0,
                    "energy_mj": rng.randrange(10**12),
                    "temp_c": rng.uniform(40, 80),
                    "ecc_corrected": 0,
                    "ecc_uncorrected": 4 if node_state[name] == "draining" and index == 3 else 0,
                    "processes": (
                        [
                            {
                                "pid": 10_000 + index,
                                "used_memory_bytes": 60 * GIB,
                                "job_id": str(owner[0]),
                                "attempt": owner[1],
                                "note": "",
                            }
                        ]
                        if owner
                        else []
                    ),
                    "errors": {},
                    "jobs": [list(owner)] if owner else [],
                }
            )
        at = now - (600 if down else 2)
        add(
            NodeTelemetry,
            {
                "node": name,
                "boot": "0be0c0de",
                "seq": 1000,
                "reports": 1000,
                "reader": "nvml",
                "driver_version": "570.86.15",
                "at": at,
                "received_at": at,
                "gpus": gpus,
            },
        )


def _gpu_minutes(
    add: Callable[[Any, dict[str, Any]], None],
    rng: random.Random,
    nodes: list[str],
    now: float,
) -> None:
    """The last hour of per-GPU minutes for a few nodes (the node pages' charts)."""
    last = int(now // 60)
    for name in dict.fromkeys(nodes):
        for minute in range(last - 60, last):
            for index in range(GPUS):
                util = rng.uniform(0, 100)
                add(
                    GpuMinute,
                    {
                        "uuid": f"GPU-{name}-{index}",
                        "minute": minute,
                        "node": name,
                        "gpu_index": index,
                        "samples": 12,
                        "util_gpu_samples": 12,
                        "util_gpu_sum": util * 12,
                        "util_mem_sum": util * 6,
                        "power_w_sum": 400.0 * 12,
                        "power_samples": 12,
                        "mem_used_max": 60 * GIB,
                        "temp_max": 70.0,
                    },
                )


def _utilization(
    add: Callable[[Any, dict[str, Any]], None], rng: random.Random, nodes: int, now: float
) -> None:
    """A week of utilization_minutes (the longest range the operators' charts show): per
    flavor its capacity (sector ""), per flavor and sector what was allocated, held, busy
    and idle."""
    last = int(now // 60)
    for flavor, _, share in FLAVORS:
        capacity = round(nodes * share) * GPUS
        for minute in range(last - UTILIZATION_DAYS * 1440, last):
            add(
                UtilizationMinute,
                {
                    "minute": minute,
                    "flavor": flavor,
                    "sector": "",
                    "capacity": capacity,
                    "allocated": 0,
                    "gpu_s": 0.0,
                    "busy_gpu_s": 0.0,
                    "idle_gpu_s": 0.0,
                },
            )
            for sector, _ in SECTORS:
                allocated = int(capacity / len(SECTORS) * rng.uniform(0.5, 0.9))
                held = allocated * 60.0
                add(
                    UtilizationMinute,
                    {
                        "minute": minute,
                        "flavor": flavor,
                        "sector": sector,
                        "capacity": 0,
                        "allocated": allocated,
                        "gpu_s": held,
                        "busy_gpu_s": held * 0.7,
                        "idle_gpu_s": held * 0.1,
                    },
                )


# --- the server --------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class ServerTiming:
    """Adds `Server-Timing: app;dur=MS` to every answer: the time from the request's
    arrival to the response's start (a page's whole render, for HTML responses)."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                took = (time.perf_counter() - began) * 1000
                headers = [*message.get("headers", []), (b"server-timing", b"app;dur=%.3f" % took)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed)


def serve_portal(values: dict[str, Any]) -> None:
    """The server process: the app over the pool's database, without a scheduling loop."""
    import uvicorn

    from web.api.app import create_app
    from web.pool import build_pool
    from web.scheduler_process import settle_garbage_collector

    settings = Settings(**values)
    pool = build_pool(settings, dispatcher=None)
    app = ServerTiming(create_app(pool))
    settle_garbage_collector()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


def start_portal(settings: Settings) -> multiprocessing.process.BaseProcess:
    values = {
        "data_dir": str(settings.data_dir),
        "database_url": settings.database_url,
        "port": settings.port,
        "dispatcher": settings.dispatcher,
    }
    process = multiprocessing.get_context("spawn").Process(
        target=serve_portal, args=(values,), name="gpupool-bench-portal", daemon=True
    )
    process.start()
    return process


def wait_up(base: str, server: multiprocessing.process.BaseProcess) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        if not server.is_alive():
            raise RuntimeError(f"the portal's server exited at start (code {server.exitcode})")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the portal's server did not come up in 120 s")


def stop_portal(server: multiprocessing.process.BaseProcess) -> None:
    if server.is_alive():
        server.terminate()  # SIGTERM: uvicorn shuts down gracefully
        server.join(timeout=30)
    if server.is_alive():
        server.kill()
        server.join(timeout=10)


# --- the pages ---------------------------------------------------------------------------


def pages_to_time(world: World) -> list[tuple[str, str, list[str]]]:
    """(label, user, paths): each page with the user who asks for it; a page with several
    paths asks for each in turn (a job page for a queued, a running and an ended job)."""
    jobs = [ids[len(ids) // 2] for ids in world.jobs.values() if ids]
    project, other = world.project, world.other_project
    researcher, admin, ops = world.user, ADMIN, OPERATOR
    return [
        ("/", researcher, ["/"]),
        ("/jobs", researcher, ["/jobs"]),
        ("/jobs?state=queued", researcher, ["/jobs?state=queued"]),
        ("/jobs/ID", researcher, [f"/jobs/{i}" for i in jobs]),
        ("/submit", researcher, ["/submit"]),
        ("/statements", researcher, ["/statements"]),
        ("/verify", researcher, ["/verify"]),
        ("/requests/new", researcher, ["/requests/new"]),
        ("/projects/NAME", researcher, [f"/projects/{project}"]),
        ("/account", researcher, ["/account"]),
        ("/jobs (admin: every job)", admin, ["/jobs"]),
        ("/admin", admin, ["/admin"]),
        ("/admin/requests", admin, ["/admin/requests"]),
        ("/admin/projects", admin, ["/admin/projects"]),
        ("/admin/projects/NAME", admin, [f"/admin/projects/{other}"]),
        ("/admin/users", admin, ["/admin/users"]),
        ("/admin/users/NAME", admin, [f"/admin/users/{researcher}"]),
        ("/admin/sectors", admin, ["/admin/sectors"]),
        ("/admin/changes", admin, ["/admin/changes"]),
        ("/ops", ops, ["/ops"]),
        ("/ops?range=7d", ops, ["/ops?range=7d"]),
        ("/ops/nodes", ops, ["/ops/nodes"]),
        ("/ops/nodes?state=down", ops, ["/ops/nodes?state=down"]),
        ("/ops/nodes/NAME", ops, [f"/ops/nodes/{world.node}"]),
        ("/ops/queue", ops, ["/ops/queue"]),
        ("/ops/idle", ops, ["/ops/idle"]),
    ]


def sign_in(base: str, user: str) -> httpx.Client:
    """A client with `user`'s session cookie, signed in through the form."""
    client = httpx.Client(base_url=base, timeout=60, follow_redirects=False)
    form = client.get("/signin")
    found = CSRF.search(form.text)
    if found is None:
        raise RuntimeError(f"no form token on /signin ({form.status_code})")
    answer = client.post(
        "/signin", data={"csrf_token": found.group(1), "user": user, "password": PASSWORD}
    )
    if answer.status_code != 303:
        raise RuntimeError(f"{user} could not sign in: {answer.status_code} {answer.text[:300]}")
    return client


def time_pages(
    base: str, pages: list[tuple[str, str, list[str]]], requests: int
) -> dict[str, dict[str, Any]]:
    clients: dict[str, httpx.Client] = {}
    results: dict[str, dict[str, Any]] = {}
    try:
        for label, user, paths in pages:
            if user not in clients:
                clients[user] = sign_in(base, user)
            results[label] = time_page(clients[user], paths, requests)
    finally:
        for client in clients.values():
            client.close()
    return results


def time_page(client: httpx.Client, paths: list[str], requests: int) -> dict[str, Any]:
    for n in range(WARM_UP):
        answer = client.get(paths[n % len(paths)])
        if answer.status_code != 200:
            return {"status": answer.status_code, "path": paths[n % len(paths)]}
    server: list[float] = []
    round_trip: list[float] = []
    for n in range(requests):
        began = time.perf_counter()
        answer = client.get(paths[n % len(paths)])
        round_trip.append((time.perf_counter() - began) * 1000)
        if answer.status_code != 200:
            return {"status": answer.status_code, "path": paths[n % len(paths)]}
        found = TIMING.search(answer.headers.get("server-timing", ""))
        if found:
            server.append(float(found.group(1)))
    figures = percentiles(server or round_trip)
    return {
        "status": 200,
        **figures,
        "server_timed": len(server),  # answers that carried Server-Timing (else: client times)
        "client_p50_ms": percentiles(round_trip)["p50_ms"],
        "client_p95_ms": percentiles(round_trip)["p95_ms"],
        "bytes": len(answer.content),
    }


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50, p95 (nearest rank) and max, rounded to 0.1 ms."""
    if not values:
        return {"p50_ms": None, "p95_ms": None, "max_ms": None}
    ordered = sorted(values)

    def rank(p: int) -> float:
        return ordered[max(0, math.ceil(len(ordered) * p / 100) - 1)]

    return {
        "p50_ms": round(rank(50), 1),
        "p95_ms": round(rank(95), 1),
        "max_ms": round(ordered[-1], 1),
    }
