"""At most so many at once of something costly, for requests anyone can make: verifying a
statement holds about 8 times its size in memory, so a few at once, not as many as callers
send."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from web.services.errors import Busy


class Slots:
    """`count` slots; a caller waits for one at most `wait_s`, then is told to come back."""

    def __init__(self, count: int, wait_s: float, what: str) -> None:
        self._free = threading.BoundedSemaphore(count)
        self.count, self.wait_s, self.what = count, wait_s, what

    @contextmanager
    def held(self) -> Iterator[None]:
        """One slot while the block runs (call it from a worker thread: it blocks)."""
        if not self._free.acquire(timeout=self.wait_s):
            raise Busy(
                f"{self.count} {self.what} are running already; try again shortly",
                retry_after_s=max(1, math.ceil(self.wait_s)),
            )
        try:
            yield
        finally:
            self._free.release()
