"""Metering through the live loop (real database, SQLite and PostgreSQL): an attempt's end
appends its charges to the ledger in the same transaction; borrowed GPU-hours cost less,
cut-short attempts are refunded, lenders earn rewards, usage splits at month boundaries;
and the ledger chain and the projects' totals agree with the entries. Plus the chain check
itself on tampered, removed and reordered entries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, select

from tests.conftest import ManualClock
from tests.scheduler.runtime.conftest import HOUR, Live, PoolRows
from web.db import read_session, write_session
from web.models import JobUsage, Project
from web.services import ledger
from web.services.ledger import LEDGER, check_chain
from web.services.metering import split_by_month


def entries(engine: Engine, **where: Any) -> list[dict[str, Any]]:
    with read_session(engine) as s:
        query = select(LEDGER).order_by(LEDGER.c.id)
        for name, value in where.items():
            query = query.where(LEDGER.c[name] == value)
        return [dict(r._mapping) for r in s.execute(query)]


def run_for(live: Live, job: int, seconds: float, end: str = "finish") -> None:
    """Admit the job, let it run `seconds`, end it (finish or lose), record the end."""
    live.tick()
    live.clock.advance(seconds)
    if end == "finish":
        live.dispatcher.finish(str(job), 1)
    else:
        live.dispatcher.lose(str(job), 1, "node gone")
    live.tick()


def totals_agree(engine: Engine) -> None:
    """Each project's totals are the sums of its entries, and the chain holds."""
    all_entries = entries(engine)
    assert check_chain(all_entries) is None
    with read_session(engine) as s:
        for p in s.execute(select(Project)).scalars():
            mine = [e for e in all_entries if e["project"] == p.name]
            used = -sum(e["amount"] for e in mine if e["kind"] in ("charge", "refund"))
            earned = sum(e["amount"] for e in mine if e["kind"] == "reward")
            assert p.credits_used == pytest.approx(used)
            assert p.credits_earned == pytest.approx(earned)


def test_an_attempt_is_charged_its_gpu_hours_at_its_end(rows: PoolRows, live: Live) -> None:
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8, credits=100.0)
    job = rows.job("a", gpus=2)
    run_for(live, job, HOUR)

    [charge] = entries(rows.engine, kind="charge")
    assert (charge["project"], charge["job_id"], charge["attempt"], charge["user"]) == (
        "a",
        job,
        1,
        "a-user",
    )
    assert charge["amount"] == pytest.approx(-2.0)  # 2 GPU-hours at the flavor's rate 1.0
    assert (charge["gpu_s"], charge["flavor"], charge["borrowed"]) == (7200.0, "H100", False)
    assert charge["outcome"] == "succeeded"
    assert charge["period"] == datetime.fromtimestamp(charge["at"], UTC).strftime("%Y-%m")
    assert rows.project_row("a").credits_used == pytest.approx(2.0)
    totals_agree(rows.engine)


def test_the_agents_figures_go_with_the_charge(rows: PoolRows, live: Live) -> None:
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8)
    job = rows.job("a", gpus=1)
    live.tick()
    with write_session(rows.engine) as s:
        s.add(
            JobUsage(
                job_id=job,
                attempt=1,
                gpu_s=3600,
                util_gpu_s=3600,
                busy_gpu_s=1800,
                idle_gpu_s=600,
                energy_j=1.08e6,
            )
        )
    live.clock.advance(HOUR)
    live.dispatcher.finish(str(job), 1)
    live.tick()
    [charge] = entries(rows.engine, kind="charge")
    assert (charge["energy_j"], charge["busy_gpu_s"], charge["idle_gpu_s"]) == (
        pytest.approx(1.08e6),
        pytest.approx(1800),
        pytest.approx(600),
    )


def test_usage_across_a_month_boundary_is_split_at_it(
    rows: PoolRows, live: Live, clock: ManualClock
) -> None:
    clock.t = datetime(2026, 11, 30, 23, 30, tzinfo=UTC).timestamp()
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8)
    job = rows.job("a", gpus=4)
    run_for(live, job, HOUR)
    charges = entries(rows.engine, kind="charge")
    assert [(c["period"], c["gpu_s"], c["amount"]) for c in charges] == [
        ("2026-11", 4 * 1800.0, pytest.approx(-2.0)),
        ("2026-12", 4 * 1800.0, pytest.approx(-2.0)),
    ]


def test_borrowed_hours_cost_less_and_the_lender_earns_a_share(rows: PoolRows, live: Live) -> None:
    rows.pool(nodes=1)
    rows.project("borrower", guaranteed=0, limit=8)
    rows.project("lender", guaranteed=8, limit=8)
    job = rows.job("borrower", gpus=4)
    run_for(live, job, HOUR)

    [charge] = entries(rows.engine, kind="charge")
    assert charge["borrowed"] is True
    assert charge["amount"] == pytest.approx(-4.0 * 0.5)  # GPUPOOL_BORROWED_CREDIT_RATE
    [reward] = entries(rows.engine, kind="reward")
    assert reward["project"] == "lender"
    assert reward["amount"] == pytest.approx(4.0 * 0.25)  # GPUPOOL_LENDING_REWARD_SHARE
    assert reward["gpu_s"] == pytest.approx(4 * 3600.0)
    assert rows.project_row("lender").credits_earned == pytest.approx(1.0)
    totals_agree(rows.engine)


