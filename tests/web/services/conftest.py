"""The services' tests through the live loop: a manual clock, the pool's rows, and the loop
over an in-process dispatcher (tests/scheduler/runtime/conftest.py builds them)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from scheduler.runtime.fake import InProcessDispatcher
from tests.conftest import ManualClock
from tests.scheduler.runtime.conftest import Live, PoolRows, make_live


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def rows(engine: Engine, clock: ManualClock) -> PoolRows:
    return PoolRows(engine, clock)


@pytest.fixture
def live(engine: Engine, clock: ManualClock) -> Live:
    return make_live(engine, clock, InProcessDispatcher(clock))
