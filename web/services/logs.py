"""A job's output, wherever its dispatcher keeps it: the one function the API's
GET /jobs/{id}/logs (and so `gpupool logs`) calls.

- `local`: the file the local dispatcher writes, data_dir/logs/JOB-ATTEMPT.log (on the
  machine the API runs on, as the jobs do).
- `ray`: Ray keeps each attempt's output on the node that ran it and hands it out through
  the Jobs API (`get_job_logs`), asked here with the pool's Ray address and token, without
  the scheduling loop.
- `simulated`, `none`: nothing runs, so there is no output.

Output is bytes, read from an `offset` (a follower asks for what came after what it has);
one answer holds at most MAX_CHUNK bytes. Each answer says which attempt it is of, where it
ends, how long the log is now, and whether that attempt is over (no more will come).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from web.db import read_session
from web.enums import FINAL_JOB_STATE_VALUES, JobState
from web.services.auth import Principal
from web.services.errors import NotFound, Unavailable
from web.services.jobs import get_job
from web.settings import Settings

MAX_CHUNK = 4 * 1024 * 1024
RUNNING_STATES = (JobState.ADMITTED.value, JobState.RUNNING.value)


@dataclass(frozen=True, slots=True)
class JobLogs:
    text: bytes  # from `offset` on, at most MAX_CHUNK bytes
    attempt: int  # the attempt these are of (0: the job has not been admitted yet)
    job_attempt: int  # the job's latest attempt
    state: str  # the job's state
    offset: int
    size: int  # the log's length now: more to read if offset + len(text) < size
    done: bool  # this attempt is over: its log will not grow

    @property
    def end(self) -> int:
        return self.offset + len(self.text)

    @property
    def final(self) -> bool:
        """The job has ended: no attempt will follow."""
        return self.state in FINAL_JOB_STATE_VALUES


def read_logs(
    engine: Engine,
    settings: Settings,
    asker: Principal,
    job_id: int,
    attempt: int | None = None,
    offset: int = 0,
) -> JobLogs:
    """The output of attempt `attempt` (default: the latest) of a job the asker may see
    (NotFound otherwise, as for GET /jobs/{id}), from byte `offset`. Unavailable if the
    dispatcher that keeps it cannot be asked now."""
    # The job is read first and the log after, in no transaction: a log read once the job
    # has ended is complete.
    with read_session(engine) as session:
        job = get_job(session, asker, job_id)
        job_attempt, state = job.attempt, job.state
    number = job_attempt if attempt is None else attempt
    if attempt is not None and not 1 <= attempt <= job_attempt:
        had = f"it has had {job_attempt}" if job_attempt else "it has not been admitted yet"
        raise NotFound(f"job {job_id} has no attempt {attempt} ({had})", field="attempt")
    done = number < job_attempt or (number > 0 and state not in RUNNING_STATES)
    data = b"" if number == 0 else _read(settings, job_id, number, state in RUNNING_STATES)
    chunk = data[offset : offset + MAX_CHUNK]
    return JobLogs(chunk, number, job_attempt, state, offset, len(data), done)


def _read(settings: Settings, job_id: int, attempt: int, active: bool) -> bytes:
    name = settings.dispatcher
    if name == "local":
        from scheduler.runtime.local import log_file

        try:
            return log_file(settings.data_dir / "logs", str(job_id), attempt).read_bytes()
        except FileNotFoundError:
            return b""  # not started yet, or its start failed
        except OSError as err:
            raise Unavailable(f"cannot read the log of job {job_id}: {err.strerror}") from err
    if name == "ray":
        from scheduler.runtime.ports import DispatchError
        from scheduler.runtime.ray_dispatcher import UnknownRayJob, auth_token, job_logs

        token = auth_token(settings.ray_token.get_secret_value())
        try:
            return job_logs(settings.ray_address, token, f"{job_id}-{attempt}").encode()
        except UnknownRayJob as err:
            if active:
                return b""  # admitted, its start not sent to Ray yet
            raise NotFound(
                f"Ray has no logs of job {job_id} attempt {attempt} (it never started, it "
                f"ended more than {settings.ray_keep_ended_days:g} days ago, or the Ray "
                "cluster was restarted since)",
                field="job",
            ) from err
        except DispatchError as err:
            raise Unavailable(f"the job's logs are in Ray, which cannot answer: {err}") from err
    raise NotFound(f"job {job_id} has no logs: the '{name}' dispatcher runs nothing", field="job")