def test_an_attempt_lost_with_its_node_is_charged_and_refunded(rows: PoolRows, live: Live) -> None:
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8)
    job = rows.job("a", gpus=2)
    run_for(live, job, HOUR, end="lose")
    charge, refund = entries(rows.engine, job_id=job)
    assert (charge["kind"], refund["kind"]) == ("charge", "refund")
    assert refund["amount"] == pytest.approx(-charge["amount"])
    assert "lost" in refund["note"]
    assert rows.project_row("a").credits_used == pytest.approx(0.0)
    totals_agree(rows.engine)


def test_a_project_without_a_budget_is_charged_but_keeps_no_budget(
    rows: PoolRows, live: Live
) -> None:
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8, credits=None)
    run_for(live, rows.job("a", gpus=1), HOUR)
    project = rows.project_row("a")
    assert (project.credits, project.credits_used) == (None, pytest.approx(1.0))


# --- the chain ---------------------------------------------------------------------------------


@pytest.fixture
def chain(rows: PoolRows) -> list[dict[str, Any]]:
    rows.pool(nodes=1)  # the sector "research" and a flavor
    rows.project("a")
    with write_session(rows.engine) as s:
        ledger.append(
            s,
            [
                {"at": 1.7e9 + i, "kind": "grant", "project": "a", "amount": 10.0 + i}
                for i in range(5)
            ],
        )
    return entries(rows.engine)


def test_an_untouched_chain_checks(chain: list[dict[str, Any]]) -> None:
    assert [e["id"] for e in chain] == [1, 2, 3, 4, 5]
    assert chain[0]["prev_hash"] == ledger.GENESIS
    assert check_chain(chain) is None
    assert check_chain(chain[2:], after=(2, chain[1]["hash"])) is None


def test_a_changed_entry_fails_the_check_naming_it(chain: list[dict[str, Any]]) -> None:
    chain[2]["amount"] = 1_000.0
    assert str(check_chain(chain)) == (
        "ledger entry 3: its hash does not match its content (the entry was changed)"
    )


def test_a_removed_entry_fails_the_check_naming_it(chain: list[dict[str, Any]]) -> None:
    del chain[1]
    assert str(check_chain(chain)) == "ledger entry 2: missing (after entry 1 comes entry 3)"


def test_reordered_entries_fail_the_check(chain: list[dict[str, Any]]) -> None:
    chain[1], chain[2] = chain[2], chain[1]
    problem = check_chain(chain)
    assert problem is not None and problem.entry == 2


def test_an_entry_renumbered_into_the_gap_fails_on_its_prev_hash(
    chain: list[dict[str, Any]],
) -> None:
    removed = chain.pop(1)
    chain[1] = chain[1] | {"id": removed["id"]}
    problem = check_chain(chain)
    assert problem is not None and problem.entry == 2


def test_the_chain_holds_across_appends_in_separate_transactions(rows: PoolRows) -> None:
    rows.pool(nodes=1)
    rows.project("a")
    for round_ in range(3):
        with write_session(rows.engine) as s:
            ledger.append(
                s, [{"at": 1.7e9 + round_, "kind": "grant", "project": "a", "amount": 1.0}]
            )
    assert check_chain(entries(rows.engine)) is None
    assert rows.project_row("a").credits == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("2026-11-30T23:00", "2026-12-01T01:00", [("2026-11", 3600.0), ("2026-12", 3600.0)]),
        ("2026-12-31T23:00", "2027-01-01T00:30", [("2026-12", 3600.0), ("2027-01", 1800.0)]),
        ("2026-05-10T00:00", "2026-05-10T00:00", []),
    ],
)
def test_split_by_month(start: str, end: str, expected: list[tuple[str, float]]) -> None:
    def moment(text: str) -> float:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()

    assert list(split_by_month(moment(start), moment(end))) == expected


def test_the_scheduler_enforces_the_ledgers_balance_earned_credits_included(
    rows: PoolRows, live: Live
) -> None:
    rows.pool(nodes=1)
    rows.project("a", guaranteed=8, limit=8, credits=10.0)
    with write_session(rows.engine) as s:
        project = s.get(Project, "a")
        assert project is not None
        project.credits_used, project.credits_earned = 12.0, 5.0
    [seen] = [p for p in live.source.snapshot(live.clock.now()).projects if p.name == "a"]
    assert seen.credits_left == pytest.approx(3.0)  # 10 granted + 5 earned - 12 used
