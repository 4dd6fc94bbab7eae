"""Which jobs of a replay waited, at some point, because their project's credits could not
pay for them (the core's CREDITS reason), to measure what credit budgets cost in waits."""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING

from scheduler.core import Plan, ReasonCode

if TYPE_CHECKING:
    from scheduler.sim.engine import JobRecord


class CreditDelays:
    """Fed every plan. A cycle gives a CREDITS reason to one job, or to a whole queue: for a
    queue, only the moment is kept, and the jobs waiting in it then are found at the end."""

    def __init__(self) -> None:
        self.jobs: set[str] = set()
        self.queue_blocks: dict[tuple[str, str], list[float]] = defaultdict(list)

    def observe(self, plan: Plan) -> None:
        for job_id, reason in plan.job_reasons.items():
            if reason.code is ReasonCode.CREDITS:
                self.jobs.add(job_id)
        for key, reason in plan.queue_reasons.items():
            if reason.code is ReasonCode.CREDITS:
                self.queue_blocks[key].append(plan.now)  # plans come in time order

    def count(self, records: Mapping[str, JobRecord]) -> int:
        """Jobs that waited for credits before their first start (or ever, if none)."""
        delayed = 0
        for job_id, record in records.items():
            if job_id in self.jobs:
                delayed += 1
                continue
            tj = record.trace
            blocks = self.queue_blocks.get((tj.project, tj.flavor))
            if not blocks:
                continue
            started = record.first_start if record.first_start is not None else float("inf")
            i = bisect_left(blocks, tj.submit_s)
            if i < len(blocks) and blocks[i] < started:
                delayed += 1
        return delayed
