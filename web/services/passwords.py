"""What makes a new portal password too weak: its length, a repeated piece, a keyboard or
alphabet run, the user's own name, or a place among the most common passwords (the list
beside this file, with digits or symbols added at the end counting as the same password).

The rules say why a password is refused (a Weakness); the API says it in English, the
portal in the page's language (web/portal/views/account.py).
"""

from __future__ import annotations

import enum
import functools
import itertools
from pathlib import Path

MIN_LENGTH = 10
MAX_LENGTH = 200
COMMON_LIST = Path(__file__).with_name("common_passwords.txt")
_HEADER_LINES = 3  # where the list says what it is ("#1bitch" further down is a password)
# A common password with up to this many digits or symbols added at the end is no better.
_SUFFIX_CHARACTERS = "0123456789!@#$%^&*()-_=+.,?~ "
_MIN_COMMON_BASE = 4  # shorter bases ("abc" + digits) are judged by the other rules
_MIN_NAME_LENGTH = 3  # shorter user names are too likely inside any password
# Runs people type: keyboard rows and the alphabet, either way.
_RUNS = (
    "`1234567890-=",
    "qwertyuiop[]\\",
    "asdfghjkl;'",
    "zxcvbnm,./",
    "abcdefghijklmnopqrstuvwxyz",
    "01234567890123456789",
)


class Weakness(enum.StrEnum):
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    NOT_TEXT = "not_text"
    REPEATS = "repeats"
    RUN = "run"
    HAS_NAME = "has_name"
    COMMON = "common"


ENGLISH = {
    Weakness.TOO_SHORT: f"at least {MIN_LENGTH} characters",
    Weakness.TOO_LONG: f"at most {MAX_LENGTH} characters",
    Weakness.NOT_TEXT: "only valid Unicode text (no lone surrogates or NUL characters)",
    Weakness.REPEATS: "not one character or one short piece repeated",
    Weakness.RUN: "not a run of keys or letters (like 'abcdefghij' or 'qwertyuiop')",
    Weakness.HAS_NAME: "not containing your user name",
    Weakness.COMMON: "not one of the most common passwords (nor one with digits added)",
}


def weakness(password: str, user_name: str = "") -> Weakness | None:
    """Why `password` is refused for `user_name`; None if it is not."""
    if len(password) < MIN_LENGTH:
        return Weakness.TOO_SHORT
    if len(password) > MAX_LENGTH:
        return Weakness.TOO_LONG
    if "\x00" in password or any("\ud800" <= c <= "\udfff" for c in password):
        return Weakness.NOT_TEXT
    folded = password.casefold()
    if _repeats(folded):
        return Weakness.REPEATS
    if _is_run(folded):
        return Weakness.RUN
    name = user_name.casefold()
    if len(name) >= _MIN_NAME_LENGTH and name in folded:
        return Weakness.HAS_NAME
    if _is_common(folded):
        return Weakness.COMMON
    return None


def _repeats(text: str) -> bool:
    """One piece, at most half the length, over and over ('aaaaaaaaaa', 'abcabcabca')."""
    return any(
        all(text[i] == text[i % period] for i in range(len(text)))
        for period in range(1, len(text) // 2 + 1)
    )


def _is_run(text: str) -> bool:
    """Consecutive keys or letters, forwards or backwards, or characters one or two code
    points apart all the way ('acegikmoqs')."""
    for run in _RUNS:
        if text in run or text in run[::-1]:
            return True
    steps = {ord(b) - ord(a) for a, b in itertools.pairwise(text)}
    return len(steps) == 1 and abs(next(iter(steps))) <= 2


def _is_common(text: str) -> bool:
    common = common_passwords()
    if text in common:
        return True
    base = text.rstrip(_SUFFIX_CHARACTERS)
    return len(base) >= _MIN_COMMON_BASE and base in common


@functools.cache
def common_passwords() -> frozenset[str]:
    lines = COMMON_LIST.read_text(encoding="utf-8").splitlines()
    return frozenset(lines[_HEADER_LINES:]) - {""}
