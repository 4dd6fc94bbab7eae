"""Languages: gettext catalogs read with Babel, the choice by Accept-Language or by the
user, and numbers and dates in the page's language.

The catalogs are the .po files under locale/<lang>/LC_MESSAGES/ (one per part of the
portal, merged at load), compiled in memory when the portal starts: nothing binary is kept
in the tree and there is no build step. English is the source language (the msgids).
"""

from __future__ import annotations

import functools
import io
import math
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.core import Locale
from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import NumberPattern, parse_pattern
from babel.support import NullTranslations, Translations

LANGUAGES = ("en", "ko")
DEFAULT_LANGUAGE = "en"
NOTHING = "\u2013"  # an en dash: no value
# A stored value no date or number can show (a row kept from before a rule got stricter):
# the replacement character, as text no page can show is replaced.
UNREADABLE = "\ufffd"
LOCALE_DIR = Path(__file__).parent / "locale"


@functools.cache
def translations(language: str) -> NullTranslations:
    """The merged catalog of a language (English: none, the msgids are English)."""
    if language == DEFAULT_LANGUAGE:
        return NullTranslations()
    merged: Translations | None = None
    for po in sorted((LOCALE_DIR / language / "LC_MESSAGES").glob("*.po")):
        with po.open("rb") as file:
            catalog = read_po(file, locale=language)
        buffer = io.BytesIO()
        write_mo(buffer, catalog)
        buffer.seek(0)
        part = Translations(buffer)
        if merged is None:
            merged = part
        else:
            merged.merge(part)
    return merged or NullTranslations()


def negotiate(accept_language: str | None) -> str:
    """The best of LANGUAGES for an Accept-Language header ("ko-KR,ko;q=0.9,en;q=0.8")."""
    wanted: list[tuple[float, int, str]] = []
    for place, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        language = tag.strip().lower().split("-")[0]
        if language and quality > 0:
            wanted.append((-quality, place, language))
    for _, _, language in sorted(wanted):
        if language in LANGUAGES:
            return language
    return DEFAULT_LANGUAGE


def language_name(language: str) -> str:
    """A language in its own words: English, 한국어."""
    name: str = Locale.parse(language).get_display_name(language) or language
    return name[:1].upper() + name[1:]


# Parsed once: Babel's format_decimal parses its pattern on every call, and a page of
# nodes shows thousands of numbers.
@functools.cache
def _number_pattern(digits: int) -> NumberPattern:
    return parse_pattern("#,##0" + ("." + "0" * digits if digits else ""))


@functools.cache
def _locale(language: str) -> Locale:
    return Locale.parse(language)


class Formats:
    """Numbers, dates and durations as the page's language writes them."""

    def __init__(self, language: str, timezone: str) -> None:
        self.language = language
        self.locale = _locale(language)
        self.tz = ZoneInfo(timezone)

    def number(self, value: float | int | None, digits: int = 0) -> str:
        if value is None:
            return NOTHING
        if not _finite(value):
            return UNREADABLE
        try:
            shown: str = _number_pattern(digits).apply(value, self.locale)
        except (ArithmeticError, ValueError):  # past Babel's decimal precision: 1e308, 10**400
            return _huge(value)
        return shown

    def when(self, moment: datetime | float | None) -> str:
        if moment is None:
            return NOTHING
        if not isinstance(moment, datetime):
            try:
                moment = datetime.fromtimestamp(moment, UTC)
            except (OverflowError, ValueError, OSError):  # past year 9999, or not finite
                return UNREADABLE
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        shown: str = format_datetime(
            moment, "yyyy-MM-dd HH:mm zzz", tzinfo=self.tz, locale=self.language
        )
        return shown

    def duration(self, seconds: float | None) -> str:
        """2 h 05 min, 45 s: short and the same in both languages' digits."""
        if seconds is None:
            return NOTHING
        if not _finite(seconds):
            return UNREADABLE
        seconds = max(0, int(seconds))
        days, rest = divmod(seconds, 86400)
        hours, rest = divmod(rest, 3600)
        minutes, secs = divmod(rest, 60)
        units = UNITS[self.language]
        if days:
            return f"{days}{units['d']} {hours}{units['h']}"
        if hours:
            return f"{hours}{units['h']} {minutes:02d}{units['min']}"
        if minutes:
            return f"{minutes}{units['min']} {secs:02d}{units['s']}"
        return f"{secs}{units['s']}"

    def size(self, value: int | None) -> str:
        if value is None:
            return NOTHING
        if not _finite(value):
            return UNREADABLE
        try:
            amount = float(value)
        except OverflowError:  # an int past any float: no memory is that large
            return UNREADABLE
        for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
            if amount < 1024 or unit == "TiB":
                return f"{self.number(amount, 0 if unit == 'B' else 1)} {unit}"
            amount /= 1024
        return str(value)


def _huge(value: float | int) -> str:
    """A number too large for the page's pattern, in scientific notation (1e+308): a
    stored value past what any reading can be, shown rather than failing the page."""
    try:
        return f"{float(value):.4g}"
    except OverflowError:
        return UNREADABLE


def _finite(value: float | int) -> bool:
    return isinstance(value, int) or math.isfinite(value)


UNITS = {
    "en": {"d": " d", "h": " h", "min": " min", "s": " s"},
    "ko": {"d": "일", "h": "시간", "min": "분", "s": "초"},
}
