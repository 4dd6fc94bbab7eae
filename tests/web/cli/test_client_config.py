"""The client's pieces that need no server: where the config lives, writing and reading it,
and how jobs are shown."""

from __future__ import annotations

import stat
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer

from web.cli.client import config_path, elapsed, load_config, resolve, save_config
from web.cli.jobs import estimate_of, gpus_of, nodes_of, reason_of, submitted_line


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("GPUPOOL_CONFIG", "GPUPOOL_SERVER", "GPUPOOL_TOKEN", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert config_path() == tmp_path / "home" / ".config" / "gpupool" / "config.toml"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")
    assert config_path() == tmp_path / "home" / ".config" / "gpupool" / "config.toml"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_path() == tmp_path / "xdg" / "gpupool" / "config.toml"
    monkeypatch.setenv("GPUPOOL_CONFIG", str(tmp_path / "elsewhere.toml"))
    assert config_path() == tmp_path / "elsewhere.toml"


def test_save_config_is_owner_only_and_round_trips(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    path = tmp_path / "xdg" / "gpupool" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text("old = 1\n")
    path.chmod(0o644)  # an older, too open file is replaced, not kept open
    odd = 'gpp_a"b\\c\td\x7f\u00e9'
    assert save_config("http://10.0.0.5:8000", odd) == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tomllib.loads(path.read_text()) == {"server": "http://10.0.0.5:8000", "token": odd}
    assert load_config(path) == {"server": "http://10.0.0.5:8000", "token": odd}
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]  # no temporary left


def test_resolve_flag_then_env_then_config_then_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GPUPOOL_CONFIG", str(tmp_path / "c.toml"))
    target = resolve(None, None)
    assert (target.server, target.token, target.token_source) == (
        "http://127.0.0.1:8000",
        None,
        "",
    )
    save_config("http://config:1/", "gpp_config")
    target = resolve(None, None)
    assert (target.server, target.token) == ("http://config:1", "gpp_config")
    monkeypatch.setenv("GPUPOOL_SERVER", "env-host:2")
    monkeypatch.setenv("GPUPOOL_TOKEN", "gpp_env")
    target = resolve(None, None)
    assert (target.server, target.token, target.token_source) == (
        "http://env-host:2",
        "gpp_env",
        "GPUPOOL_TOKEN",
    )
    target = resolve("https://flag:3", "gpp_flag")
    assert (target.server, target.token, target.server_source) == (
        "https://flag:3",
        "gpp_flag",
        "--server",
    )
    with pytest.raises(typer.Exit):
        resolve("ftp://x", None)


def test_waiting_reason_gets_the_estimated_start() -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=5)
    local = start.astimezone().strftime("%H:%M")
    job = {"state": "queued", "reason": "waiting for 8 H100-80GB", "est_start": start.isoformat()}
    assert reason_of(job) in (
        f"waiting for 8 H100-80GB; est. start {local}",
        # just before midnight the start is tomorrow, shown with its date
        f"waiting for 8 H100-80GB; est. start {start.astimezone():%Y-%m-%d %H:%M}",
    )
    job["reason"] = "next for 8 GPUs; est. start in 00:05:00"
    assert reason_of(job).startswith("next for 8 GPUs; est. start in 00:05:00 (at ")
    assert reason_of({"state": "queued", "reason": "over limit", "est_start": None}) == (
        "over limit"
    )
    assert reason_of({"state": "running", "borrowed": True}).startswith("borrowed GPUs")
    assert reason_of({"state": "failed", "outcome": "exit code 1"}) == "exit code 1"


def test_job_cells() -> None:
    job = {
        "gpus": 8,
        "flavor": "*",
        "flavor_used": "H100-80GB",
        "nodes": 2,
        "allocations": [{"node": "h100-01", "gpus": 4}, {"node": "h100-02", "gpus": 4}],
    }
    assert gpus_of(job) == "8xH100-80GB"
    assert nodes_of(job) == "h100-01:4,h100-02:4"
    assert gpus_of(job | {"flavor_used": None}) == "8xany"
    assert nodes_of(job | {"allocations": []}) == "(2 nodes)"
    assert [elapsed(s) for s in (5, 65, 3725, 90061)] == ["0:05", "1:05", "1:02:05", "1-01:01:01"]
    assert submitted_line([42], array=False) == "Submitted job 42"
    assert submitted_line([42, 43, 44], array=True) == "Submitted array 42-44"
    assert submitted_line([42], array=True) == "Submitted array 42-42"
    assert submitted_line([42, 50], array=True) == "Submitted array 42,50"


def test_waiting_reason_says_how_sure_the_estimate_is() -> None:
    start = datetime(2030, 1, 2, 14, 30, tzinfo=UTC)
    earliest, latest = start - timedelta(minutes=20), start + timedelta(hours=1)

    def shown(moment: datetime) -> str:
        return f"{moment.astimezone():%Y-%m-%d %H:%M}"

    job = {
        "state": "queued",
        "reason": "waiting for 8 H100 GPUs (borrowing)",
        "est_start": start.isoformat(),
        "est_start_earliest": earliest.isoformat(),
        "est_start_latest": latest.isoformat(),
        "est_confidence": "likely",
        "est_note": "likely: from the run times of similar jobs",
    }
    assert reason_of(job) == (
        f"waiting for 8 H100 GPUs (borrowing); est. start {shown(start)}; "
        f"likely between {shown(earliest)} and {shown(latest)}"
    )
    job |= {
        "est_confidence": "rough",
        "est_note": "rough: depends on 3 jobs running past what their history knows",
    }
    assert reason_of(job).endswith(
        f"; rough: between {shown(earliest)} and {shown(latest)}; depends on 3 jobs running "
        "past what their history knows"
    )
    # An estimate without a range (a server before this field) reads as before.
    job |= {"est_confidence": "", "est_start_earliest": None}
    assert reason_of(job) == f"waiting for 8 H100 GPUs (borrowing); est. start {shown(start)}"
    assert estimate_of({**job, "state": "running"}) == ""
