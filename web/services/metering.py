"""What an ended job attempt used, turned into ledger entries (in the transaction that
records its end: see DbDecisionSink._ended).

For each attempt: its allocations (node, flavor, GPUs, start, end, borrowed) give
GPU-seconds by flavor, split at the start of each month (UTC) so every entry falls in one
period; the agents' figures for the attempt (job_usage: energy, utilization, idle GPU-
seconds) are shared out in proportion to those GPU-seconds. Then, per (flavor, period,
borrowed):
- a charge: GPU-hours x the project's rate for the flavor (the quota's credit_rate, else
  the flavor's), borrowed (preemptible) GPU-hours at `borrowed_rate` of that;
- a refund of `refund_share` of the charge when the pool cut the attempt short
  (preempted, or lost with its node);
- lending rewards: the borrowed GPU-hours' credits x `reward_share`, shared among the
  projects whose guaranteed GPUs of that flavor were unused when the attempt ended, in
  proportion to how many were unused (the GPUs borrowed were theirs to claim).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from web.models import Allocation, Flavor, Job, JobUsage, Quota

A = Allocation.__table__  # type: ignore[attr-defined]
F = Flavor.__table__  # type: ignore[attr-defined]
J = Job.__table__  # type: ignore[attr-defined]
JU = JobUsage.__table__  # type: ignore[attr-defined]
Q = Quota.__table__  # type: ignore[attr-defined]
CUT_SHORT = ("preempted", "lost")  # outcomes the pool caused: refunded


@dataclass(frozen=True, slots=True)
class MeteringPolicy:
    borrowed_rate: float = 0.5  # borrowed GPU-hours cost this share of the rate
    refund_share: float = 1.0  # of a cut-short attempt's charge, given back
    reward_share: float = 0.25  # of borrowed GPU-hours' credits, earned by the lenders


@dataclass(frozen=True, slots=True)
class Ended:
    job_id: int
    attempt: int
    at: float
    outcome: str


def period_of(moment: float) -> str:
    """The period (month, UTC) a moment falls in: YYYY-MM."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m")


def split_by_month(start: float, end: float) -> Iterator[tuple[str, float]]:
    """(period, seconds) of [start, end) in each month it touches."""
    while start < end:
        day = datetime.fromtimestamp(start, UTC)
        following = (
            datetime(day.year + 1, 1, 1, tzinfo=UTC)
            if day.month == 12
            else datetime(day.year, day.month + 1, 1, tzinfo=UTC)
        ).timestamp()
        stop = min(end, following)
        yield period_of(start), stop - start
        start = stop


