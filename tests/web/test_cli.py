"""The `gpupool` command line, run as a user runs it: a real process, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_trace

REPO = Path(__file__).resolve().parents[2]
REPORT_KEYS = {
    "policy",
    "jobs",
    "completed",
    "mean_wait_s",
    "p50_wait_s",
    "p99_wait_s",
    "mean_jct_s",
    "utilization",
    "idle_while_waiting_gpu_h",
    "guarantee_violation_s",
    "jain_fairness",
    "wall_s",
    "mean_slowdown",
    "wait_by_project",
    "est_error_median_s",
    "est_within_25pct",
    "est_within_1h",
    "est_10m_error_median_s",
    "est_10m_within_25pct",
    "est_10m_within_1h",
}


def gpupool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from web.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    rows = [
        f"{i * 11},{'ab'[i % 2]},{[1, 2, 4, 8][i % 4]},H100,{60 + i % 7 * 50},," for i in range(80)
    ]
    return write_trace(tmp_path / "trace.csv", rows)


@pytest.mark.parametrize("policy", ["gpupool", "static", "fifo"])
def test_simulate_json_prints_exactly_one_object(
    small_pool: Path, trace: Path, policy: str
) -> None:
    done = gpupool(
        "simulate",
        "--trace",
        str(trace),
        "--cluster",
        str(small_pool),
        "--policy",
        policy,
        "--json",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # one object and nothing else, or this fails
    assert set(report) >= REPORT_KEYS
    assert report["policy"] == policy and report["jobs"] == report["completed"] == 80


def test_simulate_table(small_pool: Path, trace: Path) -> None:
    done = gpupool("simulate", "--trace", str(trace), "--cluster", str(small_pool))
    assert done.returncode == 0, done.stderr
    assert "mean wait" in done.stdout and "utilization" in done.stdout


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (
            ["0,a,1,H100,10,,", "5,a,zero,H100,10,,"],
            ":3: field 'gpus': must be a whole number of GPUs >= 1, got 'zero'",
        ),
        (["0,a,1,B200,10,,"], ":2: field 'flavor': rejected: unknown flavor 'B200'"),
        (
            ["0,a,64,H100,10,,"],
            ":2: field 'gpus': rejected: 64 GPUs do not fit the pool's 2 H100 nodes",
        ),
        (["0,nobody,1,H100,10,,"], ":2: field 'project': unknown project 'nobody'"),
    ],
)
def test_simulate_bad_trace_is_a_clear_error(
    small_pool: Path, tmp_path: Path, rows: list[str], expected: str
) -> None:
    bad = write_trace(tmp_path / "bad.csv", rows)
    done = gpupool("simulate", "--trace", str(bad), "--cluster", str(small_pool), "--json")
    assert done.returncode == 2
    assert done.stdout == ""
    assert expected in done.stderr.replace("\n", "")
    assert "Traceback" not in done.stderr


def test_simulate_bad_cluster_is_a_clear_error(tmp_path: Path, trace: Path) -> None:
    cluster = tmp_path / "pool.toml"
    cluster.write_text("[[node_groups]]\nflavor = 'H100'\ncount = 'many'\ngpus = 8\n")
    done = gpupool("simulate", "--trace", str(trace), "--cluster", str(cluster))
    assert done.returncode == 2
    assert "field 'node_groups[0].count': must be a whole number >= 1" in done.stderr.replace(
        "\n", ""
    )
    assert "Traceback" not in done.stderr


def test_simulate_unknown_policy_lists_the_choices(small_pool: Path, trace: Path) -> None:
    done = gpupool(
        "simulate", "--trace", str(trace), "--cluster", str(small_pool), "--policy", "sjf"
    )
    assert done.returncode == 2
    assert "gpupool" in done.stderr and "static" in done.stderr and "fifo" in done.stderr
    assert "Traceback" not in done.stderr


def test_bench_cycle_json() -> None:
    done = gpupool(
        "bench",
        "cycle",
        "--nodes",
        "50",
        "--pending",
        "500",
        "--projects",
        "10",
        "--repeats",
        "3",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert {"full_cycle_ms", "incremental_cycle_ms"} <= set(result)
    assert result["nodes"] == 50 and result["pending"] == 500


def test_up_runs_the_demo() -> None:
    done = gpupool("demo", "--jobs", "300")
    assert done.returncode == 0, done.stderr
    for policy in ("gpupool", "static", "fifo"):
        assert policy in done.stdout
