"""Slots: at most so many at once; a caller that waits too long is told to come back."""

from __future__ import annotations

import threading

import pytest

from web.services.errors import Busy
from web.services.slots import Slots


def test_a_caller_past_the_count_waits_then_is_told_when_to_come_back() -> None:
    slots = Slots(2, wait_s=0.05, what="verifications")
    with slots.held(), slots.held(), pytest.raises(Busy) as refused, slots.held():
        pass
    assert refused.value.retry_after_s == 1
    assert "2 verifications are running already" in refused.value.message
    with slots.held():  # both given back
        pass


def test_a_waiting_caller_gets_the_slot_another_gives_back() -> None:
    slots = Slots(1, wait_s=5, what="verifications")
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with slots.held():
            entered.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait(5)
    threading.Timer(0.05, release.set).start()
    with slots.held():  # waits for the holder, then runs
        assert release.is_set()
    holder.join()


def test_a_slot_is_given_back_when_the_block_raises() -> None:
    slots = Slots(1, wait_s=0.01, what="verifications")
    with pytest.raises(ValueError), slots.held():
        raise ValueError("inside")
    with slots.held():
        pass
