"""The Ray head `gpupool up --dispatcher ray` starts when no Ray answers on this machine: what it
declares (the pool's nodes on simulated GPUs, or this machine's GPUs as a node of its own),
how it is started (token auth, gpupool's token, none of gpupool's settings in its
environment), and how `up` decides whether to start one. No Ray is started here: the probe
is tried on the session's cluster."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import Engine
from sqlmodel import Session, select

from tests.scheduler.runtime.ray_cluster import LocalRayCluster, free_port
from web.cli import serve
from web.db import write_session
from web.models import Flavor, Node
from web.ray_head import (
    HeadPlan,
    LocalRayHead,
    head_command,
    head_env,
    head_token,
    machine_node_name,
    plan_head,
    probe,
)
from web.settings import Settings


@pytest.fixture
def nodes(engine: Engine) -> Engine:
    with write_session(engine) as s:
        s.add_all([Flavor(name="H100"), Flavor(name="A100")])
        s.flush()
        s.add_all(
            [
                Node(name="h-0", flavor="H100", gpus=8),
                Node(name="h-1", flavor="H100", gpus=8),
                Node(name="a-0", flavor="A100", gpus=4, state="draining"),
                Node(name="a-1", flavor="A100", gpus=4, state="down"),
            ]
        )
    return engine


def test_without_gpus_the_pools_nodes_are_labels_on_simulated_gpus(nodes: Engine) -> None:
    plan = plan_head(nodes, gpus=0, now=0.0)
    assert plan == HeadPlan({"h-0": 8, "h-1": 8, "a-0": 4}, 20, simulated=True)
    command = head_command(plan, "ray")
    assert command[:4] == ["ray", "start", "--head", "--block"]
    assert "--num-gpus=20" in command
    resources = next(a for a in command if a.startswith("--resources="))
    assert json.loads(resources.removeprefix("--resources=")) == {
        "gpupool_node:h-0": 1,
        "gpupool_node:h-1": 1,
        "gpupool_node:a-0": 1,
    }
    assert "--dashboard-port=8265" in command and "--port=6379" in command


def test_with_gpus_this_machine_is_a_node_seeded_once(nodes: Engine) -> None:
    plan = plan_head(nodes, gpus=2, now=5.0, hostname="GPU-Box_7.lab.example.org")
    assert plan == HeadPlan({"gpu-box_7": 2}, 2, simulated=False, seeded="gpu-box_7")
    with Session(nodes) as s:
        row = s.get(Node, "gpu-box_7")
        assert row is not None
        assert (row.flavor, row.gpus, row.state) == ("A100", 2, "up")  # the first flavor
    again = plan_head(nodes, gpus=2, now=6.0, hostname="gpu-box_7")
    assert again.seeded is None
    with Session(nodes) as s:
        assert len(s.exec(select(Node)).all()) == 5


def test_machine_names_become_node_names() -> None:
    assert machine_node_name("vm") == "vm"
    assert machine_node_name("My Host!.example") == "my-host"
    assert machine_node_name("---") == "localhost"
    assert len(machine_node_name("x" * 100)) == 63


def test_the_head_runs_with_token_auth_and_none_of_gpupools_settings(tmp_path: Path) -> None:
    token = head_token(tmp_path)
    assert head_token(tmp_path) == token  # kept for the next `up`
    assert stat.S_IMODE((tmp_path / "ray.token").stat().st_mode) == 0o600
    env = head_env(
        token,
        {
            "PATH": "/usr/bin",
            "GPUPOOL_DATABASE_URL": "postgresql://u:secret@db/x",
            "RAY_AUTH_MODE": "disabled",
            "RAY_AUTH_TOKEN_PATH": "/elsewhere",
        },
    )
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN"] == token
    assert not any(k.startswith("GPUPOOL_") for k in env)
    assert "RAY_AUTH_TOKEN_PATH" not in env
    assert env["PATH"].endswith("/usr/bin")


def test_probe_tells_ray_from_a_refusal_from_nothing(ray_cluster: LocalRayCluster) -> None:
    assert probe(ray_cluster.address, ray_cluster.token) == "ray"
    assert probe(ray_cluster.address, "not-its-token") == "refused"
    assert probe(f"http://127.0.0.1:{free_port()}", None) is None


def test_up_uses_the_ray_it_is_given_or_finds_and_else_starts_one(
    settings: Settings, nodes: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    console = Console(file=None, quiet=True)
    given = settings.model_copy(update={"dispatcher": "ray", "ray_address": "http://h:8265"})
    assert serve.local_ray(given, console) == (given, None)

    mine = settings.model_copy(update={"dispatcher": "ray"})
    monkeypatch.setattr("web.ray_head.probe", lambda address, token: "ray")
    assert serve.local_ray(mine, console) == (mine, None)  # the Ray already running here

    monkeypatch.setattr("web.ray_head.probe", lambda address, token: "refused")
    assert serve.local_ray(mine, console) == (mine, None)  # told to set the token; no head

    started: list[HeadPlan] = []
    monkeypatch.setattr("web.ray_head.probe", lambda address, token: None)
    monkeypatch.setattr("web.ray_head.gpus_here", lambda: 0)
    monkeypatch.setattr(LocalRayHead, "start", lambda head: started.append(head.plan))
    monkeypatch.setattr(LocalRayHead, "wait_ready", lambda head, timeout_s=60.0: None)
    after, head = serve.local_ray(mine, console)
    assert head is not None and started == [head.plan]
    assert head.plan.simulated and head.plan.gpus == 20
    assert after.ray_token.get_secret_value() == head.token == head_token(settings.data_dir)
    assert after.ray_address == ""  # this machine's: http://127.0.0.1:8265
