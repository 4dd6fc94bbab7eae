"""A state change and its ledger entry are one transaction: SIGKILL a real `gpupool serve`
(local dispatcher: real job processes) again and again while jobs start and end, start it
again, and afterwards every ended attempt is charged exactly its allocated GPU-seconds, no
charge is without its attempt's end, the chain checks from the first entry to the last, and
every project's totals are the sums of its entries. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from tests.web.test_serve import Server
from web.bench import bench_pool
from web.db import make_engine, migrate, read_session, write_session
from web.models import Allocation, Attempt, Job, Project, Role
from web.services.auth import Principal, issue_token
from web.services.ledger import LEDGER, check_chain, stream
from web.services.seed import seed_pool
from web.settings import Settings

A = Allocation.__table__  # type: ignore[attr-defined]
T = Attempt.__table__  # type: ignore[attr-defined]
J = Job.__table__  # type: ignore[attr-defined]
JOBS = 24


def test_killing_the_server_never_separates_a_change_from_its_ledger_entry(
    settings: Settings, tmp_path: Path
) -> None:
    pool_file = tmp_path / "pool.toml"
    pool_file.write_text(bench_pool(2))
    engine = make_engine(settings)
    migrate(engine)
    with write_session(engine) as s:
        seed_pool(s, pool_file, time.time())
        token = issue_token(s, Principal("u0", Role.RESEARCHER), "u0", time.time()).token
    env = {"GPUPOOL_LOOP_INTERVAL_S": "0.1", "GPUPOOL_GRACE_PERIOD_S": "1"}
    chance = random.Random(7)

    def serve(n: int) -> Server:
        server = Server(settings, tmp_path / f"server-{n}.log", ("--dispatcher", "local"), env)
        server.wait(leader=True)
        return server

    server = serve(0)
    for i in range(JOBS):
        body = {
            "project": "p0",
            "entrypoint": f"sleep {chance.uniform(0.2, 1.5):.2f}",
            "gpus": chance.choice([1, 2, 4]),
            "time": "10m",
        }
        answer = httpx.post(
            f"{server.url}/api/v1/jobs",
            json=body,
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"k{i}"},
            timeout=10,
        )
        assert answer.status_code in (200, 201), answer.text
    for n in range(1, 4):  # killed mid-flight three times, each at another moment
        time.sleep(chance.uniform(0.3, 1.5))
        server.kill()
        server = serve(n)
    try:
        deadline = time.monotonic() + 90
        while True:
            with read_session(engine) as s:
                open_jobs = s.execute(
                    select(func.count()).where(J.c.state.in_(("queued", "admitted", "running")))
                ).scalar_one()
            if open_jobs == 0:
                break
            assert time.monotonic() < deadline, f"{open_jobs} jobs still open"
            time.sleep(0.2)
    finally:
        server.stop()

    with read_session(engine) as s:
        entries = list(stream(s))
        assert check_chain(entries) is None
        allocated: dict[tuple[int, int], float] = {}
        for job_id, attempt, gpus, start, end in s.execute(
            select(A.c.job_id, A.c.attempt, A.c.gpus, A.c.start, A.c.end)
        ):
            assert end is not None
            allocated[(job_id, attempt)] = allocated.get((job_id, attempt), 0.0) + gpus * (
                end - start
            )
        ended = {
            (r.job_id, r.number): r.outcome
            for r in s.execute(select(T.c.job_id, T.c.number, T.c.outcome))
        }
        charged: dict[tuple[int, int], float] = {}
        for e in entries:
            if e["kind"] == "charge":
                key = (e["job_id"], e["attempt"])
                charged[key] = charged.get(key, 0.0) + e["gpu_s"]
        for key, outcome in ended.items():
            if outcome == "dispatch_failed" or allocated.get(key, 0.0) == 0.0:
                assert key not in charged, (key, outcome)  # nothing ran
            else:
                assert charged.get(key) == pytest.approx(allocated[key]), (key, outcome)
        assert set(charged) <= set(ended)
        for project in s.execute(select(Project)).scalars():
            mine = [e for e in entries if e["project"] == project.name]
            used = -sum(e["amount"] for e in mine if e["kind"] in ("charge", "refund"))
            assert project.credits_used == pytest.approx(used)
            granted = sum(e["amount"] for e in mine if e["kind"] == "grant")
            assert (project.credits or 0.0) == pytest.approx(granted)
        kinds = set(s.execute(select(LEDGER.c.kind).distinct()).scalars())
    assert "charge" in kinds
    engine.dispose()
