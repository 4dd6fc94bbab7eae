from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from tests.scheduler.runtime.ray_cluster import LocalRayCluster
    from web.settings import Settings

SMALL_POOL = """
[simulation]
default_max_runtime_s = 3600

[[flavors]]
name = "H100"

[[node_groups]]
flavor = "H100"
count = 2
gpus = 8
prefix = "h"

[[sectors]]
name = "research"

[[projects]]
name = "a"
sector = "research"
quotas = { H100 = { guaranteed = 8, limit = 16 } }

[[projects]]
name = "b"
sector = "research"
quotas = { H100 = { guaranteed = 8, limit = 16 } }
"""


# --- Ray -----------------------------------------------------------------------------------
# One local Ray cluster for the whole session (starting one takes 5 to 10 s here): a head and
# two worker "nodes" with fake GPUs, gpu-01 and gpu-02 (4 GPUs each), token auth on (see
# tests/scheduler/runtime/ray_cluster.py). Tests that use it leave nothing running in it, and
# each keeps to job ids of its own (Ray keeps every submission id it was given).


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[LocalRayCluster]:
    from tests.scheduler.runtime.ray_cluster import LocalRayCluster, RayUnavailable

    try:
        cluster = LocalRayCluster.start({"gpu-01": 4, "gpu-02": 4})
    except (RayUnavailable, OSError) as err:
        pytest.skip(f"cannot start a local Ray cluster here: {err}")
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def small_pool(tmp_path: Path) -> Path:
    path = tmp_path / "pool.toml"
    path.write_text(SMALL_POOL)
    return path


def write_trace(path: Path, rows: list[str]) -> Path:
    path.write_text(
        "submit_s,project,gpus,flavor,duration_s,max_runtime_s,user\n" + "\n".join(rows) + "\n"
    )
    return path


# --- databases -----------------------------------------------------------------------------
# Database tests take `engine` (or `settings`, or `db_url`) and run twice: on a SQLite file and
# on PostgreSQL. The PostgreSQL runs need a server: GPUPOOL_TEST_DATABASE_URL, a URL such as
# postgresql://postgres@127.0.0.1:PORT/postgres, on which each test gets a database of its own.
# .ci/run starts one; locally `eval "$(tests/pg_server.sh start)"` does.

PG_URL_VARIABLE = "GPUPOOL_TEST_DATABASE_URL"
PG_SKIP_REASON = f"PostgreSQL tests need {PG_URL_VARIABLE} (a server URL; .ci/run starts one)"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        # The file Settings(data_dir=tmp_path / "data") uses, so db_url and settings agree.
        yield f"sqlite:///{tmp_path / 'data' / 'gpupool.db'}"
        return
    server_url = os.environ.get(PG_URL_VARIABLE, "")
    if not server_url:
        pytest.skip(PG_SKIP_REASON)
    yield from _fresh_pg_database(server_url)


def _fresh_pg_database(server_url: str) -> Iterator[str]:
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    name = f"test_{secrets.token_hex(6)}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    from web.settings import Settings

    database_url = "" if db_url.startswith("sqlite") else db_url
    return Settings(data_dir=tmp_path / "data", database_url=database_url)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    from web.db import make_engine, migrate

    engine = make_engine(settings)
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()


CLOCK_START = 1_700_000_000.0  # test clocks start here (2023-11-14), an ordinary epoch time


class ManualClock:
    """The Clock port, moved only by the test."""

    def __init__(self, t: float = CLOCK_START) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t
