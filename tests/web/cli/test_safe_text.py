"""printable() and printable_json(): whatever text comes in, what goes out holds nothing a
terminal acts on, encodes as UTF-8, and (for JSON) still reads back as the same data."""

from __future__ import annotations

import json
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from web.cli.safe_text import printable, printable_json

ANY_TEXT = st.text(alphabet=st.characters(codec=None), max_size=60)
BIDI = {
    "\u061c",
    "\u200e",
    "\u200f",
    *map(chr, range(0x202A, 0x202F)),
    *map(chr, range(0x2066, 0x206A)),
}


def acts_on_a_terminal(char: str) -> bool:
    category = unicodedata.category(char)
    return category in ("Cc", "Cs", "Zl", "Zp") or char in BIDI


def test_escapes_are_visible_and_name_the_character() -> None:
    assert printable("job\x1b]0;pwned\x07\x1b[2J") == "job\\x1b]0;pwned\\x07\\x1b[2J"
    assert printable("a\x9b31mb") == "a\\x9b31mb"  # C1 CSI
    assert printable("x\u2028y\u202ez\ud800") == "x\\u2028y\\u202ez\\ud800"
    assert printable("tab\there\nnext\x7f") == "tab\\there\\nnext\\x7f"
    assert printable("line\n\tindented\r\x1b", keep="\n\t") == "line\n\tindented\\r\\x1b"
    assert printable("연구실 H100 — ü 🚀 a\\x1b") == "연구실 H100 — ü 🚀 a\\x1b"


@settings(max_examples=100, deadline=None)
@given(ANY_TEXT)
def test_nothing_a_terminal_acts_on_gets_through(text: str) -> None:
    shown = printable(text)
    assert not any(acts_on_a_terminal(c) for c in shown)
    shown.encode("utf-8")  # no surrogate left
    if not any(acts_on_a_terminal(c) for c in text):
        assert shown == text  # ordinary text, any script, is untouched


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        ANY_TEXT | st.integers() | st.booleans(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
        max_leaves=20,
    )
)
def test_json_stays_the_same_json(data: object) -> None:
    shown = printable_json(data)
    assert not any(acts_on_a_terminal(c) for c in shown if c != "\n")
    shown.encode("utf-8")
    assert json.loads(shown) == data
