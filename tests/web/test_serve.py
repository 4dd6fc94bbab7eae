"""`gpupool serve` as real processes: SIGKILL in a submission burst loses and duplicates
nothing; a second server on the same database stands by and takes over when the first dies.
Runs on SQLite and on PostgreSQL (the `settings` fixture)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from web.bench import bench_pool, free_port
from web.db import make_engine, migrate, write_session
from web.models import Job, Role
from web.services.auth import Principal, issue_token
from web.services.seed import seed_pool
from web.settings import Settings


@pytest.fixture
def seeded(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, str]]:
    """A migrated, seeded database (the bench pool: p0..p9, researchers u0..u9) and u0's token."""
    pool_file = tmp_path / "pool.toml"
    pool_file.write_text(bench_pool(20))
    engine = make_engine(settings)
    migrate(engine)
    with write_session(engine) as session:
        seed_pool(session, pool_file, time.time())
        token = issue_token(session, Principal("u0", Role.RESEARCHER), "u0", time.time()).token
    engine.dispose()
    yield settings, token


class Server:
    def __init__(
        self,
        settings: Settings,
        log: Path,
        args: tuple[str, ...] = ("--dispatcher", "none"),
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = (
            os.environ
            | {
                "GPUPOOL_DATA_DIR": str(settings.data_dir),
                "GPUPOOL_DATABASE_URL": settings.database_url,
                "GPUPOOL_PORT": str(self.port),
                "GPUPOOL_LEADER_POLL_S": "0.2",
            }
            | (env or {})
        )
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "web.cli", "serve", *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def health(self) -> dict[str, object] | None:
        try:
            answer = httpx.get(f"{self.url}/healthz", timeout=2)
        except httpx.HTTPError:
            return None
        return answer.json() if answer.is_success else None

    def wait(self, leader: bool | None = None, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            health = self.health()
            if health is not None and (leader is None or health["leader"] is leader):
                return
            time.sleep(0.1)
        raise AssertionError(f"server not {'leading' if leader else 'up'}:\n{self.log.read_text()}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def submit(url: str, token: str, key: str) -> int | None:
    """Submit one job; its id if the server answered 201/200, None if no answer came."""
    try:
        answer = httpx.post(
            f"{url}/api/v1/jobs",
            json={"project": "p0", "entrypoint": "python train.py", "gpus": 1, "time": "1h"},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
            timeout=10,
        )
    except httpx.HTTPError:
        return None
    assert answer.status_code in (200, 201), answer.text
    return int(answer.json()["jobs"][0]["id"])


def test_sigkill_in_a_burst_loses_and_duplicates_nothing(
    seeded: tuple[Settings, str], servers: list[Server], tmp_path: Path
) -> None:
    settings, token = seeded
    server = Server(settings, tmp_path / "first.log")
    servers.append(server)
    server.wait()
    accepted: dict[str, int] = {}
    unanswered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def burst(worker: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            key = f"w{worker}-{n}"
            job_id = submit(server.url, token, key)
            with lock:
                if job_id is None:
                    unanswered.append(key)
                    return  # the server is gone
                accepted[key] = job_id

    threads = [threading.Thread(target=burst, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    deadline = time.time() + 30
    while len(accepted) < 200 and time.time() < deadline:
        time.sleep(0.05)
    server.kill()  # SIGKILL, mid-burst
    stop.set()
    for t in threads:
        t.join(timeout=20)
    assert len(accepted) >= 200

    engine = make_engine(settings)
    with Session(engine) as session:
        stored = {j.idempotency_key: j.id for j in session.exec(select(Job)).scalars()}  # type: ignore[call-overload]
    assert all(stored.get(key) == job_id for key, job_id in accepted.items()), (
        "an accepted job was lost"
    )

    # Clients that got no answer resend with the same key to a new server: one job per key.
    second = Server(settings, tmp_path / "second.log")
    servers.append(second)
    second.wait()
    for key in unanswered:
        assert submit(second.url, token, key) is not None
    with Session(engine) as session:
        keys = session.exec(
            select(Job.idempotency_key, func.count()).group_by(Job.idempotency_key)
        ).all()  # type: ignore[call-overload]
    engine.dispose()
    assert all(count == 1 for _, count in keys), "a submission was stored twice"
    assert {k for k, _ in keys} >= set(accepted) | set(unanswered)


def test_a_second_server_stands_by_and_takes_over(
    seeded: tuple[Settings, str], servers: list[Server], tmp_path: Path
) -> None:
    settings, token = seeded
    first = Server(settings, tmp_path / "first.log")
    servers.append(first)
    first.wait(leader=True)
    second = Server(settings, tmp_path / "second.log")
    servers.append(second)
    second.wait()
    time.sleep(1.0)  # a few of its standby polls
    assert second.health() == {"status": "ok", "leader": False}

    first_job = submit(second.url, token, "before")  # either API takes jobs; the leader admits
    assert first_job is not None
    assert wait_for_admission(second.url, token, first_job)

    first.kill()
    second.wait(leader=True, timeout=30)
    after = submit(second.url, token, "after")
    assert after is not None
    assert wait_for_admission(second.url, token, after)


def wait_for_admission(url: str, token: str, job_id: int, timeout: float = 20) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        answer = httpx.get(
            f"{url}/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"}, timeout=5
        )
        if answer.json()["state"] in ("admitted", "running"):
            return True
        time.sleep(0.1)
    return False


def test_an_unreachable_ray_keeps_the_api_up_and_jobs_queued(
    seeded: tuple[Settings, str], servers: list[Server], tmp_path: Path
) -> None:
    """--dispatcher ray with nothing at the Ray address: the API answers and takes jobs, the
    loop leads and says once a tick that Ray cannot be reached; the jobs wait, queued."""
    settings, token = seeded
    ray = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    server = Server(settings, tmp_path / "ray.log", ("--dispatcher", "ray", "--ray-address", ray))
    servers.append(server)
    server.wait(leader=True)
    job_id = submit(server.url, token, "while-ray-is-away")
    assert job_id is not None
    deadline = time.time() + 20
    while f"Ray at {ray} is unreachable" not in server.log.read_text():
        assert time.time() < deadline, server.log.read_text()
        time.sleep(0.2)
    answer = httpx.get(
        f"{server.url}/api/v1/jobs/{job_id}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.json()["state"] == "queued"
    assert server.health() == {"status": "ok", "leader": True}
    assert "Traceback" not in server.log.read_text()
