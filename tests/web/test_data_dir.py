"""The data directory is owner-only: made 0700 with every file 0600 (the SQLite database and
the -wal and -shm files SQLite makes itself included) whatever the umask; an install made
before, readable by others, is tightened at start-up and the warning names what changed."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from web.data_dir import secure_data_dir, write_private
from web.db import make_engine, migrate
from web.settings import Settings


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The common default (files 0644, directories 0755) whatever the test runner's."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def modes(root: Path) -> dict[str, int]:
    """Every path under root (root included), relative, with its permission bits."""
    found = {".": mode(root)}
    for entry in root.rglob("*"):
        found[str(entry.relative_to(root))] = mode(entry)
    return found


def test_a_new_sqlite_data_dir_is_owner_only_wal_and_shm_included(
    tmp_path: Path, permissive_umask: None
) -> None:
    settings = Settings(data_dir=tmp_path / "new" / "data")
    engine = make_engine(settings)
    try:
        migrate(engine)
        with engine.begin() as connection:  # a write: SQLite makes the -wal and -shm
            connection.execute(text("CREATE TABLE probe (x INTEGER)"))
            connection.execute(text("INSERT INTO probe VALUES (1)"))
        found = modes(settings.data_dir)  # while the engine is open: -wal and -shm exist
    finally:
        engine.dispose()
    assert {"gpupool.db", "gpupool.db-wal", "gpupool.db-shm"} <= found.keys()
    assert found == {".": 0o700} | {name: 0o600 for name in found if name != "."}


def test_write_private_tightens_a_file_that_was_open_before_writing(
    tmp_path: Path, permissive_umask: None
) -> None:
    old = tmp_path / "admin.token"
    old.write_text("old\n")
    assert mode(old) == 0o644
    write_private(old, "new secret\n")
    assert mode(old) == 0o600 and old.read_text() == "new secret\n"
    new = tmp_path / "admin.password"
    write_private(new, "x\n")
    assert mode(new) == 0o600


def old_install(data: Path) -> Path:
    """A data directory as an install from before left it: everything 0755/0644, a file
    that is not gpupool's, and a link to a file outside that must not be touched."""
    (data / "logs").mkdir(parents=True)
    for name in ("gpupool.db", "gpupool.db-wal", "admin.token", "statement-key.pem"):
        (data / name).write_text("x")
    (data / "logs" / "7-1.log").write_text("output")
    (data / "notes.txt").write_text("the operator's")
    outside = data.parent / "outside.txt"
    outside.write_text("not gpupool's")
    (data / "link.log").symlink_to(outside)
    for path in (data, data / "logs"):
        path.chmod(0o755)
    return outside


def test_an_old_install_is_tightened_and_the_warning_names_what(
    tmp_path: Path, permissive_umask: None
) -> None:
    data = tmp_path / "data"
    outside = old_install(data)
    found = secure_data_dir(Settings(data_dir=data))
    assert sorted(str(p.relative_to(tmp_path)) for p, _ in found.made_private) == [
        "data",
        "data/admin.token",
        "data/gpupool.db",
        "data/gpupool.db-wal",
        "data/logs",
        "data/logs/7-1.log",
        "data/statement-key.pem",
    ]
    assert mode(data) == 0o700 and mode(data / "logs") == 0o700
    for name in ("gpupool.db", "gpupool.db-wal", "admin.token", "statement-key.pem"):
        assert mode(data / name) == 0o600
    assert mode(data / "logs" / "7-1.log") == 0o600
    assert mode(data / "notes.txt") == 0o644  # not gpupool's: named, left alone
    assert mode(outside) == 0o644  # a link is never followed
    warnings = found.warnings()
    assert len(warnings) == 2
    assert "made owner-only" in warnings[0] and f"{data / 'gpupool.db'} (644 -> 600)" in warnings[0]
    assert f"chmod go-rwx {data / 'notes.txt'}" in warnings[1]
    assert secure_data_dir(Settings(data_dir=data)).warnings() == [
        warnings[1]
    ]  # done once: only what is not gpupool's is still named


def test_a_database_and_key_kept_elsewhere_are_tightened_too(
    tmp_path: Path, permissive_umask: None
) -> None:
    database, key = tmp_path / "db" / "pool.db", tmp_path / "keys" / "pool.pem"
    for path in (database, key):
        path.parent.mkdir()
        path.write_text("x")
    settings = Settings(
        data_dir=tmp_path / "data", database_url=f"sqlite:///{database}", statement_key_file=key
    )
    found = secure_data_dir(settings)
    assert {p for p, _ in found.made_private} == {database, key}
    assert mode(database) == 0o600 and mode(key) == 0o600
    assert mode(tmp_path / "data") == 0o700
