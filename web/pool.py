"""The running control plane's parts, wired once from Settings: engine, clock, the
scheduling loop and its dispatcher. The API and the CLI's `serve` share this."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace

from sqlalchemy import Engine
from sqlmodel import Session

from scheduler.core import Policy
from scheduler.runtime.clock import SystemClock
from scheduler.runtime.loop import SchedulingLoop, WakeEvent
from scheduler.runtime.ports import Clock, Dispatcher
from web.db import make_engine, read_session
from web.services.auth import PrincipalCache
from web.services.intake import SubmissionIntake
from web.services.jobs import SubmitLimits
from web.services.leader import leadership_for
from web.services.metering import MeteringPolicy
from web.services.nodes import NodeTokenDirectory
from web.services.scheduling import DbDecisionSink, DbSnapshotSource
from web.services.slots import Slots
from web.services.telemetry import TelemetryIngest, TelemetryLimits
from web.services.throttle import SignInThrottle
from web.settings import Settings


@dataclass
class Pool:
    settings: Settings
    engine: Engine
    clock: Clock
    intake: SubmissionIntake
    telemetry: TelemetryIngest
    principals: PrincipalCache = field(default_factory=PrincipalCache)
    node_tokens: NodeTokenDirectory = field(default_factory=NodeTokenDirectory)
    loop: SchedulingLoop | None = None
    # Wakes a loop that runs elsewhere (its own process: see web/scheduler_process.py).
    waker: Callable[[], None] | None = None
    leader_probe: Callable[[], bool] | None = None
    # Failed password checks (the portal's sign-in, a wrong current password), by the clock.
    sign_ins: SignInThrottle = field(init=False, repr=False)
    # Statements being verified (API and portal, no account needed): a few at once.
    verifications: Slots = field(init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.sign_ins = SignInThrottle(self.clock)
        self.verifications = Slots(
            self.settings.max_verifications,
            self.settings.verification_wait_s,
            "statement verifications",
        )

    def read_session(self) -> AbstractContextManager[Session]:
        return read_session(self.engine)

    @property
    def submit_limits(self) -> SubmitLimits:
        return SubmitLimits(self.settings.default_max_runtime_s, self.settings.max_array_size)

    def start(self) -> None:
        self.intake.start()
        self.telemetry.start()
        self.start_loop()

    def stop(self) -> None:
        self.stop_loop()
        self.intake.stop()
        self.telemetry.stop()

    def identities_changed(self) -> None:
        """A token, role or membership changed: look callers up afresh."""
        self.principals.clear()
        self.node_tokens.clear()

    def sessions_ended(self) -> None:
        """Portal sessions were ended (a sign-out, a password set, a user deactivated or
        signed out everywhere): their cached lookups go at once on this server."""
        self.principals.clear()

    def pool_changed(self) -> None:
        """A project, quota or node changed: submissions check against fresh data."""
        self.intake.refresh()
        self.job_submitted()

    def start_loop(self) -> None:
        if self.loop is not None and self._thread is None:
            self._thread = threading.Thread(target=self.loop.run, name="gpupool-loop", daemon=True)
            self._thread.start()

    def stop_loop(self) -> None:
        if self.loop is not None and self._thread is not None:
            self.loop.stop()
            self._thread.join(timeout=30)
            self._thread = None

    def leading(self) -> bool:
        """Whether this server's scheduling loop is the one acting."""
        if self.loop is not None:
            return self.loop.leading
        return self.leader_probe is not None and self.leader_probe()

    def job_submitted(self) -> None:
        if self.loop is not None:
            self.loop.wake()
        elif self.waker is not None:
            self.waker()


def build_pool(
    settings: Settings,
    dispatcher: Dispatcher | None,
    clock: Clock | None = None,
    engine: Engine | None = None,
    wake: WakeEvent | None = None,
) -> Pool:
    """The pool's parts; with a dispatcher, a scheduling loop that uses it."""
    engine = engine or make_engine(settings)
    clock = clock or SystemClock()
    limits = SubmitLimits(settings.default_max_runtime_s, settings.max_array_size)
    pool = Pool(
        settings,
        engine,
        clock,
        SubmissionIntake(engine, limits, clock=clock.now),
        TelemetryIngest(engine, telemetry_limits(settings), clock=clock.now),
    )
    if dispatcher is not None:
        policy = replace(Policy.named(settings.policy), grace_period_s=settings.grace_period_s)
        pool.loop = SchedulingLoop(
            DbSnapshotSource(engine),
            DbDecisionSink(
                engine,
                settings.grace_period_s,
                policy.half_life_s,
                heartbeat_timeout_s=settings.agent_heartbeat_timeout_s,
                heartbeat_check_s=min(5.0, settings.agent_heartbeat_timeout_s / 3),
                metering=MeteringPolicy(
                    borrowed_rate=settings.borrowed_credit_rate,
                    refund_share=settings.refund_cut_short_share,
                    reward_share=settings.lending_reward_share,
                ),
            ),
            dispatcher,
            clock,
            policy,
            leadership_for(settings, engine),
            interval_s=settings.loop_interval_s,
            standby_poll_s=settings.leader_poll_s,
            wake_event=wake,
            min_gap_s=settings.loop_min_gap_s,
        )
    return pool


def telemetry_limits(settings: Settings) -> TelemetryLimits:
    return TelemetryLimits(
        interval_s=settings.agent_interval_s,
        max_gap_s=settings.telemetry_max_gap_s,
        max_future_s=settings.telemetry_max_future_s,
        history_days=settings.telemetry_history_days,
        idle_util_pct=settings.idle_util_pct,
    )
