"""Which dispatcher `serve` runs, wired from Settings: `--dispatcher ray` gets the Ray address,
token and grace period of the settings, and Ray's own token file when no token is set."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from scheduler.runtime.clock import SystemClock
from scheduler.runtime.local import LocalProcessDispatcher
from scheduler.runtime.ports import DispatchError
from scheduler.runtime.ray_dispatcher import (
    DEFAULT_ADDRESS,
    RayDispatcher,
    address_problem,
    auth_token,
    dashboard_url,
)
from web.scheduler_process import make_dispatcher
from web.settings import DISPATCHERS, Settings


@pytest.fixture
def no_ray_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No Ray token in the environment, and a home of our own (~/.ray/auth_token)."""
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "GPUPOOL_RAY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_every_dispatcher_name_makes_a_dispatcher(tmp_path: Path, no_ray_env: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    for name in DISPATCHERS:
        assert make_dispatcher(name, settings, SystemClock()) is not None
    assert isinstance(make_dispatcher("local", settings, SystemClock()), LocalProcessDispatcher)
    with pytest.raises(ValueError, match="unknown dispatcher 'slurm'"):
        make_dispatcher("slurm", settings, SystemClock())


def test_the_ray_dispatcher_comes_from_the_settings(tmp_path: Path, no_ray_env: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        ray_address="head.example:8265",
        ray_token=SecretStr("s3cret"),
        ray_poll_s=0.25,
        grace_period_s=30,
    )
    d = make_dispatcher("ray", settings, SystemClock())
    assert isinstance(d, RayDispatcher)
    assert d.address == "http://head.example:8265"
    assert (d.poll_s, d.grace_s) == (0.25, 30)
    assert d._headers == {"Authorization": "Bearer s3cret"}
    assert "s3cret" not in repr(settings)


def test_from_the_environment_an_empty_address_is_this_machines_ray(
    tmp_path: Path, no_ray_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUPOOL_DISPATCHER", "ray")
    monkeypatch.setenv("GPUPOOL_RAY_TOKEN", "from-env")
    settings = Settings(data_dir=tmp_path)
    assert settings.dispatcher == "ray"
    d = make_dispatcher(settings.dispatcher, settings, SystemClock())
    assert isinstance(d, RayDispatcher)
    assert d.address == DEFAULT_ADDRESS == "http://127.0.0.1:8265"
    assert d._headers == {"Authorization": "Bearer from-env"}


def test_without_a_token_setting_rays_own_places_are_read(
    no_ray_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert auth_token("") is None
    (no_ray_env / ".ray").mkdir()
    (no_ray_env / ".ray" / "auth_token").write_text("from-home\n")
    assert auth_token("") == "from-home"
    named = tmp_path / "named-token"
    named.write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(named))
    assert auth_token("") == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-variable")
    assert auth_token("") == "from-variable"
    assert auth_token(" given ") == "given"  # the setting wins


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("", "http://127.0.0.1:8265"),
        ("head:8265", "http://head:8265"),
        ("https://ray.example.org/", "https://ray.example.org"),
    ],
)
def test_addresses_as_operators_write_them(given: str, url: str) -> None:
    assert dashboard_url(given) == url
    assert address_problem(url) is None


@pytest.mark.parametrize("given", ["ray://head:10001", "foo bar", "bogus://x"])
def test_an_address_that_is_not_the_dashboards_fails_every_call_without_waiting(
    given: str,
) -> None:
    d = RayDispatcher(SystemClock(), given, poll_s=0.0)
    with pytest.raises(DispatchError, match="not the Ray dashboard's URL") as caught:
        d.known()
    assert not caught.value.permanent
    assert d.poll() == []


def test_the_loop_process_stops_at_once_when_asked(settings: Settings) -> None:
    """SIGTERM to the loop's process (SchedulerProcess.stop) ends it within a tick: its
    handler must not set the wake event from inside that event's own wait (a deadlock that
    made every stop wait for the 30 s kill)."""
    from web.db import make_engine, migrate
    from web.scheduler_process import SchedulerProcess

    engine = make_engine(settings)
    migrate(engine)
    engine.dispose()
    loop = SchedulerProcess(settings.model_copy(update={"loop_interval_s": 5.0}), "none")
    loop.start()
    deadline = time.monotonic() + 30
    while not loop.leading():  # it is waiting on its wake event now, between ticks
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.5)
    began = time.monotonic()
    loop.stop(timeout=20)
    assert time.monotonic() - began < 5
    assert loop.process.exitcode == 0
