"""`gpupool bench dispatch`: short jobs through the whole path on a local Ray.

A Ray head of its own (ports and temp dir of its own, token auth, simulated GPUs: one
`gpupool_node` pin per node of the bench pool), a real `gpupool serve --dispatcher ray` (API
and loop processes) over a temporary SQLite database, and jobs submitted over HTTP, each
`sleep RUN_S` on 1 GPU. Before the measured jobs, one warm-up job (Ray's first job waits
seconds for its runtime-env agent) and Ray's own floor: `submit_job` to RUNNING for a job
submitted straight to Ray, polled every 20 ms, one at a time.

Figures:
- p50/p95_admit_to_running_s: from the loop's admission (admitted_at) to RUNNING as the
  pool records it (started_at: when the dispatcher saw Ray run it); what a researcher sees.
- p50_submit_to_running_s: from the HTTP submission.
- ray_floor_p50_s: Ray's own submit_job to RUNNING, for comparison.
- jobs_per_s: jobs over the time from the first submission to the last end.
- lost: accepted jobs that are not in the database, ended lost, or did not end in time.
- duplicated: jobs Ray ran more than once (submissions per job, over Ray's job list).
With --restart, the server is SIGKILLed half-way through the submissions and started
again (a control-plane restart with jobs running): lost and duplicated must stay 0.
With --compare-ray, the same jobs then go straight to Ray at the same rate
(ray_alone_*: Ray's own latency and throughput for them on this machine).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from web.bench import free_port
from web.db import make_engine, migrate, read_session, write_session
from web.models import Job, JobState, Role
from web.ray_head import HeadPlan, LocalRayHead, head_token
from web.services.auth import Principal, issue_token
from web.services.seed import seed_pool
from web.settings import Settings

JOBS = Job.__table__  # type: ignore[attr-defined]
FLAVOR = "H100-80GB"
FINAL = {s.value for s in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)} | {
    JobState.TIMEOUT.value,
    JobState.LOST.value,
}


def dispatch_pool(nodes: int) -> str:
    return "\n".join(
        [
            f'[[flavors]]\nname = "{FLAVOR}"\n',
            f'[[node_groups]]\nflavor = "{FLAVOR}"\ncount = {nodes}\ngpus = 8\nprefix = "n"\n',
            '[[sectors]]\nname = "research"\n',
            '[[projects]]\nname = "bench"\nsector = "research"\n'
            f"quotas = {{ {FLAVOR} = {{ guaranteed = {nodes * 8}, limit = {nodes * 8} }} }}\n",
            '[[users]]\nname = "u"\nrole = "researcher"\nprojects = { bench = "pi" }\n',
        ]
    )


def bench_dispatch(
    jobs: int,
    nodes: int = 8,
    run_s: float = 2.0,
    rate: float = 0.0,
    restart: bool = False,
    compare: bool = False,
) -> dict[str, Any]:
    """Run the benchmark; its figures (see the module docstring). `rate`: submissions per
    second (0: all at once). `compare`: then the same jobs straight to Ray, as gpupool
    would submit them (the ray_alone_* figures)."""
    # Short (Ray's socket paths); Ray's processes may still write there as it ends.
    with tempfile.TemporaryDirectory(prefix="gp-bd-", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        settings = Settings(data_dir=root / "data", port=free_port())
        engine = make_engine(settings)
        migrate(engine)
        (root / "pool.toml").write_text(dispatch_pool(nodes))
        with write_session(engine) as session:
            seed_pool(session, root / "pool.toml", time.time())
            token = issue_token(session, Principal("u", Role.RESEARCHER), "u", time.time()).token
        plan = HeadPlan({f"n-{i:0{len(str(nodes))}d}": 8 for i in range(nodes)}, nodes * 8, True)
        ray_token = head_token(root)
        head = LocalRayHead(
            plan,
            ray_token,
            root / "ray-head.log",
            gcs_port=free_port(),
            dashboard_port=free_port(),
            extra=(
                f"--temp-dir={root / 'ray'}",
                f"--ray-client-server-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}",
                "--object-store-memory=100000000",
            ),
        )
        server: subprocess.Popen[bytes] | None = None
        try:
            head.start()
            problem = head.wait_ready(120)
            if problem is not None:
                raise RuntimeError(problem)
            env = {
                "GPUPOOL_RAY_ADDRESS": head.address,
                "GPUPOOL_RAY_TOKEN": ray_token,
                "GPUPOOL_GRACE_PERIOD_S": "5",
            }
            server = _serve(settings, env, root / "server.log")
            client = httpx.Client(
                base_url=f"http://127.0.0.1:{settings.port}/api/v1",
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            warm = _submit(client, "warm-up", run_s)
            _wait_final(engine, {warm}, time.time() + 120)
            floor = _ray_floor(head.address, ray_token, next(iter(plan.nodes)), samples=10)

            accepted: dict[str, int] = {}
            submitted_at: dict[int, float] = {}
            began = time.time()
            for i in range(jobs):
                if rate > 0:
                    time.sleep(max(0.0, began + i / rate - time.time()))
                if restart and i == jobs // 2:
                    server.kill()  # SIGKILL: the loop process follows within 0.5 s
                    server.wait()
                    server = _serve(settings, env, root / "server-2.log")
                key = f"job-{i}-{uuid.uuid4().hex[:6]}"
                at = time.time()
                job_id = _submit(client, key, run_s)
                accepted[key], submitted_at[job_id] = job_id, at
            _wait_final(engine, set(accepted.values()), time.time() + 120 + jobs * run_s)
            rows = _rows(engine, set(accepted.values()))
            ray_runs = _ray_submissions(head.address, ray_token)
            alone = (
                _ray_alone(head.address, ray_token, list(plan.nodes), jobs, run_s, rate)
                if compare
                else {}
            )
        finally:
            if server is not None:
                server.send_signal(signal.SIGTERM)
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
            head.stop()
            engine.dispose()
    figures = _figures(jobs, rows, submitted_at, ray_runs, floor, began, rate, restart, run_s)
    return figures | alone


def _figures(
    jobs: int,
    rows: dict[int, Any],
    submitted_at: dict[int, float],
    ray_runs: Counter[int],
    floor: list[float],
    began: float,
    rate: float,
    restart: bool,
    run_s: float,
) -> dict[str, Any]:
    ran = [r for r in rows.values() if r.started_at is not None and r.admitted_at is not None]
    admit = sorted(r.started_at - r.admitted_at for r in ran)
    submit = sorted(r.started_at - submitted_at[r.id] for r in ran)
    ends = [r.ended_at for r in rows.values() if r.ended_at is not None]
    lost = sum(
        1
        for job_id in submitted_at
        if job_id not in rows or rows[job_id].state not in FINAL - {JobState.LOST.value}
    )
    return {
        "jobs": jobs,
        "p50_admit_to_running_s": _pct(admit, 50),
        "p95_admit_to_running_s": _pct(admit, 95),
        "p50_submit_to_running_s": _pct(submit, 50),
        "ray_floor_p50_s": _pct(sorted(floor), 50),
        "jobs_per_s": round(len(ends) / (max(ends) - began), 2) if ends else 0.0,
        "lost": lost,
        "duplicated": sum(1 for job_id in submitted_at if ray_runs.get(job_id, 0) > 1),
        "states": dict(Counter(r.state for r in rows.values())),
        "run_s": run_s,
        "rate": rate or "all at once",
        "restart": restart,
    }


def _pct(values: list[float], pct: int) -> float | None:
    if not values:
        return None
    if pct == 50:
        return round(statistics.median(values), 3)
    return round(values[min(len(values) - 1, round(pct / 100 * len(values)) - 1)], 3)


def _serve(settings: Settings, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    full = (
        os.environ
        | env
        | {
            "GPUPOOL_DATA_DIR": str(settings.data_dir),
            "GPUPOOL_DATABASE_URL": "",
            "GPUPOOL_PORT": str(settings.port),
            "GPUPOOL_HOST": "127.0.0.1",
        }
    )
    with log.open("ab") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "web.cli", "serve", "--dispatcher", "ray"],
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.time() + 60
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited at start:\n{log.read_text()[-2000:]}")
        try:
            answer = httpx.get(f"http://127.0.0.1:{settings.port}/healthz", timeout=1)
            if answer.is_success and answer.json().get("leader"):
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server did not come up in 60 s:\n{log.read_text()[-2000:]}")


def _submit(client: httpx.Client, key: str, run_s: float) -> int:
    body = {"project": "bench", "gpus": 1, "flavor": FLAVOR, "entrypoint": f"sleep {run_s:g}"}
    answer = client.post("/jobs", json=body, headers={"Idempotency-Key": key})
    answer.raise_for_status()
    return int(answer.json()["jobs"][0]["id"])


def _wait_final(engine: Any, ids: set[int], deadline: float) -> None:
    while time.time() < deadline:
        with read_session(engine) as session:
            # Fetched whole: a cursor left half-read keeps SQLite's snapshot on the pooled
            # connection, and every later read would see the same states.
            states = session.execute(select(JOBS.c.state).where(JOBS.c.id.in_(ids))).all()
        if all(state in FINAL for (state,) in states):
            return
        time.sleep(0.5)


def _rows(engine: Any, ids: set[int]) -> dict[int, Any]:
    with read_session(engine) as session:
        return {r.id: r for r in session.execute(select(JOBS).where(JOBS.c.id.in_(ids)))}


def _ray_client(address: str, token: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"})


def _ray_floor(address: str, token: str, node: str, samples: int) -> list[float]:
    """Ray's own submit_job -> RUNNING, one job at a time, on the bench's Ray."""
    client = _ray_client(address, token)
    found = []
    for i in range(samples):
        began = time.monotonic()
        key = client.submit_job(
            entrypoint="sleep 0.5",
            submission_id=f"floor-{i}",
            entrypoint_num_gpus=1,
            entrypoint_resources={f"gpupool_node:{node}": 0.001},
        )
        while client.get_job_status(key).value == "PENDING":
            time.sleep(0.02)
        found.append(time.monotonic() - began)
        while not client.get_job_status(key).is_terminal():
            time.sleep(0.1)
    return found


def _ray_alone(
    address: str, token: str, nodes: list[str], jobs: int, run_s: float, rate: float
) -> dict[str, Any]:
    """The same jobs submitted straight to Ray (pinned round the nodes, 1 GPU each), at the
    same rate, followed every 0.1 s: what Ray itself does with them on this machine."""
    client = _ray_client(address, token)
    submitted: dict[str, float] = {}
    running: dict[str, float] = {}
    ended: dict[str, float] = {}
    began = time.monotonic()
    deadline = began + 120 + jobs * (run_s + (1 / rate if rate > 0 else 0))
    while len(ended) < jobs and time.monotonic() < deadline:
        while len(submitted) < jobs and (
            rate <= 0 or time.monotonic() >= began + len(submitted) / rate
        ):
            i = len(submitted)
            key = client.submit_job(
                entrypoint=f"sleep {run_s:g}",
                submission_id=f"alone-{i}",
                entrypoint_num_gpus=1,
                entrypoint_resources={f"gpupool_node:{nodes[i % len(nodes)]}": 0.001},
            )
            submitted[key] = time.monotonic()
        for job in client.list_jobs():
            key = job.submission_id or ""
            if key in submitted and job.status.value != "PENDING":
                running.setdefault(key, time.monotonic())
                if job.status.is_terminal():
                    ended.setdefault(key, time.monotonic())
        time.sleep(0.1)
    latencies = sorted(running[k] - submitted[k] for k in running)
    return {
        "ray_alone_p50_submit_to_running_s": _pct(latencies, 50),
        "ray_alone_p95_submit_to_running_s": _pct(latencies, 95),
        "ray_alone_jobs_per_s": round(len(ended) / (max(ended.values()) - began), 2)
        if ended
        else 0.0,
    }


def _ray_submissions(address: str, token: str) -> Counter[int]:
    """How many times Ray was given each gpupool job (submission ids JOB-ATTEMPT)."""
    runs: Counter[int] = Counter()
    for job in _ray_client(address, token).list_jobs():
        job_id, dash, attempt = (job.submission_id or "").partition("-")
        if dash and job_id.isdigit() and attempt.isdigit():
            runs[int(job_id)] += 1
    return runs
