"""Hypothesis strategies for what an attacker sends: any Unicode (lone surrogates often, not
once in a thousand characters as `st.characters()` gives them), huge and special numbers,
and JSON nested deeper than anything reads. Values come as JSON text fragments, so a body
can hold what `json.dumps` would refuse to write (NaN, a 400-digit number, 5,000 levels)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

SURROGATES = st.characters(categories=["Cs"])
CONTROLS = st.characters(categories=["Cc", "Cf", "Zl", "Zp"])
ANY_CHARACTER = st.characters(codec=None)

hostile_text = st.text(
    alphabet=st.one_of(ANY_CHARACTER, SURROGATES, CONTROLS, st.just("\x00")), max_size=80
)
huge_text = st.builds(
    lambda c, n: c * n,
    st.sampled_from(["a", "é", "\ud800", "\x1b", "語"]),
    st.integers(10_000, 200_000),
)

SPECIAL_NUMBERS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e308",
    "-1e308",
    "1e309",  # past a double: Python reads it as inf
    "5e-324",
    "-0",
    "-0.0",
    str(2**31),
    str(2**63),
    str(2**64),
    str(-(2**63) - 1),
    str(2**70),
    "9" * 400,  # past Python's digit limit for int(str) when it is 4,300 or more
    "1" + "0" * 5000,
]
hostile_number = st.one_of(
    st.sampled_from(SPECIAL_NUMBERS),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)


def _nested(depth: int, opener: str) -> str:
    if opener == "[":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


deep_json = st.builds(_nested, st.integers(33, 5_000), st.sampled_from(["[", "{"]))


def fragment_of(value: Any) -> str:
    """A JSON value as text, lone surrogates as \\u escapes (as an attacker would send them)."""
    return json.dumps(value)


hostile_fragment = st.one_of(
    hostile_text.map(fragment_of),
    huge_text.map(fragment_of),
    hostile_number,
    deep_json,
    st.sampled_from(["true", "false", "null", "[]", "{}", '""']),
    st.lists(hostile_text, max_size=3).map(fragment_of),
    st.dictionaries(hostile_text, hostile_text, max_size=3).map(fragment_of),
)


def body_with(base: dict[str, Any], field: str, fragment: str) -> str:
    """`base` as JSON text with `field` set to the raw JSON `fragment`."""
    marker = "__HOSTILE_VALUE__"
    text = json.dumps(base | {field: marker})
    return text.replace(json.dumps(marker), fragment, 1)