def meter(session: Session, ended: Sequence[Ended], policy: MeteringPolicy) -> list[dict[str, Any]]:
    """The ledger entries of these ended attempts (their allocations still open)."""
    if not ended:
        return []
    by_key = {(e.job_id, e.attempt): e for e in ended}
    jobs = {e.job_id for e in ended}
    pieces = session.execute(
        select(
            A.c.job_id,
            A.c.attempt,
            A.c.flavor,
            A.c.gpus,
            A.c.start,
            A.c.borrowed,
            J.c.project,
            J.c.user,
        )
        .join(J, J.c.id == A.c.job_id)
        .where(A.c.job_id.in_(jobs), A.c.end.is_(None))
    ).all()
    pieces = [p for p in pieces if (p.job_id, p.attempt) in by_key]
    if not pieces:
        return []
    usage = {
        (u.job_id, u.attempt): u for u in session.execute(select(JU).where(JU.c.job_id.in_(jobs)))
    }
    rates = _rates(session, {(p.project, p.flavor) for p in pieces})
    # (job, attempt, flavor, period, borrowed) -> GPU-seconds
    spans: dict[tuple[int, int, str, str, bool], float] = defaultdict(float)
    owner: dict[tuple[int, int], tuple[str, str]] = {}
    for p in pieces:
        end = by_key[(p.job_id, p.attempt)].at
        owner[(p.job_id, p.attempt)] = (p.project, p.user)
        for period, seconds in split_by_month(p.start, max(end, p.start)):
            spans[(p.job_id, p.attempt, p.flavor, period, bool(p.borrowed))] += seconds * p.gpus
    totals: dict[tuple[int, int], float] = defaultdict(float)
    for (job, attempt, *_), gpu_s in spans.items():
        totals[(job, attempt)] += gpu_s
    entries: list[dict[str, Any]] = []
    # flavor -> (credits, GPU-seconds) borrowed, for the lenders' rewards
    lent: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for (job, attempt, flavor, period, borrowed), gpu_s in sorted(spans.items()):
        e = by_key[(job, attempt)]
        project, user = owner[(job, attempt)]
        share = gpu_s / totals[(job, attempt)] if totals[(job, attempt)] else 0.0
        seen = usage.get((job, attempt))
        credits = gpu_s / 3600.0 * rates[(project, flavor)]
        if borrowed:
            lent[flavor][0] += credits
            lent[flavor][1] += gpu_s
            credits *= policy.borrowed_rate
        base = {
            "at": e.at,
            "project": project,
            "period": period,
            "job_id": job,
            "attempt": attempt,
            "user": user,
            "flavor": flavor,
            "borrowed": borrowed,
            "outcome": e.outcome,
            "actor": "scheduler",
        }
        entries.append(
            base
            | {
                "kind": "charge",
                "amount": -credits,
                "gpu_s": gpu_s,
                "energy_j": seen.energy_j * share if seen else 0.0,
                "util_gpu_s": seen.util_gpu_s * share if seen else 0.0,
                "busy_gpu_s": seen.busy_gpu_s * share if seen else 0.0,
                "idle_gpu_s": seen.idle_gpu_s * share if seen else 0.0,
            }
        )
        if e.outcome in CUT_SHORT and policy.refund_share > 0 and credits > 0:
            note = f"{e.outcome}: the pool cut the attempt short"
            entries.append(
                base | {"kind": "refund", "amount": credits * policy.refund_share, "note": note}
            )
    entries += _rewards(session, lent, ended, policy)
    return entries


def _rates(session: Session, keys: set[tuple[str, str]]) -> dict[tuple[str, str], float]:
    flavors: dict[str, float] = {
        name: float(rate) for name, rate in session.execute(select(F.c.name, F.c.credit_rate))
    }
    overrides: dict[tuple[str, str], float] = {
        (q.project, q.flavor): float(q.credit_rate)
        for q in session.execute(
            select(Q.c.project, Q.c.flavor, Q.c.credit_rate).where(Q.c.credit_rate.is_not(None))
        )
    }
    return {key: overrides.get(key, flavors.get(key[1], 1.0)) for key in keys}


def _rewards(
    session: Session,
    lent: dict[str, list[float]],
    ended: Sequence[Ended],
    policy: MeteringPolicy,
) -> list[dict[str, Any]]:
    """Rewards to the projects whose unused guarantee the borrowed GPUs were."""
    if policy.reward_share <= 0 or not lent:
        return []
    at = max(e.at for e in ended)
    ending = {(e.job_id, e.attempt) for e in ended}
    held: dict[tuple[str, str], int] = defaultdict(int)
    for project, flavor, job, attempt, gpus in session.execute(
        select(J.c.project, A.c.flavor, A.c.job_id, A.c.attempt, A.c.gpus)
        .join(J, J.c.id == A.c.job_id)
        .where(A.c.end.is_(None), A.c.flavor.in_(lent))
    ):
        if (job, attempt) not in ending:
            held[(project, flavor)] += gpus
    entries = []
    for flavor, (credits, gpu_s) in sorted(lent.items()):
        unused = {
            q.project: q.guaranteed - held[(q.project, flavor)]
            for q in session.execute(
                select(Q.c.project, Q.c.guaranteed).where(Q.c.flavor == flavor, Q.c.guaranteed > 0)
            )
            if q.guaranteed > held[(q.project, flavor)]
        }
        total = sum(unused.values())
        for project, gpus in sorted(unused.items()):
            entries.append(
                {
                    "at": at,
                    "kind": "reward",
                    "project": project,
                    "amount": credits * policy.reward_share * gpus / total,
                    "period": period_of(at),
                    "flavor": flavor,
                    "gpu_s": gpu_s * gpus / total,
                    "actor": "scheduler",
                    "note": f"lent {gpus} unused guaranteed {flavor} GPUs to borrowers",
                }
            )
    return entries
