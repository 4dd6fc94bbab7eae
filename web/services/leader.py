"""Leader election for the scheduling loop: exactly one loop acts on a database.

PostgreSQL: a session-level advisory lock, held by one dedicated connection; when the
leader dies its connection closes and the lock goes with it. SQLite (one machine): an
exclusive lock on a file beside the database, released by the kernel when the process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from web.settings import Settings

log = logging.getLogger("gpupool.leader")

# pg_try_advisory_lock takes a 64-bit key; this one reads "gpupool" in ASCII.
ADVISORY_KEY = 0x677075706F6F6C


class PostgresLeadership:
    def __init__(self, engine: Engine, key: int = ADVISORY_KEY) -> None:
        self.engine, self.key = engine, key
        self._connection: Connection | None = None

    def try_acquire(self) -> bool:
        if self._connection is not None:
            return True
        connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        got = connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar()
        if got:
            self._connection = connection
            return True
        connection.close()
        return False

    def held(self) -> bool:
        if self._connection is None:
            return False
        try:
            self._connection.execute(text("SELECT 1"))
            return True
        except DBAPIError:
            log.warning("the leader's database connection broke; the lock is gone with it")
            self._drop()
            return False

    def release(self) -> None:
        if self._connection is not None:
            # If the connection is gone, the lock went with it.
            with contextlib.suppress(DBAPIError):
                self._connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            self._drop()

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.invalidate()
            connection.close()


class FileLeadership:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def leadership_for(settings: Settings, engine: Engine) -> PostgresLeadership | FileLeadership:
    if engine.dialect.name == "postgresql":
        return PostgresLeadership(engine)
    return FileLeadership(Path(str(engine.url.database)).with_suffix(".leader"))
