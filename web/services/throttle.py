"""Slowing down password guessing: after a few failed sign-ins, per address and per account,
each further try waits, the wait doubling with each failure up to a cap, and failures are
forgotten one by one while none come.

- Per address (a client's IP; an IPv6 client's /64, which one machine usually holds
  whole): an attacker's address waits up to 5 minutes per try, whatever names it tries.
- Per account (the name typed, whether or not such a user exists, so the answer tells
  nobody which do): spreading guesses at one account over many addresses is slowed too,
  but its cap is short (1 minute), so an attacker can keep a real user out for no longer.
  An address the user has signed in from before (here, within `trust_s`) is not held by
  the account's count at all, only by its own: the usual attack on one account cannot
  lock its owner out of their usual place.
- A success from an address clears that address's failures.

The state is in memory, per server process: a pool of several replicas allows each its
own count (the limits multiply by the number of replicas), and a restart forgets it.
Guesses stay slow either way: beyond the first few, one per `forget_s` per address and
per account and replica at the most.
"""

from __future__ import annotations

import ipaddress
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from scheduler.runtime.ports import Clock
from web.services.errors import ServiceError, TooManyAttempts, Unauthenticated

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    free: int  # failures allowed before any wait
    first_wait_s: float  # the wait after the first failure past `free`; doubles with each
    max_wait_s: float  # the cap
    forget_s: float  # one failure forgotten per this many seconds without one


PER_ADDRESS = Backoff(free=5, first_wait_s=1.0, max_wait_s=300.0, forget_s=300.0)
PER_ACCOUNT = Backoff(free=5, first_wait_s=1.0, max_wait_s=60.0, forget_s=60.0)
TRUST_S = 30 * 86400.0  # how long a successful sign-in vouches for its address
MAX_ENTRIES = 100_000  # per kind of count; the least recently touched go first
_MAX_KEY_CHARS = 100  # user names are at most 63: a longer name is no user's anyway


@dataclass
class _Count:
    failures: float
    at: float  # when `failures` was last brought up to date
    blocked_until: float


class _Counts:
    """Failures per key under one Backoff, decaying, bounded in number."""

    def __init__(self, backoff: Backoff, max_entries: int) -> None:
        self.backoff, self.max_entries = backoff, max_entries
        self._counts: OrderedDict[str, _Count] = OrderedDict()

    def wait_s(self, key: str, now: float) -> float:
        count = self._counts.get(key)
        return 0.0 if count is None else max(0.0, count.blocked_until - now)

    def fail(self, key: str, now: float) -> None:
        count = self._counts.pop(key, None) or _Count(0.0, now, now)
        quiet = max(0.0, now - count.at)
        count.failures = max(0.0, count.failures - quiet / self.backoff.forget_s) + 1.0
        count.at = now
        # A failure partly forgotten still counts whole (the 1e-9: float noise).
        past_free = math.ceil(count.failures - 1e-9) - self.backoff.free
        if past_free > 0:
            wait = self.backoff.first_wait_s * 2.0 ** min(past_free - 1, 60)
            count.blocked_until = now + min(self.backoff.max_wait_s, wait)
        self._counts[key] = count
        while len(self._counts) > self.max_entries:
            self._counts.popitem(last=False)

    def clear(self, key: str) -> None:
        self._counts.pop(key, None)


class SignInThrottle:
    """Ask `wait_s` before checking a password (refuse the try if it is above 0, without
    checking it), then tell `failed` or `succeeded`; or let `attempt` do all three."""

    def __init__(
        self,
        clock: Clock,
        per_address: Backoff = PER_ADDRESS,
        per_account: Backoff = PER_ACCOUNT,
        trust_s: float = TRUST_S,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.clock, self.trust_s = clock, trust_s
        self._addresses = _Counts(per_address, max_entries)
        self._accounts = _Counts(per_account, max_entries)
        self._trusted: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._max_entries = max_entries
        self._lock = threading.Lock()  # sign-ins are checked in the server's worker threads

    def attempt(
        self,
        account: str | None,
        address: str | None,
        check: Callable[[], T],
        wrong: tuple[type[ServiceError], ...] = (Unauthenticated,),
        field: str = "",
    ) -> T:
        """`check()` (which checks a password) unless this account or address must wait
        (TooManyAttempts, naming `field`, and `check` is not called); a `wrong` error
        from it counts as a failure, an answer as a success."""
        wait = self.wait_s(account, address)
        if wait > 0:
            raise TooManyAttempts(wait, field=field)
        try:
            answer = check()
        except wrong:
            self.failed(account, address)
            raise
        self.succeeded(account, address)
        return answer

    def wait_s(self, account: str | None, address: str | None) -> int:
        """Whole seconds to wait before this try is allowed (0: now). `account` None: a
        try that names no account (an API token)."""
        now = self.clock.now()
        where, who = _address_key(address), _account_key(account)
        with self._lock:
            wait = self._addresses.wait_s(where, now)
            if who is not None and not self._trusts(who, where, now):
                wait = max(wait, self._accounts.wait_s(who, now))
        return math.ceil(wait)

    def failed(self, account: str | None, address: str | None) -> None:
        now = self.clock.now()
        where, who = _address_key(address), _account_key(account)
        with self._lock:
            self._addresses.fail(where, now)
            if who is not None:
                self._accounts.fail(who, now)

    def succeeded(self, account: str | None, address: str | None) -> None:
        """A right password (or token) from this address: its failures are cleared, and
        it is vouched for as this account's for `trust_s`. The account's own count is
        kept: the owner signing in must not give a distributed guesser fresh tries."""
        now = self.clock.now()
        where, who = _address_key(address), _account_key(account)
        with self._lock:
            self._addresses.clear(where)
            if who is not None:
                self._trusted.pop((who, where), None)
                self._trusted[(who, where)] = now + self.trust_s
                while len(self._trusted) > self._max_entries:
                    self._trusted.popitem(last=False)

    def _trusts(self, who: str, where: str, now: float) -> bool:
        until = self._trusted.get((who, where))
        return until is not None and until > now


def _account_key(account: str | None) -> str | None:
    return None if account is None else account[:_MAX_KEY_CHARS]


def _address_key(address: str | None) -> str:
    """An IPv4 address as it is; an IPv6 one as its /64 (one machine often holds many of
    its addresses); anything else (a test client's name) as given."""
    if not address:
        return "?"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address[:_MAX_KEY_CHARS]
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)
