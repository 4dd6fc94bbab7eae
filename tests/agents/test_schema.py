"""The report schema the agents and the server share (agents/schema.py): every number is
bounded by what hardware reports and what the server's columns hold, every text is storable,
and whatever else comes is refused naming the field."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agents.schema import (
    MAX_ATTEMPT,
    MAX_COUNTER,
    MAX_GPU_INDEX,
    MAX_MEMORY_BYTES,
    MAX_PID,
    MAX_POWER_W,
    MAX_SEQ,
    MAX_TEMP_C,
    MAX_TEXT,
    MAX_TIME_S,
    MAX_UUID,
    MAX_XID,
    MIN_TEMP_C,
    ReportBatch,
)

AT = 1_700_000_000.0
GPU = ("reports", 0, "gpus", 0)
PROCESS = (*GPU, "processes", 0)
XID = (*GPU, "xids", 0)

# Every number of a report: where it is, and its bounds (both included).
NUMBERS: dict[tuple[str | int, ...], tuple[float, float]] = {
    ("reports", 0, "seq"): (1, MAX_SEQ),
    ("reports", 0, "at"): (0, MAX_TIME_S),
    (*GPU, "index"): (0, MAX_GPU_INDEX),
    (*GPU, "util_gpu_pct"): (0, 100),
    (*GPU, "util_mem_pct"): (0, 100),
    (*GPU, "mem_used_bytes"): (0, MAX_MEMORY_BYTES),
    (*GPU, "mem_total_bytes"): (0, MAX_MEMORY_BYTES),
    (*GPU, "power_w"): (0, MAX_POWER_W),
    (*GPU, "energy_mj"): (0, MAX_COUNTER),
    (*GPU, "temp_c"): (MIN_TEMP_C, MAX_TEMP_C),
    (*GPU, "ecc_corrected"): (0, MAX_COUNTER),
    (*GPU, "ecc_uncorrected"): (0, MAX_COUNTER),
    (*XID, "xid"): (0, MAX_XID),
    (*XID, "at"): (0, MAX_TIME_S),
    (*PROCESS, "pid"): (0, MAX_PID),
    (*PROCESS, "used_memory_bytes"): (0, MAX_MEMORY_BYTES),
    (*PROCESS, "attempt"): (0, MAX_ATTEMPT),
}
INTEGERS = {path for path in NUMBERS if path[-1] not in ("at", "util_gpu_pct", "util_mem_pct")}
INTEGERS -= {(*GPU, "power_w"), (*GPU, "temp_c")}
# Every text, and its longest.
TEXTS: dict[tuple[str | int, ...], int] = {
    ("reports", 0, "driver_version"): MAX_TEXT,
    (*GPU, "uuid"): MAX_UUID,
    (*GPU, "name"): MAX_TEXT,
    (*GPU, "mig_parent_uuid"): MAX_UUID,
    (*PROCESS, "note"): MAX_TEXT,
}


def good_batch() -> dict[str, Any]:
    process = {"pid": 4242, "used_memory_bytes": 2**30, "job_id": "17", "attempt": 1, "note": ""}
    gpu = {
        "index": 0,
        "uuid": "GPU-0",
        "name": "NVIDIA H100 80GB HBM3",
        "mig_parent_uuid": "GPU-parent",
        "util_gpu_pct": 50.0,
        "util_mem_pct": 10.0,
        "mem_used_bytes": 2**33,
        "mem_total_bytes": 80 * 2**30,
        "power_w": 300.0,
        "energy_mj": 10**9,
        "temp_c": 60.0,
        "ecc_corrected": 0,
        "ecc_uncorrected": 0,
        "xids": [{"xid": 13, "at": AT}],
        "processes": [process],
        "errors": {"temp_c": "fine"},
    }
    report = {"boot": "00c0ffee", "seq": 1, "at": AT, "driver_version": "555.42", "gpus": [gpu]}
    return {"node": "h-0", "reports": [report]}


def with_value(path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    batch = good_batch()
    here: Any = batch
    for part in path[:-1]:
        here = here[part]
    here[path[-1]] = value
    return batch


def refused_at(batch: dict[str, Any], path: tuple[str | int, ...]) -> None:
    """Refused, by Python's validation and by the JSON parser's the server uses, with an
    error at `path`."""
    with pytest.raises(ValidationError) as python:
        ReportBatch.model_validate(batch)
    assert path in [error["loc"] for error in python.value.errors()], python.value
    try:
        body = json.dumps(batch)
    except (ValueError, RecursionError):  # no JSON can say it
        return
    with pytest.raises(ValidationError) as parsed:
        ReportBatch.model_validate_json(body)
    locs = [error["loc"] for error in parsed.value.errors()]
    # A body the JSON parser refuses as a whole (NaN, a lone surrogate's escape) has no
    # field; the server then names it by Python's validation (web/api/routes/agents.py).
    assert path in locs or locs == [()], parsed.value


def test_a_good_report_is_taken() -> None:
    ReportBatch.model_validate(good_batch())
    ReportBatch.model_validate_json(json.dumps(good_batch()))


@pytest.mark.parametrize("path", sorted(NUMBERS, key=str))
def test_each_numbers_bounds_are_taken_and_a_step_past_is_refused(
    path: tuple[str | int, ...],
) -> None:
    low, high = NUMBERS[path]
    whole = path in INTEGERS
    for value in (low, high):
        ReportBatch.model_validate(with_value(path, int(value) if whole else float(value)))
    step = 1 if whole else 1e-6 * max(1.0, abs(high))
    for value in (low - step, high + step):
        refused_at(with_value(path, int(value) if whole else value), path)


HOSTILE_NUMBERS = st.one_of(
    st.sampled_from(
        [2**63, 2**64, 2**70, 10**400, -(10**400), 1e308, -1e308, math.inf, -math.inf, math.nan]
    ),
    st.sampled_from([True, False, "5", "1e3", [1], {"n": 1}]),
    st.integers(min_value=2**53),
    st.floats(min_value=1e17),
)


@settings(max_examples=100, deadline=None)
@given(path=st.sampled_from(sorted(NUMBERS, key=str)), value=HOSTILE_NUMBERS)
def test_huge_and_special_numbers_and_other_types_are_refused_naming_the_field(
    path: tuple[str | int, ...], value: object
) -> None:
    refused_at(with_value(path, value), path)


@settings(max_examples=100, deadline=None)
@given(path=st.sampled_from(sorted(NUMBERS, key=str)), value=st.integers())
def test_an_integer_is_taken_exactly_when_it_is_within_the_bounds(
    path: tuple[str | int, ...], value: int
) -> None:
    low, high = NUMBERS[path]
    if low <= value <= high:
        ReportBatch.model_validate(with_value(path, value))
    else:
        refused_at(with_value(path, value), path)


@settings(max_examples=100, deadline=None)
@given(
    path=st.sampled_from(sorted(TEXTS, key=str)),
    text=st.text(alphabet=st.characters(codec=None), max_size=300),
)
def test_any_text_is_taken_only_if_a_database_can_store_and_give_it_back(
    path: tuple[str | int, ...], text: str
) -> None:
    batch = with_value(path, text)
    storable = "\x00" not in text and not any("\ud800" <= c <= "\udfff" for c in text)
    if storable and 1 <= len(text) <= TEXTS[path]:
        taken = ReportBatch.model_validate(batch)
        here: Any = taken
        for part in path:
            here = here[part] if isinstance(part, int) else getattr(here, part)
        assert here == text
        return
    if text == "" and TEXTS[path] == MAX_TEXT:
        ReportBatch.model_validate(batch)  # an empty name or note is allowed
        return
    refused_at(batch, path)


@settings(max_examples=50, deadline=None)
@given(
    path=st.sampled_from(
        sorted([*NUMBERS, *TEXTS, ("reports", 0, "gpus"), (*GPU, "errors")], key=str)
    ),
    depth=st.integers(min_value=1, max_value=3_000),
    inner=st.sampled_from([[], {}, 1, "x"]),
)
def test_deep_nesting_in_any_field_is_refused(
    path: tuple[str | int, ...], depth: int, inner: object
) -> None:
    value: object = inner
    for _ in range(depth):
        value = [value]
    batch = with_value(path, value)
    if path == ("reports", 0, "gpus"):
        path = (*path, 0)  # the list's first item is the one that is no GPU
    elif path == (*GPU, "errors"):
        path = (*path,)
    refused_at(batch, path)


def test_errors_are_text_to_text_only() -> None:
    refused_at(
        with_value((*GPU, "errors"), {"temp_c": {"nested": "no"}}), (*GPU, "errors", "temp_c")
    )
    refused_at(with_value((*GPU, "errors"), {"x": "\x00"}), (*GPU, "errors", "x"))


def test_a_job_id_is_what_the_agent_reads_and_nothing_else() -> None:
    arabic_indic_17 = "\u0661\u0667"  # str.isdigit() and int() take these
    for job_id in ("17\n", arabic_indic_17, "a b", "x" * 33, ""):
        refused_at(with_value((*PROCESS, "job_id"), job_id), (*PROCESS, "job_id"))
