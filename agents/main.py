"""The agent's run: read the GPUs, attribute their processes to jobs, queue the report, and
let the reporter's thread send it; once per interval.

Polls keep their cadence: the next one is due one interval after the previous one was due
(a slow read does not shift the rest), and a poll missed altogether (the machine slept) is
skipped, not made up. The interval is the settings' until the server's ack asks for another.

Each run draws a random `boot` and numbers its reports seq = 1, 2, ... (see agents/schema.py):
a restarted agent is a new boot, so the server never confuses its reports with the old ones.

Stopping: `wait` (how the loop sleeps) returns True when the agent must stop; the CLI's waits
for SIGTERM or SIGINT. Then no new poll starts, the reporter makes one last attempt to deliver
what is waiting (within a few seconds) and the run returns.
"""

from __future__ import annotations

import logging
import math
import secrets
import signal
import threading
import time
from collections.abc import Callable

from agents.attribution import Attributor
from agents.reader import GpuReader
from agents.reporter import Reporter, ReporterStats
from agents.schema import NodeReport
from agents.settings import AgentSettings

log = logging.getLogger(__name__)

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


class Agent:
    """One poll: the GPUs as a numbered NodeReport of this run."""

    def __init__(
        self,
        reader: GpuReader,
        attributor: Attributor,
        *,
        boot: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.reader = reader
        self.attributor = attributor
        self.boot = boot or secrets.token_hex(8)
        self._clock = clock
        self._seq = 0

    def poll(self) -> NodeReport:
        at = self._clock()
        gpus = self.attributor.attribute(self.reader.read())
        self._seq += 1
        return NodeReport(
            boot=self.boot,
            seq=self._seq,
            at=at,
            reader=self.reader.kind,
            driver_version=self.reader.driver_version(),
            gpus=gpus,
        )


def make_reader(settings: AgentSettings) -> GpuReader:
    """The simulated reader when asked for, else NVML (ReaderUnavailable if it cannot start)."""
    if settings.simulated_gpus:
        from agents.simulated import SimulatedReader

        return SimulatedReader(settings.simulated_gpus, settings.node)
    from agents.nvml import NvmlReader

    return NvmlReader()


def make_reporter(settings: AgentSettings) -> Reporter:
    return Reporter(
        settings.server,
        settings.token.get_secret_value(),
        settings.node,
        buffer_size=settings.buffer_size,
        batch_size=settings.batch_size,
        timeout_s=settings.timeout_s,
        retry_min_s=settings.retry_min_s,
        retry_max_s=settings.retry_max_s,
    )


def poll_loop(
    agent: Agent,
    reporter: Reporter,
    interval_s: float,
    wait: Callable[[float], bool],
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """Poll and queue, once per interval, until wait() says stop."""
    due = monotonic()
    while True:
        reporter.add(agent.poll())
        interval = reporter.server_interval_s or interval_s
        due += interval
        now = monotonic()
        if due <= now:  # this poll ran past the next one's time: skip what was missed
            due += interval * math.ceil((now - due) / interval + 1e-9)
        if wait(due - now):
            return


def run_agent(
    settings: AgentSettings, reader: GpuReader, wait: Callable[[float], bool]
) -> ReporterStats:
    """Run until wait() says stop; then deliver what is waiting, if the server lets us."""
    reporter = make_reporter(settings)
    agent = Agent(reader, Attributor())
    sender = threading.Thread(target=reporter.run, name="gpupool-agent-sender", daemon=True)
    sender.start()
    log.info(
        "node %s: reading GPUs through %s, reporting to %s every %g s (boot %s)",
        settings.node,
        reader.kind,
        settings.server,
        settings.interval_s,
        agent.boot,
    )
    try:
        poll_loop(agent, reporter, settings.interval_s, wait)
    finally:
        reporter.stop()
        sender.join()
        reporter.close()
        reader.close()
    stats = reporter.stats
    log.info(
        "stopped: %d report(s) delivered (%d duplicates), %d dropped (buffer full), "
        "%d rejected by the server, %d left undelivered",
        stats.delivered,
        stats.duplicates,
        stats.dropped_full,
        stats.rejected,
        reporter.pending(),
    )
    return stats


def wait_for_stop_signal() -> Callable[[float], bool]:
    """A wait that ends early on SIGTERM or SIGINT (and then says stop). Blocks those signals
    in this thread and in the threads it starts after this call, so that the wait, and
    nothing else, receives them (no handler runs at an awkward moment)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)

    def wait(seconds: float) -> bool:
        received = signal.sigtimedwait(STOP_SIGNALS, max(0.0, seconds))
        if received is None:
            return False
        log.info("%s: stopping", signal.Signals(received.si_signo).name)
        return True

    return wait
