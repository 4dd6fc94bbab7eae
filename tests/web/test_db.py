"""The schema: what the migrations build, on SQLite and on PostgreSQL (the `engine` fixture)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, select
from sqlmodel import Session, SQLModel

import web.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from web.db import MIGRATIONS, make_engine, migrate
from web.models import User
from web.settings import Settings


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def test_migrate_creates_every_table_and_stamps_head(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert set(SQLModel.metadata.tables) <= tables
    assert "alembic_version" in tables
    assert head_revision() is not None
    assert current_revision(engine) == head_revision()


def test_migrate_twice_is_harmless(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(User(name="ada", full_name="Ada Lovelace"))
        session.commit()
    tables = set(inspect(engine).get_table_names())

    migrate(engine)

    assert set(inspect(engine).get_table_names()) == tables
    assert current_revision(engine) == head_revision()
    with Session(engine) as session:
        assert session.get(User, "ada") is not None


def test_migrations_build_the_schema_the_models_declare(engine: Engine) -> None:
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    # A difference means a model changed without a migration (or the other way round).
    assert differences == [], "\n".join(map(repr, differences))


def test_sql_in_text_is_stored_as_text(engine: Engine) -> None:
    text = "'); DROP TABLE jobs; --"
    with Session(engine) as session:
        session.add(User(name="bobby", full_name=text))
        session.commit()
    with Session(engine) as session:
        assert session.exec(select(User.full_name).where(User.name == "bobby")).one() == (text,)
        assert session.get(User, "bobby") is not None
    assert "jobs" in inspect(engine).get_table_names()


REPLICA = """
import sys
from web.db import make_engine, migrate
from web.settings import Settings
engine = make_engine(Settings())
print("ready", flush=True)
sys.stdin.readline()  # all start together
before, after = migrate(engine)
print(before, after, flush=True)
"""


def test_replicas_starting_together_migrate_one_at_a_time(settings: Settings) -> None:
    """Several servers start at once on an empty database: each migrates, none fails (on
    PostgreSQL without the migrations' advisory lock, all but one trip over the tables the
    first is creating)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")}
    env |= {
        "GPUPOOL_DATA_DIR": str(settings.data_dir),
        "GPUPOOL_DATABASE_URL": settings.database_url,
    }
    replicas = [
        subprocess.Popen(
            [sys.executable, "-c", REPLICA],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    try:
        for replica in replicas:
            assert replica.stdout is not None
            assert replica.stdout.readline().strip() == "ready", replica.stderr
        for replica in replicas:
            assert replica.stdin is not None
            replica.stdin.write("go\n")
            replica.stdin.flush()
        outcomes = [replica.communicate(timeout=120) for replica in replicas]
    finally:
        for replica in replicas:
            replica.kill()
    for replica, (_, err) in zip(replicas, outcomes, strict=True):
        assert replica.returncode == 0, err
    head = head_revision()
    assert sorted(out.strip() for out, _ in outcomes) == [f"{head} {head}"] * 3 + [f"None {head}"]
    engine = make_engine(settings)
    try:
        assert current_revision(engine) == head
    finally:
        engine.dispose()


def gpupool_db_upgrade(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from web.cli import main; main()", "db", "upgrade", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")} | env,
    )


@pytest.mark.parametrize("how", ["flags", "environment"])
def test_gpupool_db_upgrade_migrates_the_configured_database(
    settings: Settings, tmp_path: Path, how: str
) -> None:
    if how == "flags":
        args = ["--data-dir", str(settings.data_dir)]
        args += ["--database-url", settings.database_url] if settings.database_url else []
        env = {"HOME": str(tmp_path)}
    else:
        args = []
        env = {"HOME": str(tmp_path), "GPUPOOL_DATA_DIR": str(settings.data_dir)}
        env |= {"GPUPOOL_DATABASE_URL": settings.database_url} if settings.database_url else {}

    first = gpupool_db_upgrade(*args, env=env)
    again = gpupool_db_upgrade(*args, env=env)

    assert first.returncode == 0, first.stderr
    assert f"upgraded from revision (none) to {head_revision()}" in first.stdout
    assert again.returncode == 0, again.stderr
    assert f"at revision {head_revision()} already" in again.stdout
    engine = make_engine(settings)
    try:
        assert current_revision(engine) == head_revision()
        assert set(SQLModel.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert not (tmp_path / ".local").exists()  # nothing went to the default data directory


def test_gpupool_db_upgrade_says_what_went_wrong_and_hides_the_password(tmp_path: Path) -> None:
    url = "postgresql://gpupool:s3cret@127.0.0.1:1/pool"  # nothing listens on port 1
    done = gpupool_db_upgrade("--database-url", url, env={"HOME": str(tmp_path)})
    assert done.returncode == 2
    assert "127.0.0.1:1/pool" in done.stderr and "s3cret" not in done.stderr
    assert "Traceback" not in done.stderr


def test_a_half_read_result_does_not_leave_its_connection_reading_the_past(
    settings: Settings, engine: Engine
) -> None:
    """SQLite keeps a half-read statement's snapshot past ROLLBACK; the connection must not
    carry it back to the pool (the next reads on it would see old data forever)."""
    from sqlalchemy import text

    from web.db import read_session, write_session

    with write_session(engine) as s:
        s.execute(text("INSERT INTO sectors (name, weight) VALUES ('a', 1), ('b', 1)"))
    with read_session(engine) as s:
        rows = s.execute(text("SELECT weight FROM sectors ORDER BY name")).scalars()
        assert next(iter(rows)) == 1.0  # and the rest is never read
    other = make_engine(settings)  # another writer, as another process would be
    with write_session(other) as s:
        s.execute(text("UPDATE sectors SET weight = 5"))
    other.dispose()
    for _ in range(3):  # whichever pooled connection answers
        with read_session(engine) as s:
            assert s.execute(text("SELECT weight FROM sectors")).scalars().all() == [5.0, 5.0]
