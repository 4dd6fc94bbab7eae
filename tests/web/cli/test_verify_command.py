"""`gpupool verify FILE --public-key KEY`: offline, with no server; a tampered statement
exits 1 naming what fails."""

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


def files(engine: Engine, tmp_path: Path) -> tuple[Path, Path]:
    rows = PoolRows(engine, ManualClock())
    rows.pool(nodes=1)
    rows.project("a")
    entry = {
        "at": AT,
        "kind": "charge",
        "project": "a",
        "amount": -2.0,
        "period": "2026-05",
        "job_id": 7,
        "attempt": 1,
        "user": "a-user",
        "flavor": "H100",
        "gpu_s": 3600.0,
    }
    with write_session(engine) as s:
        ledger.append(s, [entry])
    key = signing.pool_key(tmp_path / "key.pem")
    with read_session(engine) as s:
        signed = build_statement(s, Principal("x", Role.ADMIN), "a", "2026-05", key, AT)
    statement, public = tmp_path / "statement.json", tmp_path / "pool.pem"
    statement.write_bytes(signed.json)
    public.write_text(signing.public_pem(key.public_key()))
    return statement, public


def test_verify_offline(engine: Engine, tmp_path: Path) -> None:
    statement, public = files(engine, tmp_path)
    done = CliRunner().invoke(app, ["verify", str(statement), "--public-key", str(public)])
    assert done.exit_code == 0, done.output
    assert "VALID (offline" in done.output and "statement of a for 2026-05" in done.output

    content = json.loads(statement.read_bytes())
    content["credits"]["used"] = 1.0
    statement.write_text(json.dumps(content))
    done = CliRunner().invoke(app, ["verify", str(statement), "--public-key", str(public)])
    assert done.exit_code == 1
    assert "NOT VALID" in done.output
    assert "signature does not match" in done.output
    assert "credits.used: 1.0 in the statement, 2.0 from its entries" in done.output
