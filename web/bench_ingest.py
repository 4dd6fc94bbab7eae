"""`gpupool bench ingest`: a real server (`gpupool serve`) on loopback with a temporary
database, and many simulated node agents reporting to it as fast as it answers.

The pool: `nodes` 8-GPU nodes, each with its own agent token and one job holding its eight
GPUs (submitted over HTTP before the window and admitted by the scheduling loop, which keeps
them running), so every report goes the whole way: resend guard, attribution of eight
processes to their job, usage, history, health. `clients` keep-alive connections share the
nodes; each request is one node's report of its eight GPUs, as an agent sends it every
interval (a 10,000-node pool reporting every 5 s is 2,000 reports a second).

Reports: reports_per_s (acknowledged, over the window), gpus_per_report, p50_ms and p99_ms
(per request, as the agents see it), and lost: acknowledged reports the database does not
hold afterwards (each node's report count against what its agent was told was taken), plus
errors (answers other than 200).
"""

from __future__ import annotations

import asyncio
import gc
import json
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from web.bench import (
    PROJECTS,
    bench_pool,
    free_port,
    read_response,
    scratch_database,
    start_server,
    wait_healthy,
)
from web.db import make_engine, migrate, read_session, write_session
from web.models import Allocation, NodeTelemetry, Role
from web.services.auth import Principal, issue_token
from web.services.nodes import issue_node_token
from web.services.seed import seed_pool
from web.settings import Settings

GPUS = 8
GIB = 1024**3
A = Allocation.__table__  # type: ignore[attr-defined]
NT = NodeTelemetry.__table__  # type: ignore[attr-defined]


def bench_ingest(
    seconds: float,
    nodes: int = 10_000,
    clients: int = 32,
    database_url: str | None = None,
) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="gpupool-bench-") as tmp,
        scratch_database(database_url) as db,
    ):
        settings = Settings(data_dir=Path(tmp) / "data", database_url=db, port=free_port())
        pool_file = Path(tmp) / "pool.toml"
        pool_file.write_text(bench_pool(nodes))
        engine = make_engine(settings)
        migrate(engine)
        admin = Principal("admin", Role.ADMIN)
        with write_session(engine) as session:
            seed_pool(session, pool_file, time.time())
            names = [f"n-{i:0{len(str(nodes))}d}" for i in range(nodes)]  # as seed_pool names them
            secrets = {
                name: issue_node_token(session, admin, name, "bench", time.time()).token
                for name in names
            }
            users = [
                issue_token(session, admin, f"u{i}", time.time()).token for i in range(PROJECTS)
            ]
        log = Path(tmp) / "server.log"
        server = start_server(settings, 1e9, log)  # jobs "run" until the bench ends
        try:
            wait_healthy(settings, server, log)
            jobs = _fill_the_pool(settings, engine, users, nodes)
            bodies = _Bodies(names, secrets, jobs)
            gc.disable()  # as in bench api: the load generator makes nothing cyclic
            started = time.time()
            try:
                taken, latencies, errors, first_error = asyncio.run(
                    _drive(settings, bodies, clients, seconds)
                )
            finally:
                elapsed = time.time() - started
                gc.enable()
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
        with read_session(engine) as session:
            stored = dict(session.execute(select(NT.c.node, NT.c.reports)).all())
        engine.dispose()
    lost = sum(max(0, count - stored.get(node, 0)) for node, count in taken.items())
    latencies.sort()
    acknowledged = sum(taken.values())
    return {
        "reports_per_s": round(acknowledged / elapsed, 1),
        "gpus_per_report": GPUS,
        "p50_ms": round(statistics.median(latencies), 2) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2) if latencies else None,
        "lost": lost,
        "errors": errors,
        **({"first_error": first_error} if first_error else {}),
        "reports": acknowledged,
        "nodes": nodes,
        "clients": clients,
        "seconds": round(elapsed, 2),
        "database": "postgresql" if db else "sqlite",
    }


