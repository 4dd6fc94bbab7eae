"""Traces: the generic CSV format every trace is converted to, and the Philly converter.

Generic format (one header line, then one job a row):

    submit_s,project,gpus,flavor,duration_s,max_runtime_s,user

`submit_s` is seconds from the trace's start; `flavor` may be `*` (any flavor);
`max_runtime_s` and `user` may be empty. Rows need not be sorted.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from scheduler.core import ANY_FLAVOR
from scheduler.sim.errors import InputError

GENERIC_COLUMNS = ("submit_s", "project", "gpus", "flavor", "duration_s", "max_runtime_s", "user")
PHILLY_COLUMNS = ("timestamp", "duration", "num_gpus", "gpu_time", "cluster")


@dataclass(frozen=True, slots=True)
class TraceJob:
    id: str
    submit_s: float
    project: str
    gpus: int
    flavor: str
    duration_s: float
    max_runtime_s: float | None = None
    user: str = ""
    line: int = 0  # in the trace file, for error messages


class _Row:
    """Field access that turns a bad value into an InputError naming file, line, field."""

    def __init__(self, path: Path, line: int, values: dict[str, str]) -> None:
        self.path, self.line, self.values = path, line, values

    def fail(self, field: str, message: str) -> InputError:
        return InputError(self.path, message, self.line, field)

    def text(self, field: str, *, required: bool = True) -> str:
        value = (self.values.get(field) or "").strip()
        if required and not value:
            raise self.fail(field, "is empty")
        return value

    def number(self, field: str, *, positive: bool = False, required: bool = True) -> float | None:
        raw = self.text(field, required=required)
        if not raw:
            return None
        try:
            value = float(raw)
        except ValueError:
            raise self.fail(field, f"must be a number, got {raw!r}") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            allowed = "a positive number" if positive else "a number >= 0"
            raise self.fail(field, f"must be {allowed}, got {raw!r}")
        return value

    def count(self, field: str) -> int:
        raw = self.text(field)
        try:
            value = int(float(raw)) if float(raw).is_integer() else None
        except ValueError:
            value = None
        if value is None or value <= 0:
            raise self.fail(field, f"must be a whole number of GPUs >= 1, got {raw!r}")
        return value


def _rows(path: Path, expected: tuple[str, ...]) -> Iterator[_Row]:
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as err:
        raise InputError(path, f"cannot read the trace: {err.strerror}") from None
    with handle:
        reader = csv.DictReader(handle)
        header = tuple(reader.fieldnames or ())
        missing = [c for c in expected if c not in header]
        if missing:
            raise InputError(
                path,
                f"missing column(s) {', '.join(missing)}; expected header "
                f"{','.join(expected)}, got {','.join(header) or 'nothing'}",
                line=1,
            )
        for values in reader:
            if None in values:  # more cells than header columns
                raise InputError(path, "more cells than the header has columns", reader.line_num)
            yield _Row(path, reader.line_num, values)


def detect_format(path: Path) -> str:
    try:
        with path.open(encoding="utf-8") as handle:
            header = handle.readline().strip().split(",")
    except OSError as err:
        raise InputError(path, f"cannot read the trace: {err.strerror}") from None
    if set(PHILLY_COLUMNS) <= set(header):
        return "philly"
    return "generic"


def load_trace(path: Path | str, default_flavor: str = ANY_FLAVOR) -> list[TraceJob]:
    """Load a generic or Philly trace (told apart by its header), sorted by submit time."""
    path = Path(path)
    if detect_format(path) == "philly":
        return load_philly(path, default_flavor)
    return load_generic(path)


def load_generic(path: Path) -> list[TraceJob]:
    jobs = []
    for row in _rows(path, GENERIC_COLUMNS):
        submit = row.number("submit_s")
        duration = row.number("duration_s", positive=True)
        max_runtime = row.number("max_runtime_s", positive=True, required=False)
        assert submit is not None and duration is not None
        jobs.append(
            TraceJob(
                id=f"t{row.line - 1}",
                submit_s=submit,
                project=row.text("project"),
                gpus=row.count("gpus"),
                flavor=row.text("flavor"),
                duration_s=duration,
                max_runtime_s=max_runtime,
                user=row.text("user", required=False),
                line=row.line,
            )
        )
    return _sorted(jobs, path)


def load_philly(path: Path, flavor: str) -> list[TraceJob]:
    """Philly (Pollux/Sia preprocessing): wall-clock timestamps, virtual clusters as projects."""
    parsed = []
    for row in _rows(path, PHILLY_COLUMNS):
        stamp = row.text("timestamp")
        try:
            when = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
        except ValueError:
            raise row.fail(
                "timestamp", f"must look like 2017-10-09 07:01:55, got {stamp!r}"
            ) from None
        duration = row.number("duration", positive=True)
        assert duration is not None
        parsed.append((when, row.line, row.text("cluster"), row.count("num_gpus"), duration))
    if not parsed:
        raise InputError(path, "the trace has no jobs")
    start = min(p[0] for p in parsed)
    jobs = [
        TraceJob(f"t{line - 1}", when - start, cluster, gpus, flavor, duration, line=line)
        for when, line, cluster, gpus, duration in parsed
    ]
    return _sorted(jobs, path)


def _sorted(jobs: list[TraceJob], path: Path) -> list[TraceJob]:
    if not jobs:
        raise InputError(path, "the trace has no jobs")
    jobs.sort(key=lambda j: (j.submit_s, j.id))
    return jobs


def write_generic(jobs: list[TraceJob], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(GENERIC_COLUMNS)
        for j in jobs:
            writer.writerow(
                [
                    f"{j.submit_s:g}",
                    j.project,
                    j.gpus,
                    j.flavor,
                    f"{j.duration_s:g}",
                    "" if j.max_runtime_s is None else f"{j.max_runtime_s:g}",
                    j.user,
                ]
            )
