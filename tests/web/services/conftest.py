"""The services' tests through the live loop: the runtime tests' pool rows and loop over an
in-process dispatcher (tests/scheduler/runtime/conftest.py), on a manual clock these tests
call `clock`."""

from __future__ import annotations

import pytest

from tests.conftest import ManualClock
from tests.scheduler.runtime.conftest import live, manual_clock, rows

__all__ = ["clock", "live", "manual_clock", "rows"]  # the fixtures these tests take


@pytest.fixture
def clock(manual_clock: ManualClock) -> ManualClock:
    return manual_clock
