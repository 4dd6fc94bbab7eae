"""The pool's utilization per minute (SQLite and PostgreSQL): what the agents' reports add
(GPU-seconds held, busy, idle, per minute, flavor and sector), what the scheduling loop's
leader sets once a minute (GPUs allocated per flavor and sector, capacity per flavor), the
history pruned with the GPUs' minutes, and the charts' series read back in buckets."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from tests.conftest import ManualClock
from tests.scheduler.runtime.conftest import Live, PoolRows
from tests.web.api.test_agents import Agent, gpu, report
from tests.web.conftest import START, Api
from web.db import read_session, write_session
from web.models import Allocation, Flavor, JobUsage, Node, Role, Sector, UtilizationMinute
from web.services import utilization
from web.services.auth import Principal
from web.services.utilization import UM, bucket_minutes

OPS = Principal("ops", Role.OPERATOR)


def minutes(engine: Engine) -> dict[tuple[int, str, str], dict[str, Any]]:
    """Every utilization row: (minute, flavor, sector) -> its figures."""
    with read_session(engine) as s:
        return {
            (r.minute, r.flavor, r.sector): {
                "capacity": r.capacity,
                "allocated": r.allocated,
                "gpu_s": pytest.approx(r.gpu_s),
                "busy_gpu_s": pytest.approx(r.busy_gpu_s),
                "idle_gpu_s": pytest.approx(r.idle_gpu_s),
            }
            for r in s.execute(select(UM).order_by(UM.c.minute, UM.c.flavor, UM.c.sector))
        }


def sums(
    gpu_s: float, busy: float, idle: float, allocated: int = 0, capacity: int = 0
) -> dict[str, Any]:
    return {
        "capacity": capacity,
        "allocated": allocated,
        "gpu_s": pytest.approx(gpu_s),
        "busy_gpu_s": pytest.approx(busy),
        "idle_gpu_s": pytest.approx(idle),
    }


# --- the agents' side ------------------------------------------------------------------------


def running(api: Api, user: str, project: str, node: str, gpus: int, flavor: str) -> int:
    """A job the records say runs on `node` since START."""
    job_id = int(api.submit(user, project=project, gpus=gpus, flavor=flavor)["id"])
    api.set_job(job_id, state="running", attempt=1, flavor_used=flavor)
    with write_session(api.engine) as s:
        s.add(
            Allocation(job_id=job_id, attempt=1, node=node, flavor=flavor, gpus=gpus, start=START)
        )
    return job_id


def test_reports_add_their_gpu_seconds_per_minute_flavor_and_sector(api: Api) -> None:
    academic = running(api, "alice", "p1", "h-0", 2, "H100")  # p1: academia
    industrial = running(api, "carol", "p2", "h-1", 1, "H100")  # p2: industry
    half_used = running(api, "erin", "p3", "a-0", 2, "A100")  # p3: academia; uses one GPU
    h0, h1, a0 = Agent(api, "h-0"), Agent(api, "h-1"), Agent(api, "a-0")
    t = (api.clock.advance(120) // 60) * 60 + 1  # a minute's first second, after START
    minute = int(t // 60)

    def h0_at(seq: int, at: float) -> dict[str, Any]:
        return report(
            seq,
            at,
            gpu(0, jobs=[(academic, 1)], util_gpu_pct=100.0),
            gpu(1, jobs=[(academic, 1)], util_gpu_pct=0.0),
            gpu(2, util_gpu_pct=90.0),  # no job of the pool's: counts for nobody
        )

    h0.ok(h0_at(1, t))
    h1.ok(report(1, t, gpu(0, jobs=[(industrial, 1)], util_gpu_pct=50.0)))
    a0.ok(report(1, t, gpu(0, jobs=[(half_used, 1)], util_gpu_pct=80.0)))
    assert minutes(api.engine) == {}  # one report per node: no interval yet

    h0.ok(h0_at(2, t + 10))
    h1.ok(report(2, t + 10, gpu(0, jobs=[(industrial, 1)], util_gpu_pct=50.0)))
    a0.ok(report(2, t + 10, gpu(0, jobs=[(half_used, 1)], util_gpu_pct=80.0)))
    h0.ok(h0_at(3, t + 20))  # another transaction adds to the same minute's row
    h0.ok(h0_at(4, t + 70))  # 50 s more, in the next minute

    assert minutes(api.engine) == {
        # 2 GPUs x 20 s, one at 100 %, one idle
        (minute, "H100", "academia"): sums(40.0, busy=20.0, idle=20.0),
        (minute, "H100", "industry"): sums(10.0, busy=5.0, idle=0.0),
        # the used GPU at 80 % for 10 s; the one its processes do not use is idle
        (minute, "A100", "academia"): sums(20.0, busy=8.0, idle=10.0),
        (minute + 1, "H100", "academia"): sums(100.0, busy=50.0, idle=50.0),
    }
    # The minutes add up to what the jobs' usage says.
    with read_session(api.engine) as s:
        usage = s.execute(
            select(func.sum(JobUsage.gpu_s), func.sum(JobUsage.idle_gpu_s))  # type: ignore[arg-type]
        ).one()
        stored = s.execute(select(func.sum(UM.c.gpu_s), func.sum(UM.c.idle_gpu_s))).one()
    assert tuple(stored) == pytest.approx(tuple(usage))


def test_a_resent_report_adds_nothing_to_the_minutes(api: Api) -> None:
    job = running(api, "alice", "p1", "h-0", 1, "H100")
    agent = Agent(api, "h-0")
    t = (api.clock.advance(120) // 60) * 60 + 1
    first, second = (report(n, t + 10 * (n - 1), gpu(0, jobs=[(job, 1)])) for n in (1, 2))
    agent.ok(first, second)
    before = minutes(api.engine)
    assert agent.ok(second)["duplicates"] == 1
    assert (
        minutes(api.engine)
        == before
        == {(int(t // 60), "H100", "academia"): sums(10.0, busy=5.0, idle=0.0)}
    )


def test_utilization_older_than_the_days_kept_is_pruned(api: Api) -> None:
    days = api.pool.settings.telemetry_history_days
    now_minute = int(api.clock.now() // 60)
    old = now_minute - int(days * 1440) - 5
    with write_session(api.engine) as s:
        for minute in (old, now_minute - 1):
            s.add(UtilizationMinute(minute=minute, flavor="H100", sector="", capacity=16))
    api.pool.telemetry.prune_history()
    assert list(minutes(api.engine)) == [(now_minute - 1, "H100", "")]


# --- the loop's side ---------------------------------------------------------------------------


def set_node(engine: Engine, name: str, state: str) -> None:
    with write_session(engine) as s:
        node = s.get(Node, name)
        assert node is not None
        node.state = state
        s.add(node)


def test_the_leader_records_allocated_per_sector_and_capacity_once_a_minute(
    rows: PoolRows, live: Live, clock: ManualClock
) -> None:
    rows.pool(nodes=3)  # h1 h2 h3, 8 x H100 each; sector "research"
    rows._add(Flavor(name="A100"), Sector(name="industry"))
    rows.node("a1", gpus=4, flavor="A100")
    set_node(rows.engine, "h3", "down")  # not in service: no capacity
    set_node(rows.engine, "a1", "draining")  # in service: its GPUs count
    rows.project("r", guaranteed=16)
    rows.project("i", guaranteed=8, sector="industry")
    rows.job("r", gpus=2)
    rows.job("r", gpus=3)
    industrial = rows.job("i", gpus=4)
    clock.t = (clock.now() // 60) * 60 + 5
    minute = int(clock.now() // 60)
    live.tick()
    assert minutes(rows.engine) == {
        (minute, "A100", ""): sums(0, 0, 0, capacity=4),
        (minute, "H100", ""): sums(0, 0, 0, capacity=16),
        (minute, "H100", "industry"): sums(0, 0, 0, allocated=4),
        (minute, "H100", "research"): sums(0, 0, 0, allocated=5),
    }

    # Within the minute, the next ticks sample nothing again.
    live.dispatcher.finish(str(industrial), 1)
    clock.advance(10)
    live.tick()
    assert minutes(rows.engine)[(minute, "H100", "industry")]["allocated"] == 4

    clock.advance(60)
    set_node(rows.engine, "h3", "up")
    live.tick()
    later = {k: v for k, v in minutes(rows.engine).items() if k[0] == minute + 1}
    assert later == {
        (minute + 1, "A100", ""): sums(0, 0, 0, capacity=4),
        (minute + 1, "H100", ""): sums(0, 0, 0, capacity=24),
        (minute + 1, "H100", "research"): sums(0, 0, 0, allocated=5),
    }


def test_a_new_leader_samples_its_minute_anew(
    rows: PoolRows, live: Live, clock: ManualClock
) -> None:
    rows.pool(nodes=1)
    rows.project("r", guaranteed=8)
    job = rows.job("r", gpus=2)
    clock.t = (clock.now() // 60) * 60 + 5
    minute = int(clock.now() // 60)
    live.tick()
    live.dispatcher.finish(str(job), 1)
    clock.advance(10)
    live.tick()  # the job's end is recorded; the minute was sampled already
    assert minutes(rows.engine)[(minute, "H100", "research")]["allocated"] == 2
    live.new_loop().tick()  # another leader, the same minute: nothing is allocated now
    assert minutes(rows.engine)[(minute, "H100", "research")]["allocated"] == 0


def test_telemetry_and_the_sample_share_a_row(rows: PoolRows, engine: Engine) -> None:
    """The agents' sums and the loop's allocated/capacity land on the same rows without
    overwriting each other, in either order."""
    from web.services.telemetry import upsert

    keys = ("minute", "flavor", "sector")
    with write_session(engine) as s:
        upsert(
            s,
            UM,
            [{"minute": 5, "flavor": "H100", "sector": "x", "gpu_s": 60.0}],
            keys,
            add=("gpu_s",),
        )
        upsert(s, UM, [{"minute": 5, "flavor": "H100", "sector": "x", "allocated": 3}], keys)
        upsert(
            s,
            UM,
            [{"minute": 5, "flavor": "H100", "sector": "x", "gpu_s": 30.0}],
            keys,
            add=("gpu_s",),
        )
    assert minutes(engine) == {(5, "H100", "x"): sums(90.0, 0, 0, allocated=3)}


# --- reading back ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("span_s", "bucket"),
    [(600, 1), (3600, 1), (5 * 3600, 1), (6 * 3600, 2), (86400, 5), (7 * 86400, 60)],
)
def test_buckets_keep_a_chart_within_300_points(span_s: float, bucket: int) -> None:
    assert bucket_minutes(span_s) == bucket
    assert span_s / 60 / bucket <= utilization.MAX_POINTS


def add_minute(engine: Engine, minute: int, flavor: str, sector: str, **values: float) -> None:
    with write_session(engine) as s:
        s.add(UtilizationMinute(minute=minute, flavor=flavor, sector=sector, **values))


def points(found: list[utilization.UtilizationPoint]) -> list[tuple[Any, ...]]:
    return [(p.at, p.allocated, p.busy, p.idle, p.capacity) for p in found]


def test_the_overview_averages_each_bucket(engine: Engine) -> None:
    base = 28_000_000  # a minute; a multiple of 2 and 5 (buckets start at multiples)
    for i in range(4):
        add_minute(engine, base + i, "H100", "", capacity=16)
        add_minute(engine, base + i, "A100", "", capacity=8)
        add_minute(
            engine, base + i, "H100", "academia", allocated=2 + i, gpu_s=120.0, idle_gpu_s=60.0
        )
        add_minute(engine, base + i, "H100", "industry", allocated=4, gpu_s=240.0)
    # A minute the agents saw but the loop did not sample.
    add_minute(engine, base + 4, "A100", "academia", gpu_s=60.0, idle_gpu_s=60.0)
    since, until = base * 60.0, (base + 6 * 60) * 60.0  # 6 h: buckets of 2 minutes
    b0, b1, b2 = [(base + 2 * i) * 60.0 for i in range(3)]
    with read_session(engine) as s:
        found = utilization.overview(s, OPS, since, until)
        academic = utilization.overview(s, OPS, since, until, sector="academia")
        late = utilization.overview(s, OPS, since + 60, until + 60)
    assert found.bucket_s == 120
    assert points(found.whole) == [
        # minutes 0 and 1: allocated (2+4, 3+4), busy (1+4 GPUs), idle 1, capacity 16+8
        (b0, 6.5, 5.0, 1.0, 24.0),
        (b1, 8.5, 5.0, 1.0, 24.0),
        # the unsampled minute: no allocation known; idle 1 GPU for one of its 2 minutes
        (b2, None, 0.0, 0.5, None),
    ]
    assert list(found.flavors) == ["A100", "H100"]
    assert points(found.flavors["A100"]) == [
        (b0, 0.0, 0.0, 0.0, 8.0),
        (b1, 0.0, 0.0, 0.0, 8.0),
        (b2, None, 0.0, 0.5, None),
    ]
    assert points(found.flavors["H100"]) == [(b0, 6.5, 5.0, 1.0, 16.0), (b1, 8.5, 5.0, 1.0, 16.0)]
    assert found.sectors == {"academia": [(b0, 2.5), (b1, 4.5)], "industry": [(b0, 4.0), (b1, 4.0)]}
    # One sector: its GPUs, the capacity of all.
    assert points(academic.whole) == [
        (b0, 2.5, 1.0, 1.0, 24.0),
        (b1, 4.5, 1.0, 1.0, 24.0),
        (b2, None, 0.0, 0.5, None),
    ]
    assert academic.sectors == found.sectors
    # A bucket cut by the range's start averages over the minute it keeps.
    assert points(late.flavors["H100"])[0] == (b0, 7.0, 5.0, 1.0, 16.0)


def test_an_empty_range_has_no_points(engine: Engine) -> None:
    with read_session(engine) as s:
        found = utilization.overview(s, OPS, 0.0, 3600.0)
    assert (found.whole, found.flavors, found.sectors) == ([], {}, {})


def test_researchers_may_not_read_the_pool_s_utilization(engine: Engine) -> None:
    from web.services.errors import Forbidden

    with read_session(engine) as s, pytest.raises(Forbidden):
        utilization.overview(s, Principal("alice", Role.RESEARCHER), 0.0, 3600.0)
