"""Statements, the ledger, usage and credits through the HTTP API (SQLite and PostgreSQL):
a statement's figures from the ledger entries behind it, its formats, who may ask for it,
bad periods and projects; verification by anyone, naming what fails when a ledger row, a
figure, the order of the entries or the signature was changed."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import update

from tests.web.conftest import Api, assert_refusal
from web.db import write_session
from web.services import ledger, signing
from web.services.ledger import LEDGER
from web.services.statements import ENTRY_FIELDS, JOB_FIELDS, verify_statement

MARCH = datetime(2026, 3, 10, tzinfo=UTC).timestamp()
APRIL = datetime(2026, 4, 2, tzinfo=UTC).timestamp()


def charge(job: int, gpu_s: float, **more: Any) -> dict[str, Any]:
    entry = {
        "at": MARCH,
        "kind": "charge",
        "project": "p1",
        "amount": -gpu_s / 3600.0 * 2.0,
        "period": "2026-03",
        "job_id": job,
        "attempt": 1,
        "user": "alice",
        "flavor": "H100",
        "gpu_s": gpu_s,
        "energy_j": gpu_s * 300.0,
        "util_gpu_s": gpu_s,
        "busy_gpu_s": gpu_s * 0.5,
        "idle_gpu_s": 0.0,
        "outcome": "succeeded",
        "actor": "scheduler",
    }
    return entry | more


def append(api: Api, *entries: dict[str, Any]) -> list[dict[str, Any]]:
    with write_session(api.engine) as session:
        return ledger.append(session, entries)


@pytest.fixture
def filled(api: Api) -> Api:
    """p1 in March 2026: a grant, three jobs (one borrowed A100 job of bob's, one idle),
    a refund and a reward; p2 has a charge in March; p1 one in April."""
    append(
        api,
        {"at": MARCH - 86400, "kind": "grant", "project": "p1", "amount": 500.0, "actor": "admin"},
        charge(1, 7200.0),
        charge(2, 3600.0, user="bob", flavor="A100", borrowed=True, amount=-0.5),
        charge(3, 36000.0, idle_gpu_s=30000.0, busy_gpu_s=1000.0),
        charge(3, 1800.0, attempt=2, outcome="preempted"),
        {**charge(3, 0.0, attempt=2), "kind": "refund", "amount": 1.0, "energy_j": 0.0},
        {"at": MARCH, "kind": "reward", "project": "p1", "amount": 0.25, "period": "2026-03",
         "flavor": "A100", "gpu_s": 3600.0},
        charge(9, 3600.0, project="p2", user="carol"),
        charge(4, 3600.0, at=APRIL, period="2026-04"),
    )  # fmt: skip
    return api


def statement_of(api: Api, period: str = "2026-03", user: str = "alice") -> dict[str, Any]:
    response = api.get(user, f"/projects/p1/statements/{period}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


def verified(api: Api, statement: dict[str, Any]) -> dict[str, Any]:
    response = api.post(None, "/statements/verify", json=statement)  # no token needed
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_a_statement_sums_its_entries(filled: Api) -> None:
    s = statement_of(filled)
    assert (s["project"], s["period"], s["months"]) == ("p1", "2026-03", ["2026-03"])
    assert s["ledger_head"]["id"] == 10  # 1: the seed's grant of 1000 to p1
    ids = [row[0] for row in s["entries"]["rows"]]
    assert ids == [2, 3, 4, 5, 6, 7, 8]  # not p2's (9), not April's (10)
    totals = s["totals"]
    assert totals["jobs"] == 3
    assert totals["gpu_hours"] == pytest.approx((7200 + 3600 + 36000 + 1800) / 3600)
    assert totals["borrowed_gpu_hours"] == pytest.approx(1.0)
    assert totals["by_flavor"]["A100"]["gpu_hours"] == pytest.approx(1.0)
    assert totals["by_user"]["bob"]["credits"] == pytest.approx(0.5)
    jobs = {row[0]: dict(zip(JOB_FIELDS, row, strict=True)) for row in totals["by_job"]["rows"]}
    assert jobs[3]["attempts"] == 2
    # job 3: charged 20 + 1 credits, 1 refunded
    assert jobs[3]["credits"] == pytest.approx(20.0)
    assert jobs[1]["mean_util_pct"] == pytest.approx(50.0)
    assert totals["energy_kwh"] == pytest.approx((7200 + 3600 + 36000 + 1800) * 300 / 3.6e6)
    credits = s["credits"]
    assert credits["granted"] == 500.0 and credits["earned"] == 0.25
    assert credits["used"] == pytest.approx(4 + 0.5 + 20 + 1 - 1)
    assert credits["opening"] == 1000.0  # the seed's grant, in 2023
    assert credits["left_at_end"] == pytest.approx(1500 - 24.5 + 0.25)
    assert credits["left_now"] == pytest.approx(1500 - 24.5 + 0.25 - 2.0)  # April's charge
    assert s["idle"]["gpu_hours"] == pytest.approx(30000 / 3600)
    assert [j["job_id"] for j in s["idle"]["top_jobs"]] == [3]
    assert s["public_key"].startswith("ed25519:")
    assert verified(filled, s) == {"valid": True, "problems": [], "public_key": s["public_key"]}


def test_per_job_usage_sums_to_the_totals_and_the_ledger(filled: Api) -> None:
    s = statement_of(filled, "2026-Q1")
    jobs = [dict(zip(JOB_FIELDS, row, strict=True)) for row in s["totals"]["by_job"]["rows"]]
    for figure in ("gpu_hours", "credits", "energy_kwh", "idle_gpu_hours"):
        assert sum(j[figure] for j in jobs) == pytest.approx(s["totals"][figure])
    usage = filled.get("alice", "/usage?project=p1&period=2026-Q1&by=job").json()
    assert {u["key"]: u["gpu_hours"] for u in usage} == pytest.approx(
        {str(j["job_id"]): j["gpu_hours"] for j in jobs}
    )
    balance = filled.get("alice", "/projects/p1/credits").json()
    assert balance["ledger_sum"] == pytest.approx(s["credits"]["left_now"])


def test_a_quarter_and_a_year_take_their_months(filled: Api) -> None:
    quarter = statement_of(filled, "2026-Q2")
    assert [row[0] for row in quarter["entries"]["rows"]] == [10]
    assert quarter["credits"]["opening"] == pytest.approx(1500 - 24.5 + 0.25)
    year = statement_of(filled, "2026")
    assert len(year["months"]) == 12 and year["totals"]["jobs"] == 4


def test_an_empty_period_is_a_valid_empty_statement(filled: Api) -> None:
    s = statement_of(filled, "2025-07")
    assert s["entries"]["rows"] == [] and s["totals"]["jobs"] == 0
    assert s["totals"]["gpu_hours"] == 0.0 and s["totals"]["mean_util_pct"] is None
    assert s["credits"]["left_at_end"] == 1000.0
    assert verified(filled, s)["valid"] is True


@pytest.mark.parametrize("period", ["2026-13", "2026-Q5", "26", "2026-3", "march", "1969"])
def test_a_malformed_period_is_refused_naming_it(api: Api, period: str) -> None:
    response = api.get("alice", f"/projects/p1/statements/{period}")
    assert_refusal(response, 422, "period", "is not a period")


def test_an_unknown_or_anothers_project_is_not_found(api: Api) -> None:
    assert api.get("alice", "/projects/nope/statements/2026-03").status_code == 404
    assert api.get("carol", "/projects/p1/statements/2026-03").status_code == 404
    assert api.get("ops", "/projects/p1/statements/2026-03").status_code == 200


def test_csv_and_html_carry_the_figures_and_the_signature(filled: Api) -> None:
    signed = statement_of(filled)
    csv = filled.get("alice", "/projects/p1/statements/2026-03?format=csv")
    assert csv.headers["content-type"].startswith("text/csv")
    assert f"# signature,{signed['signature']}" in csv.text
    assert "job,3,alice,2," in csv.text
    html = filled.get("alice", "/projects/p1/statements/2026-03?format=html")
    assert html.headers["content-type"].startswith("text/html")
    assert signed["signature"] in html.text and "@media print" in html.text
    assert "http://" not in html.text and "https://" not in html.text  # self-contained
    bad = filled.get("alice", "/projects/p1/statements/2026-03?format=pdf")
    assert_refusal(bad, 422, "format")


def test_a_changed_ledger_row_fails_verification_naming_it(filled: Api) -> None:
    s = statement_of(filled)
    with write_session(filled.engine) as session:
        session.execute(update(LEDGER).where(LEDGER.c.id == 4).values(amount=-0.25))
    problems = verified(filled, s)["problems"]
    assert "ledger entry 4: amount is -0.5 in the statement, -0.25 in the ledger" in problems
    assert any(
        "the ledger's chain does not verify: ledger entry 4: its hash" in p for p in problems
    )


def test_a_changed_figure_fails_verification_naming_it(filled: Api) -> None:
    s = statement_of(filled)
    s["totals"]["by_flavor"]["H100"]["gpu_hours"] = 99.0
    problems = verified(filled, s)["problems"]
    assert problems[0].startswith("signature does not match")
    expected = s["totals"]["gpu_hours"] - 1.0  # all but the A100 hour
    assert (
        f"totals.by_flavor.H100.gpu_hours: 99.0 in the statement, {expected!r} from its entries"
        in problems
    )


def test_reordered_entries_fail_verification_naming_them(filled: Api) -> None:
    s = statement_of(filled)
    rows = s["entries"]["rows"]
    rows[3], rows[4] = rows[4], rows[3]
    problems = verified(filled, s)["problems"]
    assert "entries out of order: 5 after 6" in problems


def test_a_changed_entry_in_the_statement_fails_on_its_hash(filled: Api) -> None:
    s = statement_of(filled)
    s["entries"]["rows"][1][ENTRY_FIELDS.index("gpu_s")] = 1.0
    problems = verified(filled, s)["problems"]
    assert "ledger entry 3: its hash does not match its content" in problems
    assert any(p.startswith("totals.gpu_hours: ") for p in problems)


def test_a_tampered_signature_fails(filled: Api) -> None:
    s = statement_of(filled)
    s["signature"] = (
        "A" + s["signature"][1:] if s["signature"][0] != "A" else "B" + s["signature"][1:]
    )
    assert verified(filled, s)["problems"] == [
        "signature does not match: the statement was changed after it was signed, or was not "
        "signed with this key"
    ]


def test_a_left_out_entry_fails_against_the_ledger(filled: Api) -> None:
    s = statement_of(filled)
    del s["entries"]["rows"][2]
    problems = verified(filled, s)["problems"]
    assert "ledger entry 4: in the ledger (p1, 2026-03) but not in the statement" in problems


def test_offline_verification_with_the_public_key(filled: Api) -> None:
    response = filled.get(None, "/statements/public-key")
    assert response.status_code == 200 and "BEGIN PUBLIC KEY" in response.text
    text = filled.get("alice", "/projects/p1/statements/2026-03").content
    assert verify_statement(text, response.text).valid
    assert response.headers["x-key-id"] == json.loads(text)["public_key"]
    other = signing.public_pem(signing.Ed25519PrivateKey.generate().public_key())
    [problem] = verify_statement(text, other).problems
    assert problem.startswith("signed with key ed25519:")


def test_the_key_is_made_once_owner_only(api: Api) -> None:
    path = api.pool.settings.statement_key_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = api.get(None, "/statements/public-key").text
    assert api.get(None, "/statements/public-key").text == first


def test_the_ledger_is_listed_as_the_asker_may_see_it(filled: Api) -> None:
    mine = filled.get("alice", "/ledger?limit=100").json()
    assert {e["project"] for e in mine} == {"p1"} and len(mine) == 9
    assert filled.get("carol", "/ledger?project=p1").json() == []
    charges = filled.get("admin", "/ledger?kind=charge&period=2026-03").json()
    assert [e["id"] for e in charges] == [3, 4, 5, 6, 9]
    assert_refusal(filled.get("admin", "/ledger?kind=gift"), 422, "kind")
    assert_refusal(filled.get("admin", "/ledger?period=soon"), 422, "period")


def test_usage_groups_the_charges(filled: Api) -> None:
    by_user = filled.get("admin", "/usage?period=2026-03&by=user").json()
    hours = {u["key"]: u["gpu_hours"] for u in by_user}
    assert hours == pytest.approx({"alice": (7200 + 36000 + 1800) / 3600, "bob": 1.0, "carol": 1.0})
    flavor = filled.get("alice", "/usage?by=flavor&flavor=A100").json()
    assert [(u["key"], u["borrowed_gpu_hours"], u["jobs"]) for u in flavor] == [("A100", 1.0, 1)]
    assert filled.get("carol", "/usage?project=p1").json() == []


def test_the_credit_balance_agrees_with_the_ledger(filled: Api) -> None:
    balance = filled.get("alice", "/projects/p1/credits").json()
    # p1 was seeded with 1000 credits by a grant, then these entries moved its totals.
    assert balance["granted"] == pytest.approx(1500.0)
    assert balance["used"] == pytest.approx(24.5 + 2.0)
    assert balance["earned"] == 0.25
    assert balance["left"] == pytest.approx(1500 - 26.5 + 0.25)
    assert balance["ledger_sum"] == pytest.approx(balance["left"])
    assert balance["agrees"] is True
    assert filled.get("carol", "/projects/p1/credits").status_code == 404
