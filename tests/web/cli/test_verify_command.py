"""`gpupool verify FILE --public-key KEY`: offline, with no server; a tampered statement
exits 1 naming what fails, and so does anything that is not a statement (no traceback)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from tests.conftest import ManualClock
from tests.scheduler.runtime.conftest import PoolRows
from web.cli import app
from web.db import read_session, write_session
from web.models import Role
from web.services import ledger, signing
from web.services.auth import Principal
from web.services.statements import MAX_DEPTH, build_statement, to_json

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
    statement.write_bytes(to_json(content))  # the canonical form of the changed content
    done = CliRunner().invoke(app, ["verify", str(statement), "--public-key", str(public)])
    assert done.exit_code == 1
    assert "NOT VALID" in done.output
    assert "signature does not match" in done.output
    assert "credits.used: 1.0 in the statement, 2.0 from its entries" in done.output


def test_a_pretty_printed_copy_is_not_valid(engine: Engine, tmp_path: Path) -> None:
    statement, public = files(engine, tmp_path)
    statement.write_text(json.dumps(json.loads(statement.read_bytes()), indent=2, sort_keys=True))
    done = CliRunner().invoke(app, ["verify", str(statement), "--public-key", str(public)])
    assert done.exit_code == 1
    assert "NOT VALID" in done.output and "not in canonical form: whitespace" in done.output


def _with(statement: bytes, old: bytes, new: bytes) -> bytes:
    assert old in statement
    return statement.replace(old, new, 1)


HOSTILE = [
    # (how the genuine statement is changed, the rule named)
    (lambda s: _with(s, b'"opening":0.0', b'"opening":NaN'), "NaN is not a JSON number"),
    (lambda s: _with(s, b'"version":1', b'"version":' + b"7" * 400), "number out of range"),
    (lambda s: _with(s, b'"kind":"g', b'"kind":"\\ud800g'), "lone surrogate"),
    (lambda s: _with(s, b'"version":1', b'"version":' + b"[" * 50_000 + b"]" * 50_000),
     f"nested deeper than {MAX_DEPTH}"),
    (lambda s: b"\xff\xfe" + s, "not UTF-8"),
    (lambda s: b"", "empty"),
    (lambda s: b"[]", "a JSON object is expected"),
    (lambda s: b'{"credits":{"granted":999999.0},' + s[1:], "duplicate key 'credits' at $"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "rule"), HOSTILE)
def test_anything_not_a_statement_is_not_valid_without_a_traceback(
    engine: Engine, tmp_path: Path, change: Any, rule: str
) -> None:
    statement, public = files(engine, tmp_path)
    statement.write_bytes(change(statement.read_bytes()))
    done = CliRunner().invoke(app, ["verify", str(statement), "--public-key", str(public)])
    assert done.exit_code == 1, done.output
    assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
    assert "NOT VALID" in done.output and rule in done.output, done.output
    assert "Traceback" not in done.output
