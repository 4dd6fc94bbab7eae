"""Time limits as people write them: "90" (minutes, as sbatch), "90s", "30m", "2h", "1d",
"1:30:00", "2-12:00:00" (days-hours:minutes:seconds, as Slurm)."""

from __future__ import annotations

import re

from web.services.errors import Invalid

_UNIT = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d|day|days)?$", re.ASCII)
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}
_UNIT_SECONDS |= {"d": 86400, "day": 86400, "days": 86400}
ALLOWED = "a duration such as 90s, 30m, 2h, 1d, 1:30:00 or 2-12:00:00 (a bare number is minutes)"
# The longest time limit the pool takes: a year (a leap one). Longer ones are mistakes, and
# unbounded ones (1e300 minutes) break the arithmetic of everything that plans with them.
MAX_DURATION_DAYS = 366
MAX_DURATION_S = MAX_DURATION_DAYS * 86400.0


def parse_duration(text: str, field: str = "time") -> float:
    """Seconds in `text`; Invalid naming `field` if it does not parse, is under a second or
    is longer than MAX_DURATION_DAYS."""
    value = text.strip().lower()
    seconds: float | None = None
    match = _UNIT.match(value)
    if match:
        amount, unit = float(match.group(1)), match.group(2)
        seconds = amount * (_UNIT_SECONDS[unit] if unit else 60)
    else:
        seconds = _slurm_clock(value)
    if seconds is None:
        raise Invalid(f"{text!r} is not a duration; give {ALLOWED}", field=field)
    if seconds < 1:  # a limit under a second would end the job as it starts
        raise Invalid(f"must be at least 1 s, got {text!r}", field=field)
    if seconds > MAX_DURATION_S:
        raise Invalid(
            f"at most {MAX_DURATION_DAYS} days ({MAX_DURATION_DAYS}-00:00:00), got {text!r}",
            field=field,
        )
    return seconds


def _slurm_clock(value: str) -> float | None:
    """Slurm's forms: m:s, h:m:s, d-h, d-h:m, d-h:m:s."""
    days, dash, clock = value.partition("-") if "-" in value else ("0", "", value)
    parts = clock.split(":")
    if not days.isdecimal() or not all(p.isdecimal() for p in parts) or len(parts) > 3:
        return None
    numbers = [int(p) for p in parts]
    if dash:  # after "d-" the clock starts with hours
        numbers += [0] * (3 - len(numbers))
    elif len(numbers) == 2:  # m:s
        numbers = [0, *numbers]
    elif len(numbers) != 3:
        return None
    hours, minutes, secs = numbers
    return int(days) * 86400 + hours * 3600 + minutes * 60 + secs


def format_duration(seconds: float) -> str:
    seconds = round(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock
