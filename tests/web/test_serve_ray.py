"""`gpupool serve --dispatcher ray` as it runs: the API in one process, the loop in another, jobs
on the session's Ray cluster (tests/conftest.py; its nodes gpu-01 and gpu-02 are the pool's),
Ray's token from GPUPOOL_RAY_TOKEN. A job submitted over HTTP runs in Ray on its node, and
`gpupool logs -f` shows its output, read by the API from Ray, until it ends."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.scheduler.runtime.ray_cluster import LocalRayCluster
from tests.web.test_serve import Server
from web.db import make_engine, migrate, write_session
from web.models import Job, JobState, Node, Role
from web.services.auth import Principal, issue_token
from web.services.seed import seed_pool
from web.settings import Settings

POOL = """
[[flavors]]
name = "H100"

[[node_groups]]
flavor = "H100"
count = 1
gpus = 4
prefix = "spare"

[[sectors]]
name = "research"

[[projects]]
name = "p"
sector = "research"
quotas = { H100 = { guaranteed = 4, limit = 8 } }

[[users]]
name = "u"
role = "researcher"
projects = { p = "pi" }
"""
FIRST_ID = 900_000  # job ids no other test of the session gives Ray


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'data' / 'gpupool.db'}"


@pytest.fixture
def ray_pool(settings: Settings, tmp_path: Path) -> str:
    """The pool above with Ray's two nodes instead of its own (down: not in Ray); the
    researcher u's token."""
    pool_file = tmp_path / "pool.toml"
    pool_file.write_text(POOL)
    engine = make_engine(settings)
    migrate(engine)
    with write_session(engine) as s:
        seed_pool(s, pool_file, time.time())
        s.add_all([Node(name=n, flavor="H100", gpus=4) for n in ("gpu-01", "gpu-02")])
        spare = s.get(Node, "spare-0")
        assert spare is not None
        spare.state = "down"
        s.add(spare)
        s.flush()
        s.add(
            Job(
                id=FIRST_ID - 1,
                project="p",
                user="u",
                entrypoint="placeholder",
                gpus=1,
                flavor="H100",
                max_runtime_s=1,
                state=JobState.CANCELLED.value,
            )
        )
        token = issue_token(s, Principal("u", Role.RESEARCHER), "u", time.time()).token
    engine.dispose()
    return token


def test_a_job_submitted_over_http_runs_in_ray_and_its_logs_follow_it(
    settings: Settings,
    ray_pool: str,
    ray_cluster: LocalRayCluster,
    tmp_path: Path,
) -> None:
    server = Server(
        settings,
        tmp_path / "serve.log",
        ("--dispatcher", "ray", "--ray-address", ray_cluster.address),
        {"GPUPOOL_RAY_TOKEN": ray_cluster.token, "GPUPOOL_RAY_POLL_S": "0.2"},
    )
    try:
        server.wait(leader=True)
        headers = {"Authorization": f"Bearer {ray_pool}"}
        command = 'echo "on $GPUPOOL_TEST_NODE with GPUs $CUDA_VISIBLE_DEVICES"; sleep 1; echo bye'
        answer = httpx.post(
            f"{server.url}/api/v1/jobs",
            json={"project": "p", "gpus": 2, "flavor": "H100", "entrypoint": command},
            headers=headers,
            timeout=10,
        )
        assert answer.status_code == 201, answer.text
        job_id = answer.json()["jobs"][0]["id"]
        assert job_id == FIRST_ID

        env = {"GPUPOOL_SERVER": server.url, "GPUPOOL_TOKEN": ray_pool, "NO_COLOR": "1"}
        followed = subprocess.run(
            [sys.executable, "-m", "web.cli", "logs", "-f", str(job_id)],
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in __import__("os").environ.items() if k != "GPUPOOL_CONFIG"} | env,
        )
        assert followed.returncode == 0, followed.stderr
        job = httpx.get(f"{server.url}/api/v1/jobs/{job_id}", headers=headers).json()
        assert job["state"] == "succeeded", job
        line = next(x for x in followed.stdout.splitlines() if x.startswith("on "))
        node, gpus = line.removeprefix("on ").split(" with GPUs ")
        assert node in ("gpu-01", "gpu-02")
        assert len(gpus.split(",")) == 2
        assert followed.stdout.rstrip().endswith("bye")
        assert f"job {job_id} succeeded (exit code 0)" in followed.stderr
        assert "Traceback" not in server.log.read_text()
    finally:
        server.stop()
