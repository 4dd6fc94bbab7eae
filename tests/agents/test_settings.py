"""The agent's settings: flags > env > config file > defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from agents.settings import DEFAULT_CONFIG, AgentConfigError, load_settings, short_hostname


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("GPUPOOL_AGENT_"):
            monkeypatch.delenv(name)
    # This machine's own /etc/gpupool/agent.toml, if any, stays out of the tests.
    monkeypatch.setattr("agents.settings.DEFAULT_CONFIG", tmp_path / "absent" / "agent.toml")


def test_flags_then_env_then_file_then_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        'server = "http://from-file:8000"\ntoken = "file-token"\nnode = "file-node"\n'
        "interval_s = 7\nbuffer_size = 10\n"
    )
    monkeypatch.setenv("GPUPOOL_AGENT_CONFIG", str(config))
    monkeypatch.setenv("GPUPOOL_AGENT_TOKEN", "env-token")
    monkeypatch.setenv("GPUPOOL_AGENT_INTERVAL_S", "3")
    settings = load_settings(server=None, node="flag-node", interval_s=None)
    assert settings.server == "http://from-file:8000"  # only the file says
    assert settings.token.get_secret_value() == "env-token"  # env over file
    assert settings.node == "flag-node"  # flag over file
    assert settings.interval_s == 3  # env over file
    assert settings.buffer_size == 10
    assert settings.simulated_gpus == 0 and settings.batch_size == 100  # defaults
    assert load_settings(interval_s=2.5).interval_s == 2.5  # flag over env


def test_the_config_flag_beats_the_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text("simulated_gpus = 2\n")
    (tmp_path / "b.toml").write_text("simulated_gpus = 4\n")
    monkeypatch.setenv("GPUPOOL_AGENT_CONFIG", str(tmp_path / "a.toml"))
    assert load_settings().simulated_gpus == 2
    assert load_settings(config=tmp_path / "b.toml").simulated_gpus == 4


def test_defaults_without_any_file() -> None:
    settings = load_settings()
    assert settings.config == DEFAULT_CONFIG
    assert settings.node == short_hostname()
    assert (settings.server, settings.token.get_secret_value()) == ("", "")
    assert (settings.interval_s, settings.buffer_size) == (5.0, 720)


def test_config_file_problems_are_clear(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError, match=r"config file .*missing\.toml not found"):
        load_settings(config=tmp_path / "missing.toml")
    typo = tmp_path / "typo.toml"
    typo.write_text('sever = "http://x"\n')
    with pytest.raises(AgentConfigError, match=r"unknown key\(s\) sever; known: server, token"):
        load_settings(config=typo)
    broken = tmp_path / "broken.toml"
    broken.write_text("server = \n")
    with pytest.raises(AgentConfigError, match=r"broken\.toml: Invalid value"):
        load_settings(config=broken)


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="interval_s"):
        load_settings(interval_s=0)
    with pytest.raises(ValidationError, match="node"):
        load_settings(node="Not A Node Name")
    with pytest.raises(ValidationError, match="must start with http"):
        load_settings(server="gpupool.example.org:8000")
    assert load_settings(server="https://cp.example.org/").server == "https://cp.example.org"
    monkeypatch.setenv("GPUPOOL_AGENT_BUFFER_SIZE", "0")
    with pytest.raises(ValidationError, match="buffer_size"):
        load_settings()


def test_nothing_is_read_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUPOOL_AGENT_INTERVAL_S", "11")
    assert load_settings().interval_s == 11
    monkeypatch.setenv("GPUPOOL_AGENT_INTERVAL_S", "12")
    assert load_settings().interval_s == 12
