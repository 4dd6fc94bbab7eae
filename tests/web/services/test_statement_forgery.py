"""The statement forgery suite (SQLite and PostgreSQL): a real statement is built from a real
ledger and signed; then every way to change what a reader sees while keeping the signature
(duplicate keys, reordering, whitespace, Unicode escapes, number spellings, byte order
marks, trailing data, comments, NaN, huge numbers, lone surrogates, deep nesting) must be
NOT VALID naming the rule it breaks, and the genuine bytes VALID. The signature covers the
exact bytes of the canonical JSON: a document whose bytes differ is not the signed one.

Then properties: arbitrary bytes, arbitrary JSON-ish text and arbitrary edits of the genuine
bytes never make the verifier raise, and every document that is not byte for byte the
signed one is NOT VALID with a reason."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from tests.conftest import ManualClock
from tests.scheduler.runtime.conftest import PoolRows
from web.db import read_session, write_session
from web.models import Project, Role
from web.services import ledger, signing
from web.services.auth import Principal
from web.services.statements import MAX_DEPTH, build_statement, verify_statement

JUNE = datetime(2026, 6, 15, tzinfo=UTC).timestamp()
TITLE = 'Étude 연구 "quoted"'  # non-ASCII and a quote: the canonical form writes é, 연 raw
NOTE = 'grant for Q2 \t"연구비"\\ é'  # a tab and a backslash: escaped as \t and \\


@dataclass(frozen=True)
class Genuine:
    json: bytes  # the signed form, as the pool hands it out
    key: signing.Ed25519PublicKey
    engine: Engine

    @property
    def text(self) -> str:
        return self.json.decode()


@pytest.fixture(scope="module")
def genuine(module_engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Genuine:
    """Project "a" in June 2026: a grant with a note, two users' charges (one borrowed, one
    idle) and a refund; signed with a fresh pool key."""
    rows = PoolRows(module_engine, ManualClock())
    rows.pool(nodes=1)
    rows.project("a")
    with write_session(module_engine) as s:
        project = s.get(Project, "a")
        assert project is not None
        project.title = TITLE
        charge = {"at": JUNE, "kind": "charge", "project": "a", "period": "2026-06",
                  "attempt": 1, "flavor": "H100", "energy_j": 900000.0}  # fmt: skip
        ledger.append(
            s,
            [
                {"at": JUNE - 86400, "kind": "grant", "project": "a", "amount": 500.0,
                 "note": NOTE, "actor": "admin"},
                charge | {"job_id": 1, "user": "a-user", "amount": -2.0, "gpu_s": 7200.0,
                          "util_gpu_s": 7200.0, "busy_gpu_s": 3600.0, "idle_gpu_s": 1800.0},
                charge | {"job_id": 2, "user": "bob", "amount": -0.5, "gpu_s": 3600.0,
                          "borrowed": True, "util_gpu_s": 3600.0, "busy_gpu_s": 3000.0},
                charge | {"job_id": 2, "user": "bob", "kind": "refund", "amount": 0.25,
                          "gpu_s": 0.0, "energy_j": 0.0},
            ],
        )  # fmt: skip
    key = signing.pool_key(tmp_path_factory.mktemp("key") / "key.pem")
    with read_session(module_engine) as s:
        signed = build_statement(s, Principal("auditor", Role.ADMIN), "a", "2026-06", key, JUNE)
    return Genuine(signed.json, key.public_key(), module_engine)


def problems_of(genuine: Genuine, document: bytes | str) -> list[str]:
    return verify_statement(document, genuine.key).problems


def test_the_genuine_bytes_are_valid_offline_and_against_the_ledger(genuine: Genuine) -> None:
    assert verify_statement(genuine.json, genuine.key).problems == []
    with read_session(genuine.engine) as s:
        assert verify_statement(genuine.json, genuine.key, ledger.stream(s)).problems == []
    assert "é" in genuine.text and "연구" in genuine.text and "\\t" in genuine.text


# --- the forgeries ---------------------------------------------------------------------------


def first_member(text: str, member: str) -> str:
    """`member` ("key":value) placed before every genuine member of the top object."""
    return "{" + member + "," + text[1:]


def replace_once(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def swap_members(text: str, first: str, second: str) -> str:
    """The two adjacent members of the top object, `first` then `second`, the other way."""
    statement = json.loads(text)
    a = f'"{first}":' + json.dumps(statement[first], separators=(",", ":"), ensure_ascii=False)
    b = f'"{second}":' + json.dumps(statement[second], separators=(",", ":"), ensure_ascii=False)
    return replace_once(text, f"{a},{b}", f"{b},{a}")


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


Forgery = Callable[[str], str | bytes]
FORGERIES: list[tuple[str, Forgery, str]] = [
    # (what is done, how, what the verifier must name)
    # Duplicate keys: a reader (and most JSON tools) see the first, a last-wins parser the
    # genuine one the signature covers.
    (
        "a forged credits before the genuine one",
        lambda t: first_member(t, '"credits":{"granted":999999.0,"used":0.0}'),
        "duplicate key 'credits' at $",
    ),
    (
        "a forged project before the genuine one",
        lambda t: first_member(t, '"project":"someone-else"'),
        "duplicate key 'project' at $",
    ),
    (
        "a forged period before the genuine one",
        lambda t: first_member(t, '"period":"2026"'),
        "duplicate key 'period' at $",
    ),
    (
        "a forged figure inside credits",
        lambda t: replace_once(t, '"credits":{', '"credits":{"granted":999999.0,'),
        "duplicate key 'granted' at $.credits",
    ),
    (
        "a forged user inside totals.by_user",
        lambda t: replace_once(t, '"by_user":{', '"by_user":{"bob":{"credits":0.0},'),
        "duplicate key 'bob' at $.totals.by_user",
    ),
    (
        "a forged job inside a list",
        lambda t: replace_once(t, '"top_jobs":[{', '"top_jobs":[{"user":"nobody",'),
        "duplicate key 'user' at $.idle.top_jobs[0]",
    ),
    (
        "a forged key after the genuine one",
        lambda t: t[:-1] + ',"project":"someone-else"}',
        "duplicate key 'project' at $",
    ),
    # Order and form.
    (
        "two members swapped",
        lambda t: swap_members(t, "credits", "entries"),
        "not in canonical form: keys out of order at $",
    ),
    (
        "the signature moved first",
        lambda t: first_member(t.replace(f',"signature":{sig(t)}', ""), f'"signature":{sig(t)}'),
        "not in canonical form: keys out of order at $",
    ),
    (
        "pretty-printed",
        lambda t: json.dumps(json.loads(t), indent=2, sort_keys=True, ensure_ascii=False),
        "not in canonical form: whitespace",
    ),
    (
        "spaces after separators",
        lambda t: json.dumps(json.loads(t), sort_keys=True, ensure_ascii=False),
        "not in canonical form: whitespace",
    ),
    (
        "ASCII-only (every non-ASCII character escaped)",
        lambda t: json.dumps(json.loads(t), sort_keys=True, separators=(",", ":")),
        "not in canonical form: a \\u escape",
    ),
    (
        "one character escaped",
        lambda t: replace_once(t, "연", "\\uc5f0"),
        "not in canonical form: a \\u escape",
    ),
    (
        "an ASCII letter escaped",
        lambda t: replace_once(t, '"kind":"g', '"kind":"\\u0067'),
        "not in canonical form: a \\u escape",
    ),
    (
        "a slash escaped",
        lambda t: replace_once(t, "usage statement", "usage\\/statement"),
        "not in canonical form",
    ),
    (
        "a tab written as \\u0009",
        lambda t: replace_once(t, "\\t", "\\u0009"),
        "not in canonical form: a \\u escape",
    ),
    ("a newline before the statement", lambda t: "\n" + t, "not in canonical form: whitespace"),
    ("CRLF line ends", lambda t: t.replace(",", ",\r\n"), "not in canonical form: whitespace"),
    # Numbers.
    (
        "1e3 for a number",
        lambda t: replace_once(t, '"granted":500.0', '"granted":5e2'),
        "not in canonical form",
    ),
    (
        "1E3 for a number",
        lambda t: replace_once(t, '"granted":500.0', '"granted":5E2'),
        "not in canonical form",
    ),
    (
        "an integer for a float",
        lambda t: replace_once(t, '"granted":500.0', '"granted":500'),
        "signature does not match",
    ),
    (
        "a float for an integer",
        lambda t: replace_once(t, '"version":1', '"version":1.0'),
        "signature does not match",
    ),
    ("-0 for 0", lambda t: replace_once(t, '"version":1', '"version":-0'), "not in canonical form"),
    (
        "-0.0 for 0.0",
        lambda t: replace_once(t, '"opening":0.0', '"opening":-0.0'),
        "signature does not match",
    ),
    (
        "trailing zeros",
        lambda t: replace_once(t, '"granted":500.0', '"granted":500.000'),
        "not in canonical form",
    ),
    ("a leading +", lambda t: replace_once(t, '"granted":500.0', '"granted":+500.0'), "not JSON"),
    (
        "a leading zero",
        lambda t: replace_once(t, '"granted":500.0', '"granted":0500.0'),
        "not JSON",
    ),
    ("NaN", lambda t: replace_once(t, '"opening":0.0', '"opening":NaN'), "NaN"),
    ("Infinity", lambda t: replace_once(t, '"opening":0.0', '"opening":Infinity'), "Infinity"),
    ("-Infinity", lambda t: replace_once(t, '"opening":0.0', '"opening":-Infinity'), "-Infinity"),
    (
        "a 400-digit integer",
        lambda t: replace_once(t, '"version":1', '"version":' + "9" * 400),
        "out of range",
    ),
    (
        "a 5000-digit integer",
        lambda t: replace_once(t, '"version":1', '"version":' + "9" * 5000),
        "out of range",
    ),
    (
        "a float beyond a double",
        lambda t: replace_once(t, '"opening":0.0', '"opening":1e400'),
        "out of range",
    ),
    (
        "a 400-digit float",
        lambda t: replace_once(t, '"opening":0.0', '"opening":' + "9" * 400 + ".0"),
        "out of range",
    ),
    # Encodings.
    ("a UTF-8 byte order mark", lambda t: b"\xef\xbb\xbf" + t.encode(), "byte order mark"),
    ("UTF-16 with its byte order mark", lambda t: t.encode("utf-16"), "not UTF-8"),
    ("UTF-16 without one", lambda t: t.encode("utf-16-le"), "not UTF-8"),
    ("UTF-32", lambda t: t.encode("utf-32"), "not UTF-8"),
    ("Latin-1", lambda t: t.encode("utf-8").replace("é".encode(), b"\xe9"), "not UTF-8"),
    (
        "an overlong quote",
        lambda t: t.encode().replace(b'"a-user"', b'"a-user\xc0\xa2"'),
        "not UTF-8",
    ),
    ("decomposed é (NFD)", lambda t: replace_once(t, "é", "e\u0301"), "signature does not match"),
    (
        "a lone surrogate",
        lambda t: replace_once(t, '"kind":"g', '"kind":"\\ud800g'),
        "lone surrogate",
    ),
    ("a raw tab in a string", lambda t: replace_once(t, "\\t", "\t"), "not JSON"),
    # Trailing data and comments.
    ("a trailing newline", lambda t: t + "\n", "trailing data after the statement"),
    ("trailing spaces", lambda t: t + "   ", "trailing data after the statement"),
    ("a second JSON value", lambda t: t + t, "trailing data after the statement"),
    ("garbage after", lambda t: t + "garbage", "trailing data after the statement"),
    ("a NUL after", lambda t: t + "\x00", "trailing data after the statement"),
    ("a comment before", lambda t: "/* forged */" + t, "not JSON"),
    (
        "a line comment inside",
        lambda t: replace_once(t, '"credits":{', '"credits":{ // 999999\n'),
        "not JSON",
    ),
    ("a trailing comma", lambda t: t[:-1] + ",}", "not JSON"),
    # Shapes.
    (
        "deep nesting",
        lambda t: replace_once(t, '"version":1', '"version":' + deep(100_000)),
        f"nested deeper than {MAX_DEPTH}",
    ),
    (
        "just past the depth allowed",
        lambda t: replace_once(t, '"version":1', '"version":' + deep(MAX_DEPTH)),
        f"nested deeper than {MAX_DEPTH}",
    ),
    ("nothing", lambda t: "", "empty"),
    ("whitespace only", lambda t: "  \n", "not JSON"),
    ("a list of it", lambda t: "[" + t + "]", "a JSON object is expected"),
    ("a string of it", lambda t: json.dumps(t), "a JSON object is expected"),
    ("null", lambda t: "null", "a JSON object is expected"),
    ("cut short", lambda t: t[:-1], "not JSON"),
]


def sig(text: str) -> str:
    return json.dumps(json.loads(text)["signature"])


@pytest.mark.parametrize(("how", "forge", "rule"), FORGERIES, ids=[how for how, _, _ in FORGERIES])
def test_a_forgery_is_not_valid_naming_the_rule(
    genuine: Genuine, how: str, forge: Forgery, rule: str
) -> None:
    forged = forge(genuine.text)
    document = forged.encode("utf-8", "surrogatepass") if isinstance(forged, str) else forged
    assert document != genuine.json
    problems = problems_of(genuine, document)
    assert problems, f"{how}: verified VALID"
    assert any(rule in problem for problem in problems), (how, problems)
    # The str form (as a caller in Python may pass it) says the same.
    if isinstance(forged, str):
        assert any(rule in p for p in problems_of(genuine, forged)), how


def test_a_duplicate_key_forgery_verifies_against_the_ledger_as_not_valid(
    genuine: Genuine,
) -> None:
    forged = first_member(genuine.text, '"credits":{"granted":999999.0}')
    with read_session(genuine.engine) as s:
        found = verify_statement(forged, genuine.key, ledger.stream(s))
    assert not found.valid
    assert found.problems == ["duplicate key 'credits' at $ (a reader may see either value)"]


def test_a_non_canonical_copy_says_where_it_differs(genuine: Genuine) -> None:
    pretty = json.dumps(json.loads(genuine.text), indent=1, sort_keys=True, ensure_ascii=False)
    [problem] = problems_of(genuine, pretty)
    assert problem.startswith("not in canonical form: whitespace at byte 1 ")
    spelled = replace_once(genuine.text, '"granted":500.0', '"granted":5e2')
    [problem] = problems_of(genuine, spelled)
    at = genuine.text.index('"granted":500.0') + len('"granted":')
    assert problem.startswith(f"not in canonical form: at byte {at}, '5e2")
    assert "'500.0" in problem


def test_a_key_with_control_characters_is_named_escaped(genuine: Genuine) -> None:
    forged = replace_once(genuine.text, '"credits":{', '"credits":{"\\u001b[2J":1,"\\u001b[2J":2,')
    [problem] = problems_of(genuine, forged)
    assert problem.startswith("duplicate key '\\x1b[2J' at $.credits")
    assert "\x1b" not in problem


def test_a_huge_string_is_named_briefly(genuine: Genuine) -> None:
    forged = first_member(genuine.text, '"kind":"' + "x" * 1_000_000 + '"')
    [problem] = problems_of(genuine, forged)
    assert len(problem) < 300 and "duplicate key 'kind' at $" in problem
    forged = replace_once(
        genuine.text, '"kind":"gpupool usage statement"', '"kind":"' + "y" * 10**6 + '"'
    )
    problems = problems_of(genuine, forged)
    assert problems and all(len(p) < 300 for p in problems)


def test_arrays_and_objects_packed_closer_than_any_statement_holds_are_refused(
    genuine: Genuine,
) -> None:
    # 8 bytes each: a few MB of these would take many times their size in memory.
    packed = "[" + ",".join(["{}"] * 200_000) + "]"
    forged = replace_once(genuine.text, '"version":1', '"version":' + packed)
    [problem] = problems_of(genuine, forged)
    assert "more arrays and objects than a statement of its size holds" in problem


# --- properties ------------------------------------------------------------------------------

PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY
@given(data=st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise_and_are_not_valid(genuine: Genuine, data: bytes) -> None:
    found = verify_statement(data, genuine.key)
    assert not found.valid and all(isinstance(p, str) and p for p in found.problems)


def _json_ish() -> st.SearchStrategy[Any]:
    text = st.text(alphabet=st.characters(codec=None), max_size=12)  # surrogates too
    numbers = st.one_of(
        st.integers(-(2**70), 2**70),
        st.integers().map(lambda n: n * 10**400),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([10**400, -(10**400), 1e308, -0.0, 2**63, -(2**63) - 1]),
    )
    scalars = st.one_of(st.none(), st.booleans(), numbers, text)
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)
        ),
        max_leaves=20,
    )


def _dumped(value: Any, depth: int, pretty: bool) -> str:
    text = json.dumps(value, indent=1 if pretty else None, ensure_ascii=pretty, allow_nan=True)
    return "[" * depth + text + "]" * depth


@PROPERTY
@given(
    value=_json_ish(),
    depth=st.sampled_from([0, 0, 1, MAX_DEPTH, 5000, 200_000]),
    pretty=st.booleans(),
)
def test_arbitrary_json_ish_text_never_raises_and_is_not_valid(
    genuine: Genuine, value: Any, depth: int, pretty: bool
) -> None:
    text = _dumped(value, depth, pretty)
    for document in (text, text.encode("utf-8", "surrogatepass")):
        found = verify_statement(document, genuine.key)
        assert not found.valid and found.problems


@PROPERTY
@given(value=_json_ish(), where=st.sampled_from(["version", "credits", "project", "new"]))
def test_hostile_values_in_a_statement_never_raise_and_are_not_valid(
    genuine: Genuine, value: Any, where: str
) -> None:
    statement = json.loads(genuine.text)
    statement[where] = value
    text = json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for document in (text, text.encode("utf-8", "surrogatepass"), statement):
        found = verify_statement(document, genuine.key)
        assert not found.valid and found.problems


@PROPERTY
@given(edits=st.lists(st.tuples(st.integers(0, 10**9), st.binary(max_size=3), st.integers(0, 3)),
                      min_size=1, max_size=3))  # fmt: skip
def test_any_edit_of_the_signed_bytes_is_not_valid(
    genuine: Genuine, edits: list[tuple[int, bytes, int]]
) -> None:
    document = bytearray(genuine.json)
    for position, inserted, removed in edits:
        at = position % (len(document) + 1)
        document[at : at + removed] = inserted
    found = verify_statement(bytes(document), genuine.key)
    if bytes(document) == genuine.json:
        assert found.valid
    else:
        assert not found.valid and found.problems, bytes(document)


def test_the_rule_names_have_no_raw_control_characters(genuine: Genuine) -> None:
    forged = replace_once(genuine.text, '"project":"a"', '"project":"a\\u001b]0;x\\u0007"')
    problems = problems_of(genuine, forged)
    assert problems and not any(re.search("[\x00-\x1f\x7f-\x9f]", p) for p in problems)
