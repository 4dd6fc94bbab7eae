"""Sign-in throttling: waits that double past a few free failures, capped, forgotten while
none come; a success clears its address; an attacker cannot keep the owner out for long."""

from __future__ import annotations

import pytest

from tests.conftest import ManualClock
from web.services.errors import TooManyAttempts, Unauthenticated
from web.services.throttle import PER_ACCOUNT, PER_ADDRESS, SignInThrottle


def fail_until_blocked(throttle: SignInThrottle, account: str | None, address: str) -> int:
    """Fail once more whenever allowed, waiting out each wait; the last wait."""
    while (wait := throttle.wait_s(account, address)) == 0:
        throttle.failed(account, address)
    return wait


def test_the_first_failures_are_free_then_each_wait_doubles_up_to_the_cap() -> None:
    clock = ManualClock()
    throttle = SignInThrottle(clock)
    for _ in range(PER_ADDRESS.free):
        assert throttle.wait_s(None, "10.0.0.1") == 0
        throttle.failed(None, "10.0.0.1")
    waits = []
    for _ in range(20):
        throttle.failed(None, "10.0.0.1")
        waits.append(throttle.wait_s(None, "10.0.0.1"))
        clock.advance(waits[-1])
    assert waits[:5] == [1, 2, 4, 8, 16]
    assert max(waits) == PER_ADDRESS.max_wait_s == waits[-1]
    assert throttle.wait_s(None, "10.0.0.2") == 0  # another address is not held


def test_a_refused_try_is_not_counted_and_the_password_is_not_checked() -> None:
    clock = ManualClock()
    throttle = SignInThrottle(clock)
    fail_until_blocked(throttle, "alice", "10.0.0.1")
    checked = []
    for _ in range(20):
        with pytest.raises(TooManyAttempts) as refused:
            throttle.attempt("alice", "10.0.0.1", lambda: checked.append(1))
    assert checked == [] and refused.value.retry_after_s == 1
    clock.advance(1)
    assert throttle.attempt("alice", "10.0.0.1", lambda: "in") == "in"


def test_attempt_counts_only_the_wrong_password_errors() -> None:
    throttle = SignInThrottle(ManualClock())

    def wrong() -> None:
        raise Unauthenticated("wrong user name or password")

    for _ in range(PER_ADDRESS.free + 1):
        with pytest.raises(Unauthenticated):
            throttle.attempt("bob", "10.0.0.9", wrong)
    with pytest.raises(TooManyAttempts):
        throttle.attempt("bob", "10.0.0.9", wrong)


def test_failures_are_forgotten_one_per_quiet_interval() -> None:
    clock = ManualClock()
    throttle = SignInThrottle(clock)
    fail_until_blocked(throttle, None, "10.0.0.1")  # free + 1 failures
    clock.advance(2 * PER_ADDRESS.forget_s)  # two forgotten
    throttle.failed(None, "10.0.0.1")
    assert throttle.wait_s(None, "10.0.0.1") == 0  # back within the free ones
    clock.advance(10 * PER_ADDRESS.forget_s)
    for _ in range(PER_ADDRESS.free):
        throttle.failed(None, "10.0.0.1")
    assert throttle.wait_s(None, "10.0.0.1") == 0


def test_a_success_clears_its_address_but_not_the_account() -> None:
    clock = ManualClock()
    throttle = SignInThrottle(clock)
    fail_until_blocked(throttle, "alice", "10.0.0.1")
    clock.advance(1)
    throttle.succeeded("alice", "10.0.0.1")
    for _ in range(PER_ADDRESS.free):
        assert throttle.wait_s("carol", "10.0.0.1") == 0
        throttle.failed("carol", "10.0.0.1")
    # alice's own count stays: a guesser elsewhere gets no fresh tries from her success
    throttle.failed("alice", "10.9.9.9")
    assert throttle.wait_s("alice", "10.9.9.9") > 0


def test_a_distributed_attack_on_an_account_holds_its_owner_out_no_longer_than_the_cap() -> None:
    clock = ManualClock()
    throttle = SignInThrottle(clock)
    throttle.succeeded("alice", "192.0.2.7")  # her usual place
    for i in range(200):  # an attacker from ever new addresses, as fast as allowed
        address = f"203.0.113.{i % 250}"
        wait = throttle.wait_s("alice", address)
        if wait:
            clock.advance(wait)
        throttle.failed("alice", address)
        # from a new place, she never waits longer than the account's cap
        assert throttle.wait_s("alice", "198.51.100.1") <= PER_ACCOUNT.max_wait_s
        # from her usual place, not at all
        assert throttle.wait_s("alice", "192.0.2.7") == 0
    assert throttle.wait_s("alice", "198.51.100.1") == PER_ACCOUNT.max_wait_s


def test_one_machines_ipv6_addresses_count_as_one() -> None:
    throttle = SignInThrottle(ManualClock())
    for i in range(PER_ADDRESS.free + 1):
        throttle.failed(None, f"2001:db8:1:2::{i + 1:x}")
    assert throttle.wait_s(None, "2001:db8:1:2:ffff::1") > 0
    assert throttle.wait_s(None, "2001:db8:1:3::1") == 0
    for _ in range(PER_ADDRESS.free + 1):
        throttle.failed(None, "::ffff:10.1.1.1")
    assert throttle.wait_s(None, "10.1.1.1") > 0


def test_the_counts_kept_are_bounded() -> None:
    throttle = SignInThrottle(ManualClock(), max_entries=50)
    for i in range(1000):
        throttle.failed(f"name{i}", f"10.0.{i // 250}.{i % 250}")
    assert len(throttle._addresses._counts) == 50 and len(throttle._accounts._counts) == 50
