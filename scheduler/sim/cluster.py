"""Cluster files: a pool's shape, sectors and project quotas, in TOML (see configs/).

[[flavors]]           name, credit_rate
[[node_groups]]       flavor, count, gpus, prefix, groups (topology groups to spread over)
[[sectors]]           name, weight
[[projects]]          name, sector, share (optional), credits (optional: a budget in
                      GPU-hours x rate, charged as jobs run, committed at admission),
                      quotas = { FLAVOR = { guaranteed = N, limit = M, credit_rate = R } }
                      (credit_rate optional: the flavor's)
[simulation]          default_max_runtime_s (for trace jobs that do not give one)
"""

from __future__ import annotations

import itertools
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.core import FlavorQuota, Node, Project, Sector
from scheduler.sim.errors import InputError


@dataclass(frozen=True, slots=True)
class Cluster:
    nodes: tuple[Node, ...]
    sectors: tuple[Sector, ...]
    projects: tuple[Project, ...]
    credit_rates: dict[str, float] = field(default_factory=dict)
    default_max_runtime_s: float | None = None

    @property
    def flavors(self) -> list[str]:
        return sorted({n.flavor for n in self.nodes})

    @property
    def gpus(self) -> int:
        return sum(n.gpus for n in self.nodes)

    def gpus_of(self, flavor: str) -> int:
        return sum(n.gpus for n in self.nodes if n.flavor == flavor)


class _Table:
    """Typed access to one TOML table; errors name the file and the field's path."""

    def __init__(self, path: Path, where: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise InputError(path, f"must be a table, got {type(data).__name__}", field=where)
        self.path, self.where, self.data = path, where, data

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, message: str) -> InputError:
        return InputError(self.path, message, field=self._name(key))

    def text(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty string, got {value!r}")
        return value.strip()

    def integer(self, key: str, minimum: int = 0, default: int | None = None) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(key, f"must be a whole number >= {minimum}, got {value!r}")
        return value

    def number(self, key: str, minimum: float = 0.0, default: float | None = None) -> float:
        value = self.data.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)  # TOML has nan and inf
            or value < minimum
        ):
            raise self.fail(key, f"must be a number >= {minimum:g}, got {value!r}")
        return float(value)

    def optional_number(self, key: str) -> float | None:
        return None if self.data.get(key) is None else self.number(key)

    def tables(self, key: str) -> list[_Table]:
        value = self.data.get(key, [])
        if not isinstance(value, list):
            raise self.fail(key, "must be an array of tables ([[...]])")
        return [_Table(self.path, f"{self._name(key)}[{i}]", v) for i, v in enumerate(value)]

    def table(self, key: str) -> _Table:
        return _Table(self.path, self._name(key), self.data.get(key, {}))


def load_cluster(path: Path | str) -> Cluster:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(path, f"cannot read the cluster file: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise InputError(path, f"is not valid TOML: {err}") from None
    root = _Table(path, "", data)

    rates = {}
    for t in root.tables("flavors"):
        rates[t.text("name")] = t.number("credit_rate", default=1.0)

    nodes: list[Node] = []
    for t in root.tables("node_groups"):
        flavor = t.text("flavor")
        if rates and flavor not in rates:
            raise t.fail(
                "flavor", f"unknown flavor {flavor!r}; [[flavors]] lists {', '.join(rates)}"
            )
        count, gpus = t.integer("count", 1), t.integer("gpus", 1)
        prefix = t.text("prefix", default=flavor.lower())
        groups = t.integer("groups", 1, default=1)
        width = len(str(count))
        for i in range(count):
            group = f"{prefix}-g{i * groups // count}"
            nodes.append(Node(f"{prefix}-{i:0{width}d}", flavor, gpus, group))
    if not nodes:
        raise InputError(path, "no nodes: add at least one [[node_groups]]", field="node_groups")
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise InputError(
            path, "node names repeat: give each group its own prefix", field="node_groups"
        )
    flavors = {n.flavor for n in nodes}

    sectors = [
        Sector(t.text("name"), t.number("weight", default=1.0)) for t in root.tables("sectors")
    ]
    sector_names = {s.name for s in sectors}

    projects = []
    for t in root.tables("projects"):
        name = t.text("name")
        sector = t.text("sector")
        if sector_names and sector not in sector_names:
            raise t.fail(
                "sector",
                f"unknown sector {sector!r}; [[sectors]] lists {', '.join(sorted(sector_names))}",
            )
        quotas = {}
        quota_table = t.table("quotas")
        for flavor in quota_table.data:
            if flavor not in flavors:
                raise quota_table.fail(
                    flavor, f"unknown flavor; the pool has {', '.join(sorted(flavors))}"
                )
            q = quota_table.table(flavor)
            guaranteed = q.integer("guaranteed", 0)
            limit = q.integer("limit", 0, default=guaranteed)
            if limit < guaranteed:
                raise q.fail("limit", f"must be >= guaranteed ({guaranteed}), got {limit}")
            rate = q.number("credit_rate", default=rates.get(flavor, 1.0))
            quotas[flavor] = FlavorQuota(guaranteed, limit, rate)
        projects.append(
            Project(
                name,
                sector,
                quotas,
                credits_left=t.optional_number("credits"),
                share=t.optional_number("share"),
            )
        )
    names = [p.name for p in projects]
    if len(set(names)) != len(names):
        raise InputError(path, "project names repeat", field="projects")
    _check_guarantees(path, nodes, projects)

    simulation = root.table("simulation")
    return Cluster(
        nodes=tuple(nodes),
        sectors=tuple(sectors),
        projects=tuple(projects),
        credit_rates=rates,
        default_max_runtime_s=simulation.optional_number("default_max_runtime_s"),
    )


def _check_guarantees(path: Path, nodes: list[Node], projects: list[Project]) -> None:
    """Guarantees are promises of GPUs: per flavor they may not add up to more than there are.
    The error names the project whose guarantee takes the sum past capacity, and by how much."""
    for flavor in sorted({n.flavor for n in nodes}):
        capacity = sum(n.gpus for n in nodes if n.flavor == flavor)
        total = sum(p.quotas[flavor].guaranteed for p in projects if flavor in p.quotas)
        if total <= capacity:
            continue
        sums = itertools.accumulate(
            p.quotas[flavor].guaranteed if flavor in p.quotas else 0 for p in projects
        )
        over = next(i for i, running in enumerate(sums) if running > capacity)
        raise InputError(
            path,
            f"the {flavor} guarantees sum to {total} GPUs, {total - capacity} more than the "
            f"pool's {capacity} {flavor} GPUs (it passes them at project {projects[over].name!r}, "
            f"guaranteed {projects[over].quotas[flavor].guaranteed})",
            _table_line(path, "projects", over),
            f"projects[{over}].quotas.{flavor}.guaranteed",
        )


def _table_line(path: Path, name: str, index: int) -> int | None:
    """The line of the `index`-th `[[name]]` header, when the file writes its tables so."""
    header = f"[[{name}]]"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    found = [n for n, text in enumerate(lines, start=1) if text.split("#")[0].strip() == header]
    return found[index] if index < len(found) else None
