"""Engines, sessions and the schema's migrations.

The engine is made from Settings when the app or a command starts, never at import. The
schema is created and upgraded by Alembic (web/migrations), never by create_all.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import Session

from web.data_dir import create_sqlite_file, sqlite_file
from web.settings import Settings

READ_ONLY = "gpupool_read_only"
_CURSORS = "gpupool_open_cursors"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The PostgreSQL advisory lock migrations take ("gpumigr" in ASCII); the scheduling loop's
# leader holds another ("gpupool", web/services/leader.py).
MIGRATION_LOCK_KEY = 0x6770756D696772


def make_engine(settings: Settings) -> Engine:
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        database = sqlite_file(url)
        if database is not None:
            create_sqlite_file(database)  # owner-only, and so its -wal and -shm (web/data_dir.py)
        engine = create_engine(
            url,
            # The driver's own transaction handling off: we say BEGIN ourselves (below).
            connect_args={"check_same_thread": False, "timeout": 30, "isolation_level": None},
            pool_size=16,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        event.listen(engine, "after_cursor_execute", _sqlite_track_cursor)
        event.listen(engine.pool, "checkin", _sqlite_close_cursors)
        return engine
    return create_engine(url, pool_size=16, max_overflow=16, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # WAL lets readers run beside the writer; NORMAL sync is durable across a process crash
    # (what the kill tests check), foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    # A write transaction takes SQLite's write lock when it begins, not at its first write:
    # otherwise a read-then-write transaction fails outright (SQLITE_BUSY_SNAPSHOT) whenever
    # another writer committed in between. Read-only sessions begin deferred and never wait.
    read_only = connection.get_execution_options().get(READ_ONLY, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _sqlite_track_cursor(
    connection: Connection, cursor: Any, statement: str, params: Any, context: Any, many: bool
) -> None:
    connection.info.setdefault(_CURSORS, weakref.WeakSet()).add(cursor)


def _sqlite_close_cursors(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    # A result left half-read keeps its statement open, and SQLite keeps that statement's
    # read snapshot after ROLLBACK: every later read on this pooled connection would see
    # the database as it was. Closing the cursors when the connection is given back ends it.
    for cursor in list(record.info.pop(_CURSORS, ())):
        cursor.close()


def migrate(engine: Engine) -> tuple[str | None, str | None]:
    """Bring the schema to the newest revision (idempotent); the revisions before and after.

    On PostgreSQL the migration's transaction first takes an advisory lock of its own, so
    replicas that start together migrate one at a time: the second waits, then finds the
    schema new and does nothing. (The lock goes with the transaction.)"""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        before = MigrationContext.configure(connection).get_current_revision()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        after = MigrationContext.configure(connection).get_current_revision()
    return before, after


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """One unit of work: commits on success, rolls back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    """Reads only: never waits for a writer, never blocks one."""
    with Session(engine.execution_options(**{READ_ONLY: True})) as session:
        try:
            yield session
        finally:
            session.rollback()
