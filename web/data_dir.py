"""The data directory is owner-only: the directory 0700, every file gpupool keeps in it 0600.

It holds the SQLite database (password hashes, token digests, every job's entrypoint and
runtime_env) with its -wal and -shm files, the statement signing key, the admin's token
and password `gpupool up` prints, the Ray head's token and log, and the local dispatcher's
job logs. Each is created owner-only (never created readable and tightened after). SQLite
makes the -wal and -shm files with the permissions of the database file, so the database
file is created here, empty and 0600, before SQLite first opens it.

Installs from before were made with the umask's permissions (often 0755 and 0644):
`secure_data_dir` tightens what gpupool keeps there when the server starts, and says so;
anything else in the directory is named with the command to tighten it, never touched.
"""

from __future__ import annotations

import os
import shlex
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url

from web.settings import Settings

DIR_MODE = 0o700
FILE_MODE = 0o600
OPEN_TO_OTHERS = stat.S_IRWXG | stat.S_IRWXO
LOGS = "logs"  # the local dispatcher's job logs (web/scheduler_process.py)
# What gpupool itself keeps in the data directory; anything else there is the operator's.
OWN_FILES = frozenset(
    {
        "gpupool.db",
        "gpupool.db-wal",
        "gpupool.db-shm",
        "gpupool.db-journal",
        "gpupool.leader",
        "admin.token",
        "admin.password",
        "ray.token",
        "ray-head.log",
        "statement-key.pem",
    }
)


def make_private_dir(path: Path) -> None:
    """`path` as a directory, created owner-only if it is missing (missing parents are
    made as usual: they are not gpupool's)."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)


def open_private(path: Path, flags: int) -> int:
    """os.open of `path`, created 0600 if missing; a file that was there is made 0600
    before anything is written to it."""
    descriptor = os.open(path, flags | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(descriptor, FILE_MODE)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` (replacing what was there), owner-only."""
    with os.fdopen(open_private(path, os.O_WRONLY | os.O_TRUNC), "w", encoding="utf-8") as out:
        out.write(text)


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (None: in memory, or not SQLite)."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):  # a SQLite URI (uri=true): left to SQLite
        return None
    return Path(database)


def create_sqlite_file(path: Path) -> None:
    """The database file, empty (an empty file is an empty SQLite database) and owner-only,
    if it is missing, so that SQLite's -wal and -shm files are made owner-only too."""
    make_private_dir(path.parent)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    os.close(descriptor)


@dataclass
class Tightened:
    """What secure_data_dir found open to others: made owner-only (path, old mode), could
    not be (path, why), or left alone as not gpupool's."""

    made_private: list[tuple[Path, int]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    not_ours: list[Path] = field(default_factory=list)

    def warnings(self) -> list[str]:
        """One line for each kind of finding, naming the paths (the first few)."""
        lines = []
        if self.made_private:
            made = [f"{p} ({oct(m)[2:]} -> {oct(owner_mode(m))[2:]})" for p, m in self.made_private]
            lines.append(
                "the data directory was readable by other users of this machine; made "
                f"owner-only: {listed(made)}"
            )
        if self.failed:
            why = [f"{p} ({reason})" for p, reason in self.failed]
            paths = " ".join(shell_quoted(p) for p, _ in self.failed)
            lines.append(
                f"could not make owner-only: {listed(why)}; as their owner run: "
                f"chmod go-rwx {paths}"
            )
        if self.not_ours:
            paths = " ".join(shell_quoted(p) for p in self.not_ours)
            lines.append(
                "other users of this machine can read these files in the data directory "
                f"(not gpupool's; left alone): {listed(map(str, self.not_ours))}; to "
                f"tighten them: chmod go-rwx {paths}"
            )
        return lines


def owner_mode(mode: int) -> int:
    return stat.S_IMODE(mode) & ~OPEN_TO_OTHERS


def listed(items: Iterable[str], most: int = 8) -> str:
    every = list(items)
    more = len(every) - most
    return ", ".join(every[:most]) + (f" and {more} more" if more > 0 else "")


def shell_quoted(path: Path) -> str:
    return shlex.quote(str(path))


def secure_data_dir(settings: Settings) -> Tightened:
    """Make the data directory (whatever the database: it holds the key and the tokens)
    and check it: what gpupool keeps there (and the SQLite database and signing key where
    the settings put them) is made owner-only if it was not; other files open to others are
    named. Symbolic links are never followed."""
    found = Tightened()
    data_dir = settings.data_dir
    make_private_dir(data_dir)
    _tighten(data_dir, found)
    for entry in sorted(data_dir.iterdir()):
        if entry.name == LOGS and entry.is_dir() and not entry.is_symlink():
            _tighten(entry, found)
            for log in sorted(entry.iterdir()):
                _tighten(log, found)
        elif entry.name in OWN_FILES:
            _tighten(entry, found)
        else:
            _report_if_open(entry, found)
    database = sqlite_file(settings.sqlalchemy_url)
    elsewhere = [settings.statement_key_path]
    if database is not None:
        elsewhere += [database, *(database.with_name(database.name + s) for s in ("-wal", "-shm"))]
    for path in elsewhere:
        if path.parent.resolve() != data_dir.resolve():
            _tighten(path, found)
    return found


def _tighten(path: Path, found: Tightened) -> None:
    try:
        status = path.lstat()
    except FileNotFoundError:
        return
    except OSError as err:
        found.failed.append((path, err.strerror or str(err)))
        return
    if not (stat.S_ISREG(status.st_mode) or stat.S_ISDIR(status.st_mode)):
        return  # a link (never followed), a socket...
    if not status.st_mode & OPEN_TO_OTHERS:
        return
    try:
        os.chmod(path, owner_mode(status.st_mode))
    except OSError as err:
        found.failed.append((path, err.strerror or str(err)))
        return
    found.made_private.append((path, stat.S_IMODE(status.st_mode)))


def _report_if_open(path: Path, found: Tightened) -> None:
    try:
        status = path.lstat()
    except OSError:
        return
    if stat.S_ISLNK(status.st_mode):
        return
    if status.st_mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWGRP | stat.S_IWOTH):
        found.not_ours.append(path)
