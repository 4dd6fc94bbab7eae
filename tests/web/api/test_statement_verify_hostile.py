"""POST /api/v1/statements/verify against what an attacker sends (SQLite and PostgreSQL), no
token needed: the exact bytes are checked (a forged duplicate key or a pretty-printed copy is
not valid), anything that is not a statement is `valid: false` naming the rule (never a 5xx,
nothing stored), a body over the limit is a 413 naming it, read no further than the limit.
Statement periods with a trailing newline or non-ASCII digits are refused naming `period`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select
from sqlmodel import SQLModel

from tests.web.conftest import Api, assert_refusal, open_api
from web.db import read_session
from web.services.metering import period_of
from web.services.slots import Slots
from web.services.statements import MAX_DEPTH
from web.settings import Settings

VERIFY = "/statements/verify"


@pytest.fixture(scope="module")
def genuine(module_api: Api) -> bytes:
    """p1's statement of this month (the seed's grant), as the pool hands it out."""
    period = period_of(module_api.clock.now())
    answer = module_api.get("alice", f"/projects/p1/statements/{period}")
    assert answer.status_code == 200, answer.text
    return answer.content


def verify(api: Api, document: bytes, **headers: str) -> dict[str, Any]:
    answer = api.post(
        None, VERIFY, content=document, headers={"Content-Type": "application/json"} | headers
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def rows_everywhere(engine: Engine) -> dict[str, int]:
    with read_session(engine) as session:
        return {
            name: int(session.execute(select(func.count()).select_from(table)).scalar_one())
            for name, table in SQLModel.metadata.tables.items()
        }


def test_the_genuine_bytes_are_valid(module_api: Api, genuine: bytes) -> None:
    result = verify(module_api, genuine)
    assert result["valid"] is True and result["problems"] == []


def test_a_forged_duplicate_key_before_the_genuine_one_is_not_valid(
    module_api: Api, genuine: bytes
) -> None:
    forged = b'{"credits":{"granted":999999.0},' + genuine[1:]
    result = verify(module_api, forged)
    assert result["valid"] is False
    assert result["problems"] == ["duplicate key 'credits' at $ (a reader may see either value)"]


def test_a_pretty_printed_copy_is_not_valid(module_api: Api, genuine: bytes) -> None:
    pretty = json.dumps(json.loads(genuine), indent=2, sort_keys=True, ensure_ascii=False)
    [problem] = verify(module_api, pretty.encode())["problems"]
    assert problem.startswith("not in canonical form: whitespace at byte 1")


def _with(document: bytes, old: bytes, new: bytes) -> bytes:
    assert old in document
    return document.replace(old, new, 1)


HOSTILE: list[tuple[str, Any, str]] = [
    ("NaN", lambda s: _with(s, b'"version":1', b'"version":NaN'), "NaN is not a JSON number"),
    ("400 digits", lambda s: _with(s, b'"version":1', b'"version":' + b"9" * 400),
     "number out of range"),
    ("1e400", lambda s: _with(s, b'"version":1', b'"version":1e400'), "number out of range"),
    ("a lone surrogate", lambda s: _with(s, b'"kind":"g', b'"kind":"\\ud800g'),
     "lone surrogate"),
    ("deep nesting", lambda s: b"[" * 100_000 + b"]" * 100_000,
     f"nested deeper than {MAX_DEPTH}"),
    ("unclosed nesting", lambda s: b'{"a":' * 50_000, f"nested deeper than {MAX_DEPTH}"),
    ("not UTF-8", lambda s: b"\xff\xfe" + s, "not UTF-8"),
    ("a UTF-8 byte order mark", lambda s: b"\xef\xbb\xbf" + s, "byte order mark"),
    ("empty", lambda s: b"", "empty"),
    ("a list", lambda s: b"[]", "a JSON object is expected"),
    ("trailing data", lambda s: s + b"\n", "trailing data after the statement"),
    ("not JSON", lambda s: b"{not json", "not JSON"),
]  # fmt: skip


@pytest.mark.parametrize(("how", "change", "rule"), HOSTILE, ids=[h for h, _, _ in HOSTILE])
def test_anything_not_a_statement_is_not_valid_naming_the_rule(
    module_api: Api, genuine: bytes, how: str, change: Any, rule: str
) -> None:
    before = rows_everywhere(module_api.engine)
    result = verify(module_api, change(genuine))
    assert result["valid"] is False
    assert any(rule in problem for problem in result["problems"]), result["problems"]
    assert rows_everywhere(module_api.engine) == before


@pytest.fixture
def small_limit_api(settings: Settings, engine: Engine, pool_toml: Path) -> Iterator[Api]:
    yield from open_api(
        settings.model_copy(update={"max_statement_bytes": 4096}), engine, pool_toml
    )


def test_a_body_over_the_limit_is_413_naming_it(small_limit_api: Api) -> None:
    said = small_limit_api.post(None, VERIFY, content=b"{" + b" " * 4096 + b"}")
    assert said.status_code == 413
    assert "4096" in said.json()["detail"] or "4,096" in said.json()["detail"]
    assert said.json()["field"] == "body"

    def chunks() -> Iterator[bytes]:  # no Content-Length: read as it comes
        for _ in range(1000):
            yield b" " * 1024

    said = small_limit_api.post(None, VERIFY, content=chunks())
    assert said.status_code == 413
    assert said.json()["field"] == "body"
    # Under it: read and answered.
    assert small_limit_api.post(None, VERIFY, content=b"[]").json()["valid"] is False


def test_the_default_limit_holds_a_large_real_statement() -> None:
    # A statement of 100,000 jobs is 38.0 MB (gpupool bench ledger); the limit holds it.
    assert 38_044_080 < Settings().max_statement_bytes < 64 * 1024 * 1024


PERIODS_REFUSED = [
    "2026-03\n",  # `$` matched before a final newline; the answer's header then broke
    "2026-Q1\n",
    "\uff12\uff10\uff12\uff16-03",  # fullwidth digits: \d took them, int() read them
    "\u0662\u0660\u0662\u0666",  # Arabic-Indic digits
]


@pytest.mark.parametrize("period", PERIODS_REFUSED)
def test_a_period_with_a_newline_or_non_ascii_digits_is_refused(
    module_api: Api, period: str
) -> None:
    path = f"/projects/p1/statements/{quote(period, safe='')}"
    assert_refusal(module_api.get("alice", path), 422, "period", "is not a period", "ASCII")
    for route in ("/usage", "/ledger"):
        answer = module_api.get("alice", route, params={"period": period})
        assert_refusal(answer, 422, "period", "ASCII")


# --- properties ------------------------------------------------------------------------------

_text = st.text(alphabet=st.characters(codec=None), max_size=20)  # surrogates too
_json_ish = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.sampled_from([10**400, 1e308, -0.0, float("nan"), float("inf")]),
        st.floats(),
        _text,
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_text, inner, max_size=3)),
    max_leaves=12,
)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    document=st.one_of(
        st.binary(max_size=500),
        st.builds(
            lambda value, depth: ("[" * depth + json.dumps(value) + "]" * depth).encode(
                "utf-8", "surrogatepass"
            ),
            _json_ish,
            st.sampled_from([0, 1, 3000]),
        ),
    )
)
def test_whatever_is_sent_is_never_a_server_error_and_nothing_is_stored(
    module_api: Api, document: bytes
) -> None:
    before = rows_everywhere(module_api.engine)
    answer = module_api.post(None, VERIFY, content=document)
    assert answer.status_code < 500, answer.text
    if answer.status_code == 200:
        assert answer.json()["valid"] is False and answer.json()["problems"]
    assert rows_everywhere(module_api.engine) == before


def test_verifications_past_the_servers_count_are_a_503_with_retry_after(api: Api) -> None:
    """Each verification holds up to 8 times its statement in memory: a server runs
    GPUPOOL_MAX_VERIFICATIONS at once, and one more waits, then is told to come back."""
    api.pool.verifications = Slots(1, wait_s=0.05, what="statement verifications")
    with api.pool.verifications.held():
        busy = api.post(None, "/statements/verify", content=b"{}")
    assert busy.status_code == 503, busy.text
    assert busy.headers["Retry-After"] == "1"
    assert "statement verifications are running already" in busy.json()["detail"]
    after = api.post(None, "/statements/verify", content=b"{}")
    assert after.status_code == 200 and after.json()["valid"] is False
