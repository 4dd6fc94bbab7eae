"""The control plane's settings: one class, read from the environment (prefix GPUPOOL_) or
given explicitly, never at import time."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# What runs admitted jobs: processes on this machine; Ray jobs on a Ray cluster; nothing,
# each job "ending" after simulated_run_s; nothing at all (admission only).
DISPATCHERS = ("local", "ray", "simulated", "none")


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "gpupool"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GPUPOOL_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    # Empty: a SQLite file in data_dir. Production: postgresql+psycopg://user:pass@host/db
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8000

    policy: str = "gpupool"  # gpupool | static | fifo
    loop_interval_s: float = 1.0  # the scheduling loop runs at least this often ...
    loop_min_gap_s: float = 0.1  # ... and at most this often, however fast jobs arrive
    grace_period_s: float = 120.0  # preempted jobs get this long to stop
    default_max_runtime_s: float = 4 * 3600.0  # for projects that set none
    max_array_size: int = 1000
    max_request_bytes: int = 64 * 1024
    max_report_bytes: int = 8 * 1024 * 1024  # a node agent's batch of reports
    # The "simulated" dispatcher pretends each job runs this long (None: until cancelled).
    simulated_run_s: float | None = None
    # A standby loop checks for leadership this often.
    leader_poll_s: float = 1.0

    # What runs admitted jobs (one of DISPATCHERS; `serve --dispatcher` sets it). The API
    # reads jobs' logs from it too.
    dispatcher: str = "local"
    # The Ray dispatcher: the Ray dashboard's address (the Jobs API, http://HEAD:8265; empty:
    # this machine's, http://127.0.0.1:8265) and the cluster's auth token (`ray
    # get-auth-token`; empty: where Ray's own tools look, RAY_AUTH_TOKEN, the file named by
    # RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token). Ray is asked about its jobs this often.
    ray_address: str = ""
    ray_token: SecretStr = SecretStr("")
    ray_poll_s: float = 0.25
    # Ray keeps ended jobs' records (and so their logs) this long; older ones are deleted,
    # or every poll of Ray would read the cluster's whole history.
    ray_keep_ended_days: float = Field(default=7.0, gt=0)

    # Node agents: how often they should report; a node whose agent has reported before
    # and then stays silent this long goes down (its jobs are requeued); a GPU's time
    # between two reports counts towards its jobs' usage up to telemetry_max_gap_s; a
    # report may be this far ahead of the server's clock; per-minute history is kept
    # this many days.
    agent_interval_s: float = Field(default=5.0, gt=0)
    agent_heartbeat_timeout_s: float = Field(default=60.0, gt=0)
    telemetry_max_gap_s: float = Field(default=60.0, gt=0)
    telemetry_max_future_s: float = Field(default=300.0, ge=0)
    telemetry_history_days: float = Field(default=30.0, gt=0)
    # A GPU a job holds is idle under this utilization (usage, statements, /metrics).
    idle_util_pct: float = Field(default=5.0, ge=0, le=100)
    # A running job whose GPUs have all been idle this long is flagged (API, queue, /metrics).
    idle_flag_after_s: float = Field(default=600.0, ge=0)

    # Metering (web/services/metering.py): borrowed (preemptible) GPU-hours cost this share
    # of the rate; this share of a preempted or lost attempt's charge is refunded; lenders
    # earn this share of the credits of the GPU-hours others borrowed from their guarantee.
    borrowed_credit_rate: float = Field(default=0.5, ge=0, le=1)
    refund_cut_short_share: float = Field(default=1.0, ge=0, le=1)
    lending_reward_share: float = Field(default=0.25, ge=0, le=1)

    # Statements (web/services/statements.py) are signed with the pool's Ed25519 key, kept
    # in this file (None: data_dir/statement-key.pem), made on first start, owner-only.
    # Every server of one pool must share it. A statement sent to be verified (API and
    # portal, no account needed) may be this large: it lists every ledger entry it is built
    # from, about 270 bytes each and 110 more per job, so 40 MiB holds the benchmark's
    # statement of 100,000 jobs (38.0 MB); verifying one takes about 8 times its size in
    # memory. Larger ones verify offline (gpupool verify FILE --public-key KEY).
    statement_key_file: Path | None = None
    max_statement_bytes: int = Field(default=40 * 1024 * 1024, gt=0)
    # Verifications at once per server (each holds up to 8 times its statement in memory:
    # about 320 MB at the limit); a request waits this long for its turn, then gets a 503
    # with Retry-After.
    max_verifications: int = Field(default=2, ge=1, le=64)
    verification_wait_s: float = Field(default=20.0, ge=0, le=600)

    # The portal: sessions last this long after sign-in; cookies are sent over HTTPS only
    # when the portal is served over HTTPS (set it behind a TLS proxy); times are shown in
    # this time zone.
    portal_session_hours: float = Field(default=12.0, gt=0, le=24 * 90)
    portal_secure_cookies: bool = False
    timezone: str = "Asia/Seoul"

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # Users write postgresql://; we drive it with psycopg 3.
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url.split("://", 1)[1]
            return url
        return f"sqlite:///{self.data_dir / 'gpupool.db'}"

    @property
    def statement_key_path(self) -> Path:
        return self.statement_key_file or self.data_dir / "statement-key.pem"

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")
