"""`gpupool simulate --workload`: generated workloads replayed through the real command, and
bad flags refused with a message that names the flag and what it allows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scheduler.sim.synthetic import FAMILIES
from tests.web.test_cli import REPORT_KEYS, gpupool

REPO = Path(__file__).resolve().parents[3]


def refused(*args: str) -> str:
    done = gpupool("simulate", *args, "--json")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    return " ".join(done.stderr.split())


@pytest.mark.parametrize("name", FAMILIES)
def test_each_family_replays_with_json(name: str) -> None:
    done = gpupool(
        "simulate", "--workload", name, "--load", "0.9", "--seed", "3", "--jobs", "300", "--json"
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # one object and nothing else
    assert set(report) >= REPORT_KEYS
    assert report["policy"] == "gpupool"
    assert report["jobs"] >= 300 and report["completed"] == report["jobs"]


def test_a_workload_on_another_pool_under_another_policy(small_pool: Path) -> None:
    done = gpupool(
        "simulate",
        "--workload",
        "heavy-tail",
        "--pool",
        str(small_pool),
        "--policy",
        "static",
        "--jobs",
        "60",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["policy"] == "static" and report["rejected"] == 0


def test_unknown_workload_lists_the_workloads() -> None:
    message = refused("--workload", "philly")
    assert "unknown workload 'philly'; the workloads are: " + ", ".join(FAMILIES) in message


@pytest.mark.parametrize("load", ["0", "3.5", "-1", "nan", "inf", "1e308"])
def test_load_out_of_range_names_the_flag(load: str) -> None:
    message = refused("--workload", "flood", "--load", load)
    assert "--load must be a number from 0.05 to 3, got" in message


@pytest.mark.parametrize("seed", ["-1", str(2**32), "9" * 400])
def test_seed_out_of_range_names_the_flag(seed: str) -> None:
    message = refused("--workload", "flood", "--seed", seed)
    assert "--seed must be a whole number from 0 to 4294967295, got" in message
    assert "9" * 50 not in message


def test_a_pool_whose_guarantees_exceed_capacity_says_by_how_much(tmp_path: Path) -> None:
    pool = tmp_path / "over.toml"
    text = (REPO / "configs" / "families.toml").read_text()
    pool.write_text(text.replace("guaranteed = 64, limit = 256", "guaranteed = 100, limit = 256"))
    message = refused("--workload", "gangs", "--pool", str(pool))
    assert str(pool) in message
    assert "field 'projects[6].quotas.A100-80GB.guaranteed'" in message
    assert "the A100-80GB guarantees sum to 276 GPUs, 20 more than the pool's 256" in message


def test_trace_or_workload_not_both_nor_neither(small_pool: Path, tmp_path: Path) -> None:
    assert "give either --trace PATH or --workload NAME" in refused("--cluster", str(small_pool))
    trace = tmp_path / "t.csv"
    trace.write_text("submit_s,project,gpus,flavor,duration_s,max_runtime_s,user\n0,a,1,H100,5,,\n")
    both = refused("--trace", str(trace), "--workload", "flood", "--cluster", str(small_pool))
    assert "give either --trace PATH or --workload NAME" in both
    assert "--trace needs --cluster PATH" in refused("--trace", str(trace))


def test_too_few_jobs_for_the_pool_is_said() -> None:
    message = refused("--workload", "flood", "--load", "3", "--jobs", "20")
    assert "cannot offer this load" in message
