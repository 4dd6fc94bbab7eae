"""Cluster files: shape, sectors and quotas, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.core import FlavorQuota
from scheduler.sim.cluster import load_cluster
from scheduler.sim.errors import InputError
from tests.conftest import SMALL_POOL

REPO = Path(__file__).resolve().parents[3]


def test_small_pool_loads(small_pool: Path) -> None:
    cluster = load_cluster(small_pool)
    assert [n.name for n in cluster.nodes] == ["h-0", "h-1"]
    assert cluster.gpus == 16 and cluster.flavors == ["H100"]
    assert cluster.projects[0].quotas == {"H100": FlavorQuota(8, 16)}
    assert cluster.default_max_runtime_s == 3600


@pytest.mark.parametrize("name", ["philly.toml", "pool.example.toml"])
def test_shipped_configs_load(name: str) -> None:
    cluster = load_cluster(REPO / "configs" / name)
    for flavor in cluster.flavors:
        guaranteed = sum(
            p.quotas.get(flavor, FlavorQuota(0, 0)).guaranteed for p in cluster.projects
        )
        assert guaranteed == cluster.gpus_of(flavor), "guarantees sum to the flavor's capacity"


def test_philly_pool_shape() -> None:
    cluster = load_cluster(REPO / "configs" / "philly.toml")
    assert len(cluster.nodes) == 80 and cluster.gpus == 640
    assert len(cluster.projects) == 15
    assert len({n.group for n in cluster.nodes}) == 10


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "guaranteed = 8, limit = 16 } }\n\n[[projects]]",
            "guaranteed = 8, limit = 4 } }\n\n[[projects]]",
            "field 'projects[0].quotas.H100.limit': must be >= guaranteed (8), got 4",
        ),
        (
            "quotas = { H100 = { guaranteed = 8, limit = 16 } }\n\n[[projects]]",
            "quotas = { A100 = { guaranteed = 8, limit = 16 } }\n\n[[projects]]",
            "field 'projects[0].quotas.A100': unknown flavor; the pool has H100",
        ),
        (
            "guaranteed = 8, limit = 16 } }\n\n[[projects]]",
            'guaranteed = "eight" } }\n\n[[projects]]',
            "field 'projects[0].quotas.H100.guaranteed': must be a whole number >= 0, got 'eight'",
        ),
        (
            'sector = "research"\nquotas',
            'sector = "space"\nquotas',
            "field 'projects[0].sector': unknown sector 'space'; [[sectors]] lists research",
        ),
        (
            "count = 2",
            "count = 0",
            "field 'node_groups[0].count': must be a whole number >= 1, got 0",
        ),
        (
            'flavor = "H100"\ncount',
            'flavor = "B200"\ncount',
            "field 'node_groups[0].flavor': unknown flavor 'B200'",
        ),
        (
            "gpus = 8",
            "gpus = -8",
            "field 'node_groups[0].gpus': must be a whole number >= 1, got -8",
        ),
        ('name = "b"', 'name = "a"', "project names repeat"),
        ("[[sectors]]", "[[sectors]\n", "is not valid TOML"),
    ],
)
def test_bad_cluster_file_names_the_field(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in SMALL_POOL
    path = tmp_path / "pool.toml"
    path.write_text(SMALL_POOL.replace(old, new, 1))
    with pytest.raises(InputError) as caught:
        load_cluster(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_no_nodes(tmp_path: Path) -> None:
    path = tmp_path / "pool.toml"
    path.write_text('[[sectors]]\nname = "r"\n')
    with pytest.raises(InputError, match="no nodes"):
        load_cluster(path)


@pytest.mark.parametrize("name", ["families.toml", "families-flavors.toml"])
def test_family_pools_load_with_guarantees_within_capacity(name: str) -> None:
    cluster = load_cluster(REPO / "configs" / name)
    for flavor in cluster.flavors:
        guaranteed = [p.quotas[flavor] for p in cluster.projects if flavor in p.quotas]
        assert sum(q.guaranteed for q in guaranteed) <= cluster.gpus_of(flavor)
        assert any(q.limit > q.guaranteed for q in guaranteed), "projects may borrow"
    assert len({p.sector for p in cluster.projects}) >= 3


def test_guarantees_over_capacity_say_by_how_much(tmp_path: Path) -> None:
    path = tmp_path / "pool.toml"
    path.write_text(SMALL_POOL.replace("guaranteed = 8, limit = 16", "guaranteed = 12, limit = 16"))
    with pytest.raises(InputError) as caught:
        load_cluster(path)
    headers = [n for n, text in enumerate(SMALL_POOL.splitlines(), 1) if text == "[[projects]]"]
    header_line = headers[1]  # project b's table, whose guarantee passes the capacity
    assert str(caught.value) == (
        f"{path}:{header_line}: field 'projects[1].quotas.H100.guaranteed': the H100 "
        "guarantees sum to 24 GPUs, 8 more than the pool's 16 H100 GPUs (it passes them at "
        "project 'b', guaranteed 12)"
    )
    assert caught.value.field == "projects[1].quotas.H100.guaranteed"


def test_guarantees_up_to_capacity_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "pool.toml"
    path.write_text(
        SMALL_POOL.replace("guaranteed = 8, limit = 16", "guaranteed = 0, limit = 16", 1)
    )
    assert sum(p.quotas["H100"].guaranteed for p in load_cluster(path).projects) == 8
