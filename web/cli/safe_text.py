"""Text from the server or from a file, made safe to print on a terminal.

Job names, entrypoints, user names, the server's error messages, a statement's fields: any of
them may hold characters a terminal acts on instead of showing (ESC sequences that recolour,
move the cursor, retitle the window or write the clipboard; C1 controls such as CSI; line
separators; bidirectional overrides that reorder what is read) or that cannot be written out
at all (lone surrogates). Each such character is shown as a visible escape instead (ESC as
\\x1b, a newline as \\n, U+2028 as \\u2028), so what is printed is what is there.
Backslashes are left as they are: a name that spells `\\x1b` itself looks the same, but
does nothing.
"""

from __future__ import annotations

import json
import re
from typing import Any

# C0 controls, DEL, C1 controls; the Arabic letter mark, the left-to-right and right-to-left
# marks, the line and paragraph separators, the bidirectional embeddings, overrides and
# isolates; every surrogate (a str holding one cannot be encoded to UTF-8).
_BEYOND_C0 = "\\x7f-\\x9f\\u061c\\u200e\\u200f\\u2028-\\u202e\\u2066-\\u2069\\ud800-\\udfff"
_UNSAFE = re.compile(f"[\\x00-\\x1f{_BEYOND_C0}]")
# json.dumps already writes C0 controls inside strings as escapes (and its own newlines
# between members must stay).
_UNSAFE_IN_JSON = re.compile(f"[{_BEYOND_C0}]")


_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, keep: str = "") -> str:
    """`text` with every control character, line separator, bidirectional control and
    surrogate shown as a visible escape, except the characters in `keep` (e.g. "\\n\\t" for
    output of many lines)."""
    if not keep:
        return _UNSAFE.sub(lambda m: _escape(m.group()), text)
    return _UNSAFE.sub(lambda m: m.group() if m.group() in keep else _escape(m.group()), text)


def printable_json(data: Any) -> str:
    """`data` as indented JSON that is still the same JSON (non-ASCII text as it is) but safe
    on a terminal: what json.dumps leaves raw of the characters above (C1 controls, line
    separators, bidirectional controls, surrogates) is written as a \\uXXXX escape, which
    only ever occurs inside a JSON string, where it means the same character."""
    dumped = json.dumps(data, indent=2, ensure_ascii=False)
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", dumped)
