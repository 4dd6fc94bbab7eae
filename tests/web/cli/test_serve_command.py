"""`gpupool up` and `gpupool serve` as an operator starts them: a port already taken is one
line and a non-zero exit before anything is printed or started; the data directory is made
whatever the database (on PostgreSQL too: it holds the key and the tokens), owner-only; an
install from before, readable by others, is tightened at start-up with a warning naming it."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.web.cli.test_client_commands import CLI, REPO, client_env, free_port, started


def run(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def modes(root: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(root.lstat().st_mode)}
    for entry in root.rglob("*"):
        found[str(entry.relative_to(root))] = stat.S_IMODE(entry.lstat().st_mode)
    return found


@pytest.fixture
def occupied() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield int(other.getsockname()[1])


@pytest.mark.parametrize("command", ["up", "serve"])
def test_a_port_in_use_is_one_line_before_anything_starts(
    command: str, occupied: int, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    done = run(
        [command, "--port", str(occupied), "--data-dir", str(data), "--dispatcher", "none"],
        client_env(tmp_path),
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stdout == ""  # no address, no token printed
    assert done.stderr.strip() == (
        f"error: port {occupied} on 127.0.0.1 is in use; choose another with --port"
    )
    assert not data.exists()  # nothing made either


def test_a_host_that_is_not_here_is_one_line(tmp_path: Path) -> None:
    done = run(["serve", "--host", "192.0.2.1", "--port", str(free_port())], client_env(tmp_path))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip() == "error: --host 192.0.2.1: not an address of this machine"


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_up_on_postgresql_makes_a_new_data_dir_owner_only(db_url: str, tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"
    env = client_env(tmp_path) | {"GPUPOOL_DATABASE_URL": db_url}
    port = free_port()
    args = ["up", "--port", str(port), "--data-dir", str(data), "--dispatcher", "none"]
    for _url in started(args, env, port, tmp_path / "up.log"):
        found = modes(data)
    assert "Traceback" not in (tmp_path / "up.log").read_text()
    assert {"admin.token", "admin.password", "statement-key.pem"} <= found.keys()
    assert found == {".": 0o700} | {name: 0o600 for name in found if name != "."}


def test_serve_tightens_an_old_install_and_says_so(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = client_env(tmp_path)
    previous = os.umask(0o022)
    try:
        made = run(["db", "upgrade", "--data-dir", str(data)], env)
        assert made.returncode == 0, made.stderr
        (data / "admin.token").write_text("gpp_old\n")
    finally:
        os.umask(previous)
    data.chmod(0o755)
    for name in ("gpupool.db", "admin.token"):
        (data / name).chmod(0o644)
    port = free_port()
    log = tmp_path / "serve.log"
    args = ["serve", "--port", str(port), "--data-dir", str(data), "--dispatcher", "none"]
    for _url in started(args, env, port, log):
        found = modes(data)
    said = " ".join(log.read_text().split())
    assert "warning: the data directory was readable by other users of this machine" in said
    assert f"{data} (755 -> 700)" in said and f"{data / 'gpupool.db'} (644 -> 600)" in said
    assert found == {".": 0o700} | {name: 0o600 for name in found if name != "."}


@pytest.mark.parametrize("command", ["up", "serve", "db upgrade"])
@pytest.mark.parametrize(
    ("environment", "said"),
    [
        (
            {"GPUPOOL_DATABASE_URL": "postgresql://pool:s3cret@127.0.0.1:1/pool"},
            "error: the database postgresql+psycopg://pool:***@127.0.0.1:1/pool: connection failed",
        ),
        (
            {"GPUPOOL_DATABASE_URL": "postgresql://pool:s3cret@host:port/pool"},
            "error: the database URL (GPUPOOL_DATABASE_URL) does not parse",
        ),
        (
            {"GPUPOOL_DATABASE_URL": "mysql://pool:s3cret@host/pool"},
            "error: the database URL (GPUPOOL_DATABASE_URL) is for mysql",
        ),
        (
            {"GPUPOOL_PORT": "eighty"},
            "error: invalid settings (flags and GPUPOOL_* variables): port",
        ),
        ({"GPUPOOL_DATA_DIR": "/proc/no/such"}, "/proc/no/such"),
    ],
    ids=["unreachable", "unparsable", "not-postgresql", "bad-port", "unmakeable-dir"],
)
def test_a_setting_that_cannot_work_is_one_line(
    command: str, environment: dict[str, str], said: str, tmp_path: Path
) -> None:
    args = command.split()
    if command != "db upgrade":
        args += ["--dispatcher", "none"] + (
            [] if "GPUPOOL_PORT" in environment else ["--port", str(free_port())]
        )
    done = run(args, client_env(tmp_path) | environment)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and said in lines[0], done.stderr
    assert "s3cret" not in done.stderr
