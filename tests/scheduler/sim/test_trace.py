"""Loading traces: the generic format, Philly's, and errors that name file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.sim.errors import InputError
from scheduler.sim.trace import TraceJob, load_generic, load_trace, write_generic
from tests.conftest import write_trace


def test_generic_rows_load_sorted_with_optional_fields(tmp_path: Path) -> None:
    path = write_trace(
        tmp_path / "t.csv",
        ["30,a,4,H100,100,,alice", "10,b,1,*,50,200,"],
    )
    jobs = load_trace(path)
    assert [(j.submit_s, j.project, j.gpus, j.flavor) for j in jobs] == [
        (10.0, "b", 1, "*"),
        (30.0, "a", 4, "H100"),
    ]
    assert jobs[0].max_runtime_s == 200.0 and jobs[0].user == ""
    assert jobs[1].max_runtime_s is None and jobs[1].user == "alice"
    assert jobs[1].line == 2


def test_generic_round_trip(tmp_path: Path) -> None:
    jobs = [
        TraceJob("t1", 0.0, "a", 2, "H100", 60.0, None, "u", 2),
        TraceJob("t2", 5.5, "b", 8, "*", 3600.0, 7200.0, "", 3),
    ]
    write_generic(jobs, tmp_path / "out.csv")
    again = load_generic(tmp_path / "out.csv")
    assert [
        (j.submit_s, j.project, j.gpus, j.flavor, j.duration_s, j.max_runtime_s) for j in again
    ] == [(j.submit_s, j.project, j.gpus, j.flavor, j.duration_s, j.max_runtime_s) for j in jobs]


def test_philly_format_is_recognised_by_its_header(tmp_path: Path) -> None:
    path = tmp_path / "philly.csv"
    path.write_text(
        "timestamp,duration,num_gpus,gpu_time,cluster\n"
        "2017-10-09 07:01:55,66.0,1,66.0,vc1\n"
        "2017-10-09 07:00:00,10.0,8,80.0,vc2\n"
    )
    jobs = load_trace(path, default_flavor="P100")
    assert [(j.submit_s, j.project, j.gpus, j.flavor) for j in jobs] == [
        (0.0, "vc2", 8, "P100"),
        (115.0, "vc1", 1, "P100"),
    ]


@pytest.mark.parametrize(
    ("row", "field", "words"),
    [
        ("x,a,1,H100,10,,", "submit_s", "must be a number"),
        ("-5,a,1,H100,10,,", "submit_s", "must be a number >= 0"),
        ("0,,1,H100,10,,", "project", "is empty"),
        ("0,a,0,H100,10,,", "gpus", "whole number of GPUs >= 1"),
        ("0,a,-2,H100,10,,", "gpus", "whole number of GPUs >= 1"),
        ("0,a,1.5,H100,10,,", "gpus", "whole number of GPUs >= 1"),
        ("0,a,1,,10,,", "flavor", "is empty"),
        ("0,a,1,H100,0,,", "duration_s", "positive number"),
        ("0,a,1,H100,nan,,", "duration_s", "positive number"),
        ("0,a,1,H100,10,-1,", "max_runtime_s", "positive number"),
    ],
    ids=lambda v: v if isinstance(v, str) and "," not in v else None,
)
def test_bad_generic_row_names_file_line_and_field(
    tmp_path: Path, row: str, field: str, words: str
) -> None:
    path = write_trace(tmp_path / "bad.csv", ["0,a,1,H100,10,,", row])
    with pytest.raises(InputError) as caught:
        load_trace(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: field '{field}': ")
    assert words in message
    assert (caught.value.line, caught.value.field) == (3, field)


def test_missing_columns_are_named(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("submit_s,project,gpus\n0,a,1\n")
    with pytest.raises(InputError, match=r"t.csv:1: missing column\(s\) flavor, duration_s"):
        load_trace(path)


def test_extra_cells_are_an_error(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "t.csv", ["0,a,1,H100,10,,,surplus"])
    with pytest.raises(InputError, match=r"t.csv:2: more cells than the header"):
        load_trace(path)


def test_empty_and_missing_traces(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no jobs"):
        load_trace(write_trace(tmp_path / "empty.csv", []))
    with pytest.raises(InputError, match="cannot read the trace"):
        load_trace(tmp_path / "nowhere.csv")


def test_bad_philly_timestamp(tmp_path: Path) -> None:
    path = tmp_path / "philly.csv"
    path.write_text("timestamp,duration,num_gpus,gpu_time,cluster\nyesterday,1,1,1,vc\n")
    with pytest.raises(InputError, match=r"philly.csv:2: field 'timestamp': must look like"):
        load_trace(path)
