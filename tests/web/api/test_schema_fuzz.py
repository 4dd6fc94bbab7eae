"""Schema fuzzing: Schemathesis against the API served over real HTTP (uvicorn on a free
loopback port, the scheduling loop running), on SQLite and on PostgreSQL, as an
administrator, as a researcher (alice, PI of p1) and as a node's agent. It reads the API's
own OpenAPI document and sends what the document allows and what it does not: every
answer must be one the document describes (status code, body schema) and none may be a
5xx. Each run is a fresh seeded pool (an administrator's run changes users, projects and
tokens), and is bounded in time: together the six add about two minutes to `make test`.

`python -m tests.web.api.test_schema_fuzz --max-time 600` runs the same longer, by hand
(see main below).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from scheduler.runtime.clock import SystemClock
from scheduler.runtime.fake import InProcessDispatcher
from tests.web.conftest import POOL_TOML, USERS, served_in_thread
from web.bench import free_port, scratch_database
from web.db import make_engine, migrate, write_session
from web.models import Node, Role
from web.pool import build_pool
from web.services.auth import Principal, issue_token
from web.services.nodes import issue_node_token
from web.services.seed import seed_pool
from web.settings import Settings

REPO = Path(__file__).resolve().parents[3]
ST = Path(sys.executable).with_name("st")  # Schemathesis' command, beside this Python
HOOKS = "tests.web.api.schema_fuzz_hooks"
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"
MAX_TIME_S = 15  # per run; six runs, each about 6 s more to start, load the schema and stop
RUN_S = 2.0  # how long a job "runs" on the in-process dispatcher
ROLES = {"admin": "admin", "researcher": "alice"}  # role -> the user a person's run is


@dataclass
class Served:
    """The API over real HTTP, with tokens for the runs."""

    url: str
    tokens: dict[str, str]  # user -> secret
    token_ids: dict[str, int]
    node: str  # a node of the pool, and its agent's token
    node_token: str
    names: dict[str, list[str]]  # path parameter -> names the pool has
    fields: dict[str, list[str]]  # body field -> names the pool has
    server_errors: list[str]  # what the server logged as unexpected


class _Collect(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(self.format(record))


@contextmanager
def serve(settings: Settings, engine: Engine, tmp: Path) -> Iterator[Served]:
    """Seed the pool (tests/web/conftest.py's), issue tokens, serve it on a free port."""
    port = free_port()
    settings = settings.model_copy(
        update={
            "port": port,
            "dispatcher": "simulated",
            "simulated_run_s": RUN_S,
            "loop_interval_s": 0.5,
            "max_array_size": 50,
        }
    )
    toml = tmp / "pool.toml"
    toml.write_text(POOL_TOML)
    clock = SystemClock()
    seed = Principal("seed", Role.ADMIN)
    with write_session(engine) as session:
        seed_pool(session, toml, clock.now())
        session.flush()
        issued = {user: issue_token(session, seed, user, clock.now(), "fuzz") for user in USERS}
        nodes = list(session.exec(select(Node.name).order_by(Node.name)))
        node_token = issue_node_token(session, seed, nodes[0], "fuzz", clock.now()).token
    names = {
        "name": ["p1", "p2", "p3", "admin", "alice", "bob", nodes[0], "academia"],
        "member": ["alice", "bob", "dave", "carol"],
        "flavor": ["H100", "A100"],
        "period": ["2023-11", "2023-Q4", "2026"],
    }
    fields = {  # in bodies: alice's project first (the researcher's run submits there)
        "project": ["p1", "p2", "p3"],
        "flavor": ["H100", "A100"],
        "user": ["alice", "bob", "dave", "carol", "erin"],
        "pi": ["alice", "carol"],
        "sector": ["academia", "industry"],
    }
    dispatcher = InProcessDispatcher(clock, run_for=lambda order: RUN_S)
    pool = build_pool(settings, dispatcher, clock=clock, engine=engine)
    server_errors: list[str] = []
    collect = _Collect(server_errors)
    logging.getLogger("gpupool").addHandler(collect)
    try:
        with served_in_thread(pool, port, "fuzz-server") as url:
            yield Served(
                url=url,
                tokens={user: created.token for user, created in issued.items()},
                token_ids={user: created.id for user, created in issued.items()},
                node=nodes[0],
                node_token=node_token,
                names=names,
                fields=fields,
                server_errors=server_errors,
            )
    finally:
        logging.getLogger("gpupool").removeHandler(collect)


def schemathesis_run(
    served: Served,
    role: str,
    report_dir: Path,
    max_time_s: int,
    seed: int | None = None,
    reports: str = "",
) -> subprocess.CompletedProcess[str]:
    """`st run` against the served API as `role` (admin, researcher or node)."""
    if role == "node":
        token, run = served.node_token, {"node": served.node}
        # A node's token opens the agents' route alone (every other one answers 401); one
        # operation has nothing to chain, so no stateful phase.
        only = ["--include-tag", "agents"]
        phases = "examples,coverage,fuzzing"
    else:
        user = ROLES[role]
        token = served.tokens[user]
        run = {
            "user": user,
            "token_id": served.token_ids[user],
            "names": served.names,
            "fields": served.fields,
        }
        only = []
        phases = "examples,coverage,fuzzing,stateful"
    command = [
        str(ST),
        "run",
        f"{served.url}/openapi.json",
        "--checks",
        CHECKS,
        "--phases",
        phases,
        "--max-time",
        str(max_time_s),
        "--header",
        f"Authorization: Bearer {token}",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--generation-database",
        "none",
        "--no-color",
        "--output-truncate",
        "false",
        *only,
    ]
    if seed is not None:
        command += ["--seed", str(seed)]
    if reports:  # every request and answer (HAR: the NDJSON report recurses into nesting)
        command += ["--report", reports, "--report-dir", str(report_dir)]
    env = os.environ | {
        "SCHEMATHESIS_HOOKS": HOOKS,
        "GPUPOOL_FUZZ": json.dumps(run),
        "PYTHONPATH": str(REPO),
    }
    report_dir.mkdir(parents=True, exist_ok=True)  # and its cache (.schemathesis/) there too
    return subprocess.run(
        command, cwd=report_dir, env=env, capture_output=True, text=True, timeout=max_time_s + 120
    )


@pytest.mark.fuzz
@pytest.mark.parametrize("role", ["admin", "researcher", "node"])
def test_schema_fuzz(role: str, settings: Settings, engine: Engine, tmp_path: Path) -> None:
    with serve(settings, engine, tmp_path) as served:
        run = schemathesis_run(served, role, tmp_path / "report", MAX_TIME_S)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-20_000:] + "\n".join(served.server_errors)
    assert not served.server_errors, "\n".join(served.server_errors)


def main() -> None:
    """Run the fuzzing longer, by hand, on SQLite (or PostgreSQL with --pg-server)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--max-time", type=int, default=300, help="seconds per role")
    parser.add_argument("--roles", default="admin,researcher,node")
    parser.add_argument(
        "--pg-server", default="", help="a PostgreSQL server's URL (a fresh database on it)"
    )
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    for role in args.roles.split(","):
        with (
            tempfile.TemporaryDirectory(prefix="gpupool-fuzz-") as tmp_dir,
            scratch_database(args.pg_server or None) as database_url,
        ):
            tmp = Path(tmp_dir)
            settings = Settings(data_dir=tmp / "data", database_url=database_url)
            engine = make_engine(settings)
            migrate(engine)
            try:
                with serve(settings, engine, tmp) as served:
                    report = Path(tempfile.mkdtemp(prefix=f"gpupool-fuzz-{role}-"))
                    run = schemathesis_run(served, role, report, args.max_time, args.seed, "har")
            finally:
                engine.dispose()
            print(f"=== {role}: exit {run.returncode}; the run's events in {report}")
            print(run.stdout[-30_000:], run.stderr[-5_000:])
            print("\n".join(served.server_errors))


if __name__ == "__main__":
    main()
