"""Statements as a service (SQLite and PostgreSQL): periods, figures from ledger entries
written by ledger.append and by real metering at an attempt's end, the property that job
usage, statement totals and ledger sums agree, offline verification of tampered
statements, and the pool key's file."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from scheduler.runtime.fake import InProcessDispatcher
from tests.conftest import ManualClock
from tests.scheduler.runtime.conftest import HOUR, Live, PoolRows, make_live
from web.db import read_session, write_session
from web.models import Project, Role
from web.services import ledger, signing
from web.services.auth import Principal
from web.services.errors import Invalid, NotFound, Unavailable
from web.services.ledger import LEDGER
from web.services.metering import period_of
from web.services.statements import (
    ENTRY_FIELDS,
    JOB_FIELDS,
    build_statement,
    parse_period,
    to_csv,
    to_html,
    verify_statement,
)

ADMIN = Principal("auditor", Role.ADMIN)
JUNE = datetime(2026, 6, 15, tzinfo=UTC).timestamp()


@pytest.fixture
def key(tmp_path: Path) -> signing.Ed25519PrivateKey:
    return signing.pool_key(tmp_path / "key.pem")


@pytest.fixture
def rows(engine: Engine) -> PoolRows:
    rows = PoolRows(engine, ManualClock())
    rows.pool(nodes=1)
    return rows


# --- periods ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "months", "start", "end"),
    [
        ("2026-03", ["2026-03"], "2026-03-01", "2026-04-01"),
        ("2026-12", ["2026-12"], "2026-12-01", "2027-01-01"),
        ("2026-Q4", ["2026-10", "2026-11", "2026-12"], "2026-10-01", "2027-01-01"),
        ("2026-Q1", ["2026-01", "2026-02", "2026-03"], "2026-01-01", "2026-04-01"),
        ("2026", [f"2026-{m:02d}" for m in range(1, 13)], "2026-01-01", "2027-01-01"),
    ],
)
def test_periods(text: str, months: list[str], start: str, end: str) -> None:
    period = parse_period(text)
    assert list(period.months) == months
    assert period.start == datetime.fromisoformat(start).replace(tzinfo=UTC).timestamp()
    assert period.end == datetime.fromisoformat(end).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize("text", ["", "2026-00", "2026-13", "2026-Q0", "2026-Q5", "2026-1", "x"])
def test_a_malformed_period_names_the_field(text: str) -> None:
    with pytest.raises(Invalid) as raised:
        parse_period(text)
    assert raised.value.field == "period"


# --- building and verifying ------------------------------------------------------------------


def charge(project: str, job: int, gpu_s: float, **more: Any) -> dict[str, Any]:
    return {
        "at": JUNE,
        "kind": "charge",
        "project": project,
        "amount": 0.0 - gpu_s / 3600.0,  # never -0.0: see the xfail below
        "period": "2026-06",
        "job_id": job,
        "attempt": 1,
        "user": f"{project}-user",
        "flavor": "H100",
        "gpu_s": gpu_s,
        "energy_j": gpu_s * 250.0,
        "util_gpu_s": gpu_s,
        "busy_gpu_s": gpu_s * 0.8,
    } | more


def test_an_unknown_project_is_not_found(rows: PoolRows, key: signing.Ed25519PrivateKey) -> None:
    with read_session(rows.engine) as s, pytest.raises(NotFound):
        build_statement(s, ADMIN, "nope", "2026-06", key, JUNE)


def test_a_real_charge_at_an_attempts_end_is_in_the_statement(
    rows: PoolRows, engine: Engine, key: signing.Ed25519PrivateKey
) -> None:
    clock = ManualClock()
    live: Live = make_live(engine, clock, InProcessDispatcher(clock))
    rows.project("a", guaranteed=8, limit=8, credits=100.0)
    job = rows.job("a", gpus=2)
    live.tick()
    clock.advance(HOUR)
    live.dispatcher.finish(str(job), 1)
    live.tick()
    with read_session(engine) as s:
        signed = build_statement(s, ADMIN, "a", period_of(clock.now()), key, clock.now())
    totals = signed.content["totals"]
    assert totals["gpu_hours"] == pytest.approx(2.0)
    assert totals["by_job"]["rows"][0][:3] == [job, "a-user", 1]
    assert signed.content["credits"]["used"] == pytest.approx(rows.project_row("a").credits_used)
    with read_session(engine) as s:
        assert verify_statement(signed.json, key.public_key(), ledger.stream(s)).valid


def test_tampering_offline_is_named(rows: PoolRows, key: signing.Ed25519PrivateKey) -> None:
    rows.project("a")
    with write_session(rows.engine) as s:
        ledger.append(s, [charge("a", 1, 3600.0), charge("a", 2, 7200.0, user="x")])
    with read_session(rows.engine) as s:
        signed = build_statement(s, ADMIN, "a", "2026-Q2", key, JUNE)
    public = key.public_key()
    assert verify_statement(signed.json, public).problems == []

    figure = json.loads(signed.json)
    figure["totals"]["by_user"]["x"]["energy_kwh"] = 1.0
    assert "totals.by_user.x.energy_kwh: 1.0 in the statement, 0.5 from its entries" in (
        verify_statement(figure, public).problems
    )
    job_row = json.loads(signed.json)
    job_row["totals"]["by_job"]["rows"][0][JOB_FIELDS.index("gpu_hours")] = 3.0
    assert any(
        p.startswith("totals.by_job.rows[0][3]: 3.0 in the statement, 1.0 from its entries")
        for p in verify_statement(job_row, public).problems
    )
    foreign = json.loads(signed.json)
    foreign["entries"]["rows"][0][ENTRY_FIELDS.index("project")] = "b"
    problems = verify_statement(foreign, public).problems
    assert "ledger entry 1: of project 'b', not 'a'" in problems
    assert "ledger entry 1: its hash does not match its content" in problems
    assert verify_statement(signed.json[:-1], public).problems[0].startswith("not JSON")
    csv = to_csv(signed.content)
    assert verify_statement(csv, public).problems[0].startswith("not JSON")
    assert signed.content["signature"] in to_html(signed.content)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    charges=st.lists(
        st.tuples(
            st.integers(1, 12),  # job
            st.integers(1, 3),  # attempt
            st.sampled_from(["u1", "u2", "u3"]),
            st.sampled_from(["H100", "A100"]),
            st.floats(0, 1e6, allow_subnormal=False),  # GPU-seconds
            st.booleans(),  # borrowed
            st.floats(0, 1, allow_subnormal=False),  # idle share
            st.sampled_from(["2026-04", "2026-05", "2026-06", "2026-07"]),
            st.booleans(),  # refunded
        ),
        max_size=40,
    ),
    grant=st.floats(0, 1e5, allow_subnormal=False),
)
def test_job_usage_statement_totals_and_ledger_sums_agree(
    rows: PoolRows,
    key: signing.Ed25519PrivateKey,
    charges: list[tuple[int, int, str, str, float, bool, float, str, bool]],
    grant: float,
) -> None:
    project = f"prop{next(_counter)}"
    rows.project(project)
    entries: list[dict[str, Any]] = [
        {"at": JUNE, "kind": "grant", "project": project, "amount": grant}
    ]
    for job, attempt, user, flavor, gpu_s, borrowed, idle, period, refunded in charges:
        entry = charge(project, job, gpu_s, attempt=attempt, user=user, flavor=flavor)
        entry |= {"borrowed": borrowed, "idle_gpu_s": gpu_s * idle, "period": period}
        entries.append(entry)
        if refunded:
            entries.append(
                entry | {"kind": "refund", "amount": abs(entry["amount"]) / 2, "gpu_s": 0.0}
            )
    with write_session(rows.engine) as s:
        ledger.append(s, entries)
    with read_session(rows.engine) as s:
        signed = build_statement(s, ADMIN, project, "2026-Q2", key, JUNE)
        in_q2 = (LEDGER.c.project == project) & LEDGER.c.period.in_(
            ["2026-04", "2026-05", "2026-06"]
        )
        usage = LEDGER.c.kind.in_(["charge", "refund"])
        ledger_gpu_s, ledger_amount = s.execute(
            select(func.sum(LEDGER.c.gpu_s), func.sum(LEDGER.c.amount)).where(in_q2, usage)
        ).one()
        project_row = s.get(Project, project)
        assert project_row is not None
        credits_used = project_row.credits_used
        assert verify_statement(signed.json, key.public_key(), ledger.stream(s)).valid
    statement = signed.content
    totals = statement["totals"]
    jobs = [dict(zip(JOB_FIELDS, row, strict=True)) for row in totals["by_job"]["rows"]]
    for figure in ("gpu_hours", "credits", "energy_kwh", "idle_gpu_hours", "borrowed_gpu_hours"):
        total = totals[figure]
        assert sum(j[figure] for j in jobs) == pytest.approx(total, rel=1e-9, abs=1e-6)
        for table in ("by_flavor", "by_user"):
            by = totals[table].values()
            assert sum(u[figure] for u in by) == pytest.approx(total, rel=1e-9, abs=1e-6)
    assert totals["gpu_hours"] == pytest.approx((ledger_gpu_s or 0.0) / 3600, rel=1e-9, abs=1e-6)
    assert statement["credits"]["used"] == pytest.approx(-(ledger_amount or 0.0), abs=1e-5)
    # Everything of the project is in Q2 or July; the totals moved with each entry.
    july = sum(-e["amount"] for e in entries[1:] if e["period"] == "2026-07")
    assert statement["credits"]["used"] + july == pytest.approx(credits_used, rel=1e-9, abs=1e-5)
    assert statement["credits"]["left_at_end"] == pytest.approx(
        grant - statement["credits"]["used"], rel=1e-9, abs=1e-5
    )


_counter = iter(range(1, 1_000_000))


def test_a_charge_of_nothing_keeps_the_chain_whole(rows: PoolRows) -> None:
    rows.project("a")
    with write_session(rows.engine) as s:
        ledger.append(s, [charge("a", 1, 0.0) | {"amount": -0.0}])
    with read_session(rows.engine) as s:
        assert ledger.check_chain(ledger.stream(s)) is None


# --- the key ---------------------------------------------------------------------------------


def test_the_key_is_made_owner_only_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "statement-key.pem"
    made = signing._read_or_make(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in path.parent.iterdir() if p.name != path.name]  # no temporary left
    again = signing._read_or_make(path)
    assert signing.key_id(again.public_key()) == signing.key_id(made.public_key())


def test_a_key_others_may_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "statement-key.pem"
    signing._read_or_make(path)
    os.chmod(path, 0o644)
    with pytest.raises(Unavailable, match="chmod 600"):
        signing._read_or_make(path)
