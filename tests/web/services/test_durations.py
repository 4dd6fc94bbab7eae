"""Time limits as people write them (sbatch's --time and the usual units)."""

from __future__ import annotations

import pytest

from web.services.durations import format_duration, parse_duration
from web.services.errors import Invalid

MINUTE, HOUR, DAY = 60, 3600, 86400

GOOD = [
    # text, seconds, why
    ("90", 90 * MINUTE, "a bare number is minutes, as sbatch"),
    ("1.5", 90, "minutes, fractional"),
    ("90s", 90, "seconds"),
    ("10sec", 10, "seconds, long unit"),
    ("30m", 30 * MINUTE, "minutes"),
    ("45min", 45 * MINUTE, "minutes, long unit"),
    ("90 m", 90 * MINUTE, "a space before the unit"),
    ("2h", 2 * HOUR, "hours"),
    ("1.5h", 90 * MINUTE, "hours, fractional"),
    ("3hr", 3 * HOUR, "hours, long unit"),
    ("1d", DAY, "days"),
    ("1day", DAY, "days, long unit"),
    ("3days", 3 * DAY, "days, plural"),
    (" 2H ", 2 * HOUR, "case and surrounding blanks do not matter"),
    ("1:30", 90, "m:s"),
    ("0:45", 45, "m:s under a minute"),
    ("1:30:00", 90 * MINUTE, "h:m:s"),
    ("100:00:00", 100 * HOUR, "h:m:s over a day"),
    ("2-12:00:00", 2 * DAY + 12 * HOUR, "d-h:m:s"),
    ("2-3", 2 * DAY + 3 * HOUR, "d-h"),
    ("2-3:30", 2 * DAY + 3 * HOUR + 30 * MINUTE, "d-h:m"),
    ("0-0:0:1", 1, "one second, the Slurm way"),
    ("366d", 366 * DAY, "the longest: a leap year"),
    ("366-00:00:00", 366 * DAY, "the longest, the Slurm way"),
    ("8784:00:00", 366 * DAY, "the longest, in hours"),
]

BAD = [
    # text, what the message says, why
    ("", "is not a duration", "empty"),
    ("   ", "is not a duration", "blank"),
    ("soon", "is not a duration", "words"),
    ("h", "is not a duration", "a unit alone"),
    ("2w", "is not a duration", "weeks are not a unit"),
    ("1h30m", "is not a duration", "compound units"),
    ("-5", "is not a duration", "negative minutes"),
    ("-1d", "is not a duration", "negative days"),
    ("1e3", "is not a duration", "exponent notation"),
    ("1:2:3:4", "is not a duration", "four clock parts"),
    ("1:", "is not a duration", "a clock with an empty part"),
    (":30", "is not a duration", "a clock with an empty first part"),
    ("2-", "is not a duration", "days with no hours"),
    ("-3", "is not a duration", "hours with no days"),
    ("2-1:2:3:4", "is not a duration", "days and four clock parts"),
    ("1.5:30", "is not a duration", "a fraction in a clock"),
    ("0", "at least 1 s", "zero minutes"),
    ("0s", "at least 1 s", "zero seconds"),
    ("0:00", "at least 1 s", "a zero clock"),
    ("0-00:00:00", "at least 1 s", "a zero Slurm time"),
    ("367d", "at most 366 days", "over a year"),
    ("366-00:00:01", "at most 366 days", "a second over a year"),
    ("527041", "at most 366 days", "over a year, in minutes"),
    ("9" * 400, "at most 366 days", "a number with no end"),
    ("99999999999:00:00", "at most 366 days", "a clock with no end"),
]


@pytest.mark.parametrize(("text", "seconds"), [pytest.param(t, s, id=w) for t, s, w in GOOD])
def test_durations_that_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("text", "says"), [pytest.param(t, s, id=w) for t, s, w in BAD])
def test_durations_that_do_not_parse_name_the_field_and_the_allowed_forms(
    text: str, says: str
) -> None:
    with pytest.raises(Invalid) as refused:
        parse_duration(text)
    assert refused.value.field == "time"
    assert says in refused.value.message
    if says == "is not a duration":
        assert repr(text) in refused.value.message
        for form in ("90s", "30m", "2h", "1d", "1:30:00", "2-12:00:00", "minutes"):
            assert form in refused.value.message


def test_the_field_named_is_the_callers() -> None:
    with pytest.raises(Invalid) as refused:
        parse_duration("later", field="max_runtime")
    assert refused.value.field == "max_runtime"
    assert str(refused.value).startswith("max_runtime: ")


@pytest.mark.parametrize("text", ["1:²", "²-1", "1:30:³"])
def test_unicode_digits_are_refused_as_invalid(text: str) -> None:
    with pytest.raises(Invalid):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (90, "00:01:30"),
        (2 * HOUR, "02:00:00"),
        (2 * DAY + 12 * HOUR, "2-12:00:00"),
        (59.6, "00:01:00"),
    ],
    ids=["seconds", "hours", "days", "rounded"],
)
def test_format_duration_writes_what_parse_reads(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == round(seconds)
