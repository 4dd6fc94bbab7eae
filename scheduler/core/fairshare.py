"""Fair sharing: usage decayed with a half-life, measured against sector and project shares.

As in Slurm's Fair Tree, sectors are ranked first and projects within their sector second.
A level's figure is (recent GPUs + GPUs held now) / share, where recent GPUs is the decayed
usage turned back into an average GPU count (a constant load of A GPUs decays to
A * half_life / ln 2 GPU-seconds). Lower is served first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from scheduler.core.types import Project, Sector

LN2 = math.log(2.0)


def decay(amount: float, since: float, now: float, half_life: float) -> float:
    """`amount` recorded at `since`, decayed to `now`."""
    if now <= since or half_life <= 0:
        return amount
    return amount * math.pow(0.5, (now - since) / half_life)


class DecayedUsage:
    """A running, decayed sum of GPU-seconds: add as usage happens, read at any time."""

    __slots__ = ("_at", "_half_life", "_value")

    def __init__(self, half_life: float, value: float = 0.0, at: float = 0.0) -> None:
        self._half_life = half_life
        self._value = value
        self._at = at

    def add(self, gpu_seconds: float, at: float) -> None:
        if at >= self._at:
            self._value = decay(self._value, self._at, at, self._half_life) + gpu_seconds
            self._at = at
        else:  # late record: decay it to our reference time instead
            self._value += decay(gpu_seconds, at, self._at, self._half_life)

    def value(self, now: float) -> float:
        return decay(self._value, self._at, now, self._half_life)

    @property
    def at(self) -> float:
        return self._at


def normalized_shares(
    sectors: Iterable[Sector], projects: Iterable[Project]
) -> tuple[dict[str, float], dict[str, float]]:
    """(sector -> fraction of the pool, project -> fraction of its sector).

    A project without an explicit share weighs its total guarantee; a sector or project of
    weight 0 gets a tiny share, so it can still borrow idle GPUs, last.
    """
    sector_weight = {s.name: max(s.weight, 0.0) for s in sectors}
    project_weight: dict[str, float] = {}
    sector_of: dict[str, str] = {}
    for p in projects:
        weight = p.share if p.share is not None else sum(q.guaranteed for q in p.quotas.values())
        project_weight[p.name] = max(weight, 0.0)
        sector_of[p.name] = p.sector
        sector_weight.setdefault(p.sector, 1.0)
    total = sum(sector_weight.values()) or 1.0
    sector_share = {s: max(w / total, 1e-9) for s, w in sector_weight.items()}
    in_sector: dict[str, float] = {}
    for name, w in project_weight.items():
        in_sector[sector_of[name]] = in_sector.get(sector_of[name], 0.0) + w
    project_share = {
        name: max(w / in_sector[sector_of[name]], 1e-9) if in_sector[sector_of[name]] else 1.0
        for name, w in project_weight.items()
    }
    return sector_share, project_share
