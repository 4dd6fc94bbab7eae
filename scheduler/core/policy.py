"""The knobs of a scheduling policy, and the three named policies the simulator compares."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class Ordering(StrEnum):
    FAIR_SHARE = "fair_share"  # in-quota first, then fair share, priority, age
    ARRIVAL = "arrival"  # submission order only


class CreditsExhausted(StrEnum):
    BLOCK = "block"  # no credits, no new jobs
    BORROW_ONLY = "borrow_only"  # may still use idle GPUs, last and preemptible


@dataclass(frozen=True, slots=True)
class Policy:
    name: str = "gpupool"
    ordering: Ordering = Ordering.FAIR_SHARE
    enforce_quotas: bool = True  # project limits and credits apply
    borrowing: bool = True  # False: a project may not exceed its guarantee
    reclaim: bool = True  # in-quota jobs preempt borrowers
    backfill: bool = True  # EASY: reserve for the first blocked job, backfill around it
    half_life_s: float = 7 * 24 * 3600.0
    grace_period_s: float = 120.0
    credits_exhausted: CreditsExhausted = CreditsExhausted.BLOCK
    # Between full passes, a cycle looks only at what changed (as Slurm's quick passes do).
    full_cycle_interval_s: float = 30.0

    @classmethod
    def gpupool(cls, **overrides: object) -> Policy:
        return replace(cls(), **overrides)  # type: ignore[arg-type]

    @classmethod
    def static(cls, **overrides: object) -> Policy:
        """Philly's own model: each project confined to its guarantee, in arrival order."""
        base = cls(
            name="static", ordering=Ordering.ARRIVAL, borrowing=False, reclaim=False, backfill=False
        )
        return replace(base, **overrides)  # type: ignore[arg-type]

    @classmethod
    def fifo(cls, **overrides: object) -> Policy:
        """One pooled queue, no quotas, first fit in arrival order."""
        base = cls(
            name="fifo",
            ordering=Ordering.ARRIVAL,
            enforce_quotas=False,
            reclaim=False,
            backfill=False,
        )
        return replace(base, **overrides)  # type: ignore[arg-type]

    @classmethod
    def named(cls, name: str) -> Policy:
        makers = {"gpupool": cls.gpupool, "static": cls.static, "fifo": cls.fifo}
        if name not in makers:
            raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(makers)}")
        return makers[name]()
