from __future__ import annotations

import os
import secrets
import shutil
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
    """An empty database; one already migrated when the test takes `engine` (copied from a
    template migrated once per session: migrating takes 50 ms on SQLite and 250-500 ms on
    PostgreSQL, copying a few ms and about 100 ms). `engine` still migrates it (a no-op),
    and tests of the migrations themselves take `settings` alone and start empty."""
    migrated = "engine" in request.fixturenames
    if request.param == "sqlite":
        # The file Settings(data_dir=tmp_path / "data") uses, so db_url and settings agree.
        path = tmp_path / "data" / "gpupool.db"
        if migrated:
            path.parent.mkdir(parents=True)
            shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    server_url = os.environ.get(PG_URL_VARIABLE, "")
    if not server_url:
        pytest.skip(PG_SKIP_REASON)
    template = request.getfixturevalue("_pg_template") if migrated else None
    yield from _fresh_pg_database(server_url, template)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from web.db import make_engine, migrate
    from web.settings import Settings

    settings = Settings(data_dir=tmp_path_factory.mktemp("template") / "data")
    engine = make_engine(settings)
    try:
        migrate(engine)
    finally:
        engine.dispose()  # the last connection closed checkpoints the WAL into the file
    return settings.data_dir / "gpupool.db"


@pytest.fixture(scope="session")
def _pg_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from sqlalchemy.engine import make_url

    from web.db import make_engine, migrate
    from web.settings import Settings

    server_url = os.environ[PG_URL_VARIABLE]
    for url in _fresh_pg_database(server_url):
        # No connection may stay open on a template while databases are copied from it.
        data_dir = tmp_path_factory.mktemp("template") / "data"
        engine = make_engine(Settings(data_dir=data_dir, database_url=url))
        try:
            migrate(engine)
        finally:
            engine.dispose()
        yield str(make_url(url).database)


def _fresh_pg_database(server_url: str, template: str | None = None) -> Iterator[str]:
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    name = f"test_{secrets.token_hex(6)}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        create += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(create)
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


# --- passwords -------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="session")
def _cheap_password_hashing() -> Iterator[None]:
    """Passwords hashed in the tests' own process cost 256 scrypt rounds, not 16,384: the
    portal's tests hash and check thousands (a stored hash names its own cost, so they check
    as any other). Servers the tests start as processes keep the real cost, and
    tests/web/services/test_auth.py checks it."""
    from web.services import auth

    real = auth.SCRYPT_N
    auth.SCRYPT_N = 2**8
    yield
    auth.SCRYPT_N = real


# --- parallel runs ---------------------------------------------------------------------------
# `make test` runs the tests on two pytest-xdist workers (--dist loadgroup). Every test that
# drives Ray goes to the same worker, so one Ray cluster starts, and the tests of one Ray
# timeline keep to one process (Ray-starting tests beside each other on two cores would only
# make each other late).

RAY_MODULES = ("test_ray_head.py", "test_serve_ray.py", "test_bench_dispatch.py")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        uses_ray = "ray_cluster" in getattr(item, "fixturenames", ())
        if uses_ray or item.path.name in RAY_MODULES:
            item.add_marker(pytest.mark.xdist_group("ray"))