def _fill_the_pool(
    settings: Settings, engine: Any, users: list[str], nodes: int
) -> dict[str, tuple[int, int]]:
    """One 8-GPU job per node, submitted over HTTP and admitted by the loop: node -> (job,
    attempt)."""
    base = f"http://127.0.0.1:{settings.port}/api/v1"
    with httpx.Client(timeout=120) as client:
        for start in range(0, nodes, 1000):
            count = min(1000, nodes - start)
            i = start // 1000 % len(users)
            answer = client.post(
                f"{base}/jobs",
                headers={"Authorization": f"Bearer {users[i]}"},
                json={"project": f"p{i}", "entrypoint": "train", "gpus": GPUS, "count": count},
            )
            answer.raise_for_status()
    deadline = time.time() + 300
    while time.time() < deadline:
        with read_session(engine) as session:
            rows = session.execute(
                select(A.c.node, A.c.job_id, A.c.attempt).where(A.c.end.is_(None))
            ).all()
        if len(rows) >= nodes:
            return {r.node: (r.job_id, r.attempt) for r in rows}
        time.sleep(0.5)
    raise RuntimeError(f"the loop admitted {len(rows)} of {nodes} jobs in 300 s")


class _Bodies:
    """Each node's next request (its token, the next seq of its agent run)."""

    def __init__(
        self, names: list[str], secrets: dict[str, str], jobs: dict[str, tuple[int, int]]
    ) -> None:
        self.names, self.secrets, self.jobs = names, secrets, jobs
        self.seq = dict.fromkeys(names, 0)
        self.energy = dict.fromkeys(names, 0)

    def request(self, node: str) -> bytes:
        self.seq[node] += 1
        self.energy[node] += 1_500_000  # 300 W for 5 s
        job, attempt = self.jobs[node]
        gpus = [
            {
                "index": g,
                "uuid": f"GPU-{node}-{g}",
                "name": "NVIDIA H100 80GB HBM3",
                "util_gpu_pct": 87.0,
                "util_mem_pct": 41.0,
                "mem_used_bytes": 61 * GIB,
                "mem_total_bytes": 80 * GIB,
                "power_w": 301.5,
                "energy_mj": self.energy[node],
                "temp_c": 64.0,
                "ecc_corrected": 0,
                "ecc_uncorrected": 0,
                "processes": [
                    {
                        "pid": 10_000 + g,
                        "used_memory_bytes": 60 * GIB,
                        "job_id": str(job),
                        "attempt": attempt,
                    }
                ],
            }
            for g in range(GPUS)
        ]
        report = {"boot": "0be0c0de", "seq": self.seq[node], "at": time.time(), "gpus": gpus}
        body = json.dumps({"node": node, "reports": [report]}).encode()
        return (
            f"POST /api/v1/agents/reports HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {self.secrets[node]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body


async def _drive(
    settings: Settings, bodies: _Bodies, clients: int, seconds: float
) -> tuple[dict[str, int], list[float], int, str]:
    """`clients` keep-alive connections; client i sends for nodes i, i + clients, ... in
    turn. What each node's agent was told was taken, the latencies, the errors and the
    first error's answer."""
    taken: dict[str, int] = {}
    latencies: list[float] = []
    errors = 0
    first_error: dict[str, str] = {}
    stop_at = time.perf_counter() + seconds

    async def client(i: int) -> None:
        nonlocal errors
        mine = bodies.names[i::clients]
        reader, writer = await asyncio.open_connection("127.0.0.1", settings.port)
        n = 0
        try:
            while time.perf_counter() < stop_at and mine:
                node = mine[n % len(mine)]
                n += 1
                request = bodies.request(node)
                began = time.perf_counter()
                writer.write(request)
                status, answer = await read_response(reader)
                latencies.append((time.perf_counter() - began) * 1000)
                if status == 200:
                    taken[node] = taken.get(node, 0) + json.loads(answer)["accepted"]
                else:
                    errors += 1
                    first_error.setdefault("answer", f"{status} {answer[:300].decode()}")
        finally:
            writer.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return taken, latencies, errors, first_error.get("answer", "")
