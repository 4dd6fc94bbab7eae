"""`gpupool bench api`: a real server (uvicorn, as `gpupool serve` runs it) on loopback with a
temporary database, driven by concurrent HTTP clients submitting jobs.

Reports submissions_per_s (accepted, over the window), p50_ms and p99_ms (per request, as the
clients see it), admitted_per_s (jobs the scheduling loop admitted in the window: the
simulated dispatcher ends each after --run-s seconds, so capacity stays free) and lost
(accepted submissions missing from the database afterwards).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from web.db import make_engine, migrate, read_session, write_session
from web.models import Job, JobState, Role
from web.services.auth import Principal, issue_token
from web.services.seed import seed_pool
from web.settings import Settings

PROJECTS = 10
JOBS = Job.__table__  # type: ignore[attr-defined]


def bench_pool(nodes: int) -> str:
    """A pool where capacity is never the limit: `nodes` 8-GPU nodes, projects with room."""
    share = nodes * 8 // PROJECTS
    lines = [
        '[[flavors]]\nname = "H100-80GB"\ncredit_rate = 2.0\n',
        f'[[node_groups]]\nflavor = "H100-80GB"\ncount = {nodes}\ngpus = 8\nprefix = "n"\n'
        "groups = 4\n",
        '[[sectors]]\nname = "research"\n',
        '[[users]]\nname = "admin"\nrole = "admin"\n',
    ]
    for i in range(PROJECTS):
        lines.append(
            f'[[projects]]\nname = "p{i}"\nsector = "research"\n'
            f"quotas = {{ H100-80GB = {{ guaranteed = {share}, limit = {nodes * 8} }} }}\n"
        )
        lines.append(
            f'[[users]]\nname = "u{i}"\nrole = "researcher"\nprojects = {{ p{i} = "pi" }}\n'
        )
    return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def scratch_database(server_url: str | None) -> Iterator[str]:
    """A fresh PostgreSQL database on `server_url`'s server, dropped afterwards; or ''
    (SQLite in the data directory) when no server is given."""
    if not server_url:
        yield ""
        return
    import psycopg

    url = make_url(server_url.replace("postgresql+psycopg://", "postgresql://"))
    name = f"gpupool_bench_{uuid.uuid4().hex[:8]}"
    admin_dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_api(
    seconds: float,
    clients: int = 16,
    database_url: str | None = None,
    nodes: int = 1000,
    run_s: float = 2.0,
) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="gpupool-bench-") as tmp,
        scratch_database(database_url) as db,
    ):
        data = Path(tmp) / "data"
        settings = Settings(data_dir=data, database_url=db, port=free_port())
        pool_file = Path(tmp) / "pool.toml"
        pool_file.write_text(bench_pool(nodes))
        engine = make_engine(settings)
        migrate(engine)
        with write_session(engine) as session:
            seed_pool(session, pool_file, time.time())
            tokens = [
                issue_token(
                    session, Principal(f"u{i}", Role.RESEARCHER), f"u{i}", time.time()
                ).token
                for i in range(PROJECTS)
            ]
        server = start_server(settings, run_s, Path(tmp) / "server.log")
        try:
            wait_healthy(settings, server, Path(tmp) / "server.log")
            # The load generator's own garbage collection would stall every client at once
            # and show up as server latency: it makes nothing cyclic, so it runs without.
            gc.disable()
            window_start = time.time()
            try:
                accepted, latencies, errors = asyncio.run(
                    _drive(settings, tokens, clients, seconds)
                )
            finally:
                window_end = time.time()
                gc.enable()
            _wait_admitted(engine, deadline=time.time() + 30)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        with read_session(engine) as session:
            stored = set(session.execute(select(JOBS.c.id)).scalars())
            admitted = session.execute(
                select(func.count()).where(JOBS.c.admitted_at.between(window_start, window_end))
            ).scalar_one()
        engine.dispose()
    elapsed = window_end - window_start
    latencies.sort()
    return {
        "submissions_per_s": round(len(accepted) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies), 2) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2) if latencies else None,
        "admitted_per_s": round(admitted / elapsed, 1),
        "lost": len(set(accepted) - stored),
        "accepted": len(accepted),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "clients": clients,
        "database": "postgresql" if db else "sqlite",
    }


def start_server(settings: Settings, run_s: float, log: Path) -> subprocess.Popen[bytes]:
    """`gpupool serve --dispatcher simulated` on the settings' database and port; each job
    "runs" `run_s` seconds."""
    env = os.environ | {
        "GPUPOOL_DATA_DIR": str(settings.data_dir),
        "GPUPOOL_DATABASE_URL": settings.database_url,
        "GPUPOOL_PORT": str(settings.port),
        "GPUPOOL_HOST": "127.0.0.1",
        "GPUPOOL_SIMULATED_RUN_S": str(run_s),
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "web.cli", "serve", "--dispatcher", "simulated"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_healthy(settings: Settings, server: subprocess.Popen[bytes], log: Path) -> None:
    import httpx

    deadline = time.time() + 60
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited at start:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{settings.port}/healthz", timeout=1).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server did not come up in 60 s:\n{log.read_text()[-2000:]}")


def _wait_admitted(engine: Any, deadline: float) -> None:
    """Let the loop drain the queue the burst left, so `lost` counts only real losses."""
    while time.time() < deadline:
        with read_session(engine) as session:
            queued = session.execute(
                select(func.count()).where(JOBS.c.state == JobState.QUEUED.value)
            ).scalar_one()
        if queued == 0:
            return
        time.sleep(0.2)


async def _drive(
    settings: Settings, tokens: list[str], clients: int, seconds: float
) -> tuple[list[int], list[float], int]:
    """`clients` keep-alive connections, each submitting one job after another.

    A minimal HTTP/1.1 client on asyncio streams (as wrk is in C): the load generator
    shares this machine's two cores with the server, so it must cost little per request.
    """
    accepted: list[int] = []
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def client(i: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", settings.port)
        project, token = f"p{i % len(tokens)}", tokens[i % len(tokens)]
        n = 0
        try:
            while time.perf_counter() < stop_at:
                n += 1
                body = json.dumps(
                    {
                        "project": project,
                        "entrypoint": "python train.py",
                        "gpus": 1,
                        "flavor": "H100-80GB",
                        "time": "1h",
                        "idempotency_key": f"c{i}-{n}",
                    }
                ).encode()
                request = (
                    f"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode() + body
                started = time.perf_counter()
                writer.write(request)
                status, answer = await read_response(reader)
                latencies.append((time.perf_counter() - started) * 1000)
                if status == 201:
                    accepted.extend(job["id"] for job in json.loads(answer)["jobs"])
                else:
                    errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return accepted, latencies, errors


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)
