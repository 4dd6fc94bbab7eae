"""The live loop commits credits at admission: a project starts only what its balance can
pay for to the end of each job's max_runtime, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from web.db import write_session
from web.models import Flavor, JobState, Quota

from .conftest import HOUR, Live, PoolRows


def states(rows: PoolRows, jobs: list[int]) -> list[str]:
    return [rows.get(j).state for j in jobs]


def test_a_small_budget_starts_only_what_it_can_pay_for(rows: PoolRows, live: Live) -> None:
    rows.pool(nodes=4)  # 32 idle GPUs
    rows.project("p", guaranteed=32, limit=32, credits=20.0)
    jobs = [rows.job("p", gpus=8, submitted=live.clock.now() + i) for i in range(3)]  # 8 each

    live.tick()

    assert states(rows, jobs) == [JobState.ADMITTED, JobState.ADMITTED, JobState.QUEUED]
    third = rows.get(jobs[2])
    assert third.reason_code == "credits"
    assert third.reason == (
        "credits: 4.0 left after 16.0 committed to running jobs; "
        "this job needs up to 8.0 (8 GPUs x 1.0 h x 1.0)"
    )

    # Half an hour on, what the running jobs may still use has halved; nothing is charged
    # yet, so the job still cannot be paid for.
    live.clock.advance(HOUR / 2)
    live.tick()
    assert rows.get(jobs[2]).state == JobState.QUEUED
    assert rows.get(jobs[2]).reason.startswith(
        "credits: 4.0 left after 8.0 committed to running jobs"
    )

    # One ends: the ledger charges its half hour (4.0) and its commitment is released.
    live.dispatcher.finish(str(jobs[0]), 1)
    live.tick()
    assert rows.project_row("p").credits_used == pytest.approx(4.0)
    assert rows.get(jobs[2]).state == JobState.ADMITTED


def test_without_a_budget_every_job_starts(rows: PoolRows, live: Live) -> None:
    rows.pool(nodes=4)
    rows.project("p", guaranteed=32, limit=32, credits=None)
    jobs = [rows.job("p", gpus=8, runtime=54 * 24 * HOUR) for _ in range(3)]
    live.tick()
    assert states(rows, jobs) == [JobState.ADMITTED] * 3


@pytest.mark.parametrize(
    ("flavor_rate", "quota_rate", "admitted", "words"),
    [
        pytest.param(2.0, None, 1, "8 GPUs x 1.0 h x 2.0", id="the-flavor-rate"),
        pytest.param(2.0, 0.5, 2, None, id="the-quota-rate-overrides-it"),
        pytest.param(1.0, 4.0, 0, "needs up to 32.0 (8 GPUs x 1.0 h x 4.0)", id="a-dear-quota"),
    ],
)
def test_the_commitment_is_at_the_projects_rate_for_the_flavor(
    rows: PoolRows,
    live: Live,
    flavor_rate: float,
    quota_rate: float | None,
    admitted: int,
    words: str | None,
) -> None:
    rows.pool(nodes=2)
    rows.project("p", guaranteed=16, limit=16, credits=20.0)
    with write_session(rows.engine) as s:
        s.execute(update(Flavor).values(credit_rate=flavor_rate))
        s.execute(update(Quota).values(credit_rate=quota_rate))
    jobs = [rows.job("p", gpus=8, submitted=live.clock.now() + i) for i in range(2)]

    live.tick()

    started = [j for j in jobs if rows.get(j).state == JobState.ADMITTED]
    assert len(started) == admitted
    if words is not None:
        waiting = rows.get(jobs[admitted])
        assert waiting.reason_code == "credits" and words in waiting.reason
