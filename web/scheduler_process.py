"""The scheduling loop in its own process, beside the API's.

`gpupool serve` runs the API (uvicorn) in the main process and the loop here, so that the
loop's work (reading a snapshot, planning) never holds the API's interpreter lock: the two
use two cores. The API wakes the loop through a shared event when a job arrives. The loop
process exits when its parent dies, even by SIGKILL (it watches its parent's pid).
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.synchronize import Event
from typing import Any

from scheduler.runtime.clock import SystemClock
from scheduler.runtime.ports import Clock, Dispatcher
from web.pool import build_pool
from web.settings import DISPATCHERS, Settings

log = logging.getLogger("gpupool.scheduler")


def make_dispatcher(name: str, settings: Settings, clock: Clock) -> Dispatcher:
    if name == "local":
        from scheduler.runtime.local import LocalProcessDispatcher

        return LocalProcessDispatcher(clock, settings.data_dir / "logs")
    if name == "ray":
        from scheduler.runtime.ray_dispatcher import RayDispatcher, auth_token

        # Nothing is asked of Ray here: an unreachable or bad address is a warning of the
        # loop's each tick (submissions queue) until Ray answers.
        return RayDispatcher(
            clock,
            settings.ray_address,
            token=auth_token(settings.ray_token.get_secret_value()),
            poll_s=settings.ray_poll_s,
            grace_s=settings.grace_period_s,
            keep_ended_s=settings.ray_keep_ended_days * 86400.0,
        )
    if name in ("simulated", "none"):
        from scheduler.runtime.fake import InProcessDispatcher

        run_s = None if name == "none" else settings.simulated_run_s
        return InProcessDispatcher(clock, run_for=lambda order: run_s)
    raise ValueError(f"unknown dispatcher {name!r}; one of: {', '.join(DISPATCHERS)}")


class SchedulerProcess:
    """Start, wake and stop the loop process."""

    def __init__(self, settings: Settings, dispatcher: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.wake_event: Event = context.Event()
        self._leading = context.Value("b", 0)  # the loop process says whether it leads
        self.process = context.Process(
            target=_main,
            args=(settings.model_dump(), dispatcher, self.wake_event, self._leading, os.getpid()),
            name="gpupool-scheduler",
            daemon=True,
        )

    def start(self) -> None:
        self.process.start()

    def wake(self) -> None:
        self.wake_event.set()

    def leading(self) -> bool:
        return self.process.is_alive() and bool(self._leading.value)

    def stop(self, timeout: float = 30) -> None:
        if self.process.is_alive():
            self.process.terminate()  # SIGTERM: the loop finishes its tick and lets go
            self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()


def settle_garbage_collector() -> None:
    """Move what start-up loaded (modules, metadata, the app) out of the collector's sight,
    and make full collections ten times rarer.

    A long-running server otherwise rescans those million objects in every full collection:
    measured here, pauses up to 95 ms that set the API's p99 latency. With them frozen, what
    is left is small, so Python's rule (a full pass once the objects that survived grow by a
    quarter) fired several times a second under agents' reports; the third threshold at 100
    instead of 10 took `bench ingest` from about 1,950 to 2,050-2,180 reports/s."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(700, 10, 100)


def _main(
    settings_data: dict[str, Any], dispatcher: str, wake: Event, leading: Any, parent: int
) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings(**settings_data)
    clock = SystemClock()
    pool = build_pool(settings, make_dispatcher(dispatcher, settings, clock), clock, wake=wake)
    loop = pool.loop
    assert loop is not None

    def stop_loop(*_: object) -> None:
        # Not loop.stop() here: the handler runs in the thread that may be waiting on the
        # wake event, and setting a multiprocessing Event from within its own wait()
        # deadlocks (set() waits for the sleepers to wake).
        threading.Thread(target=loop.stop, name="stop", daemon=True).start()

    signal.signal(signal.SIGTERM, stop_loop)
    signal.signal(signal.SIGINT, stop_loop)

    def watch_parent() -> None:
        while os.getppid() == parent:
            leading.value = int(loop.leading)
            time.sleep(0.5)
        log.warning("the API process is gone; the scheduler stops")
        loop.stop()

    threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()
    settle_garbage_collector()
    try:
        loop.run()
    finally:
        close = getattr(pool.loop.dispatcher if pool.loop else None, "close", None)
        if close is not None:
            close()
        pool.engine.dispose()
