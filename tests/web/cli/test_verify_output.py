"""What `gpupool verify` prints of a statement (its project, period, key) and of its file's
name shows control characters as visible escapes, valid or not."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Engine
from typer.testing import CliRunner

from tests.conftest import ManualClock
from tests.scheduler.runtime.conftest import PoolRows
from web.cli import app
from web.db import read_session, write_session
from web.models import Role
from web.services import ledger, signing
from web.services.auth import Principal
from web.services.statements import build_statement

AT = 1_780_000_000.0  # 2026-05-28
# A project named to retitle the window and reverse what follows, as stored before names
# were checked.
PROJECT = "lab\x1b]0;pwned\x07\u202ex"
SHOWN = "lab\\x1b]0;pwned\\x07\\u202ex"
RAW = ("\x1b", "\x07", "\u202e")


def signed_statement(engine: Engine, tmp_path: Path, file_name: str) -> tuple[Path, Path]:
    PoolRows(engine, ManualClock()).pool(nodes=1)
    PoolRows(engine, ManualClock()).project(PROJECT)
    entry = {
        "at": AT,
        "kind": "charge",
        "project": PROJECT,
        "amount": -2.0,
        "period": "2026-05",
        "job_id": 7,
        "attempt": 1,
        "user": f"{PROJECT}-user",
        "flavor": "H100",
        "gpu_s": 3600.0,
    }
    with write_session(engine) as s:
        ledger.append(s, [entry])
    key = signing.pool_key(tmp_path / "key.pem")
    with read_session(engine) as s:
        signed = build_statement(s, Principal("x", Role.ADMIN), PROJECT, "2026-05", key, AT)
    statement, public = tmp_path / file_name, tmp_path / "pool.pem"
    statement.write_bytes(signed.json)
    public.write_text(signing.public_pem(key.public_key()))
    return statement, public


def test_a_valid_statements_fields_are_printed_escaped(engine: Engine, tmp_path: Path) -> None:
    statement, public = signed_statement(engine, tmp_path, "statement.json")
    done = CliRunner().invoke(app, ["verify", str(statement), "--public-key", str(public)])
    assert done.exit_code == 0, done.output
    assert f"statement of {SHOWN} for 2026-05" in done.output
    assert not any(char in done.output for char in RAW), repr(done.output)


def test_not_valid_names_the_file_escaped(engine: Engine, tmp_path: Path) -> None:
    statement, public = signed_statement(engine, tmp_path, "s\x1b[2J.json")
    content = json.loads(statement.read_bytes())
    content["credits"]["used"] = 1.0
    statement.write_text(json.dumps(content, ensure_ascii=False))
    done = CliRunner().invoke(app, ["verify", str(statement), "--public-key", str(public)])
    assert done.exit_code == 1
    assert "NOT VALID" in done.output and "s\\x1b[2J.json" in done.output
    assert not any(char in done.output for char in RAW), repr(done.output)
