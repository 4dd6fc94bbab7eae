"""Numbers, dates, durations and sizes as each language writes them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from web.portal.i18n import NOTHING, UNREADABLE, Formats

MOMENT = datetime(2026, 3, 1, 0, 30, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("language", "value", "digits", "shown"),
    [
        ("en", 1234567.891, 1, "1,234,567.9"),
        ("ko", 1234567.891, 1, "1,234,567.9"),
        ("en", 3, 0, "3"),
        ("en", 0.049, 2, "0.05"),
        ("en", -12.5, 0, "-12"),  # half to even, as Babel rounds
        ("en", None, 0, NOTHING),
    ],
)
def test_numbers(language: str, value: float | None, digits: int, shown: str) -> None:
    assert Formats(language, "Asia/Seoul").number(value, digits) == shown


@pytest.mark.parametrize(
    ("language", "seconds", "shown"),
    [
        ("en", 45, "45 s"),
        ("en", 125, "2 min 05 s"),
        ("en", 2 * 3600 + 5 * 60, "2 h 05 min"),
        ("en", 3 * 86400 + 7200, "3 d 2 h"),
        ("ko", 2 * 3600 + 5 * 60, "2시간 05분"),
        ("ko", 45, "45초"),
        ("en", None, NOTHING),
    ],
)
def test_durations(language: str, seconds: float | None, shown: str) -> None:
    assert Formats(language, "Asia/Seoul").duration(seconds) == shown


def test_times_are_in_the_pools_time_zone() -> None:
    assert Formats("en", "Asia/Seoul").when(MOMENT) == "2026-03-01 09:30 +0900"
    assert Formats("en", "UTC").when(MOMENT) == "2026-03-01 00:30 UTC"
    assert Formats("en", "UTC").when(None) == NOTHING


def test_sizes() -> None:
    shown = Formats("en", "UTC")
    assert shown.size(512) == "512 B"
    assert shown.size(80 * 1024**3) == "80.0 GiB"
    assert shown.size(None) == NOTHING


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_stored_value_no_number_can_show_is_unreadable_not_an_error(value: float) -> None:
    formats = Formats("en", "UTC")
    assert formats.number(value) == UNREADABLE
    assert formats.duration(value) == UNREADABLE
    assert formats.size(value) == UNREADABLE  # type: ignore[arg-type]
    assert formats.when(value) == UNREADABLE


@pytest.mark.parametrize("moment", [1e308, -1e308, 2.6e11, 10**30])
def test_a_time_past_what_a_date_holds_is_unreadable_not_an_error(moment: float) -> None:
    assert Formats("ko", "Asia/Seoul").when(moment) == UNREADABLE
