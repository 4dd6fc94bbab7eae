"""A dispatcher that runs each admitted attempt as a Ray job, through the Ray Jobs API
(`JobSubmissionClient`, over the dashboard's HTTP address). Ray is imported on first use:
the rest of gpupool runs without it.

Node names. A GPU node tells Ray its gpupool name with one custom resource:

    ray start --address=HEAD:6379 --num-gpus=8 --resources='{"gpupool_node:gpu-03": 1}'

Every job and placement-group bundle asks for 0.001 of its node's `gpupool_node:<name>`,
which pins it there (so up to 1000 of them share a node; only the GPUs are counted for real).

One attempt, one Ray job, `submission_id` = StartOrder.key (job id + attempt): Ray refuses a
second job with the same id, so a resent start (a retry, a new leader) never runs an attempt
twice; that refusal is taken as success. The job's metadata marks it as gpupool's
(`gpupool: "1"`, with job id, attempt, project, user, flavor, nodes and max_runtime), which is
how a dispatcher started later finds it (`known()`).

Placement is exact:
- single node: the entrypoint itself holds the GPUs (`entrypoint_num_gpus`) and the node's pin
  (`entrypoint_resources`); Ray puts the assigned indices in CUDA_VISIBLE_DEVICES.
- several nodes: the entrypoint is a small launcher (Python, run by `python` on the node)
  pinned to the first piece's node and holding no GPUs. It creates a placement group with one
  bundle per piece (the piece's GPUs, `cpus_per_gpu` CPUs per GPU and the node's pin;
  strategy STRICT_SPREAD), waits until the whole group is reserved (gang: nothing of the job
  starts before every node's GPUs are held), then runs the job's entrypoint with
  GPUPOOL_PLACEMENT_GROUP (the group's name), GPUPOOL_RAY_NAMESPACE (its namespace; named
  groups are looked up in the caller's namespace) and GPUPOOL_PLACEMENT_GROUP_ID (its id in
  hex). The job puts its workers in the bundles:

      ray.init(namespace=os.environ["GPUPOOL_RAY_NAMESPACE"])
      pg = ray.util.get_placement_group(os.environ["GPUPOOL_PLACEMENT_GROUP"])
      Worker.options(num_gpus=4, scheduling_strategy=PlacementGroupSchedulingStrategy(
          pg, placement_group_bundle_index=i)).remote()

  The group belongs to the launcher's Ray driver, so Ray removes it when the job ends,
  however it ends (nothing to clean up, nothing leaks if the control plane dies). Creating
  the group inside the job, not in the control plane, keeps the control plane from being a
  Ray driver (a driver is killed when Ray's GCS stays unreachable, and its groups die with
  it) and `start()` from waiting: it submits and returns; `poll()` reports RUNNING once Ray
  runs the launcher AND the group is reserved (the state API), and gives up on a group not
  reserved within `pending_s` (LOST, requeued).

What gpupool cannot pin: Ray tasks and actors a single-node job starts outside its
entrypoint are scheduled by Ray anywhere, on GPUs the pool counts as free. Single-node jobs
use their GPUs from the entrypoint's processes (torchrun, accelerate, ...); multi-node jobs
put their workers in the group's bundles.

Env of every job (runtime_env env_vars, merged over the researcher's): GPUPOOL_JOB_ID,
GPUPOOL_PROJECT, GPUPOOL_ATTEMPT, GPUPOOL_NODES ("gpu-01:4,gpu-02:4"), and Ray's
RAY_JOB_STOP_WAIT_TIME_S (below). A researcher's CUDA_VISIBLE_DEVICES is dropped: it must not
move a job onto GPUs it was not given. working_dir, pip, ... are passed to Ray as given (a
local working_dir is uploaded from the machine the control plane runs on).

Lifecycle, from Ray's job status (PENDING -> RUNNING -> SUCCEEDED | FAILED | STOPPED):
RUNNING is reported when Ray runs it (and, multi-node, its group is reserved); SUCCEEDED;
FAILED with Ray's reason ("exit code 3; last output: ...", "runtime_env rejected: ...");
STOPPED after a stop order (or "stopped in Ray, not by gpupool": someone ran `ray job stop`);
LOST when Ray lost it:
- a node of the job left Ray: "node gpu-03 left" (missing from Ray's alive nodes in two
  refreshes in a row, or the job ended in Ray while one of its nodes was missing: a job
  whose entrypoint's node dies ends FAILED, "Job supervisor actor died");
- a job still PENDING whose node is not in Ray: "node gpu-09 is not in the Ray cluster";
- the job stayed PENDING (or its group unreserved) longer than `pending_s`: "Ray did not
  start it within ... s (...)" (the GPUs are held by something Ray runs outside gpupool,
  or a runtime_env installs for that long);
- Ray no longer knows the job (the Ray cluster was restarted).
A lost job is stopped in Ray first; one with nothing running is reported at once, one
running once Ray has ended it (or did not within `grace_s` + 30 s). The times of events
Ray timestamps (ends, and starts seen only after the end) are Ray's, when the clock is not
behind them (a wall clock). Each refresh is one list_jobs and one node list (the state API),
and one placement-group query per multi-node job waiting for its group.

Nodes: `sight_nodes()` lists Ray's live nodes every `nodes_every_s`; the loop takes a
registered node Ray lacks (in two lists in a row) out of service, down with ABSENT_REASON, so
no job is planned where Ray cannot run it, and returns it to service once Ray has it again.

Stop: `stop_job` sends SIGTERM to the entrypoint and all its processes; Ray itself sends
SIGKILL after RAY_JOB_STOP_WAIT_TIME_S (default 3 s), which its job supervisor reads from its
environment, i.e. from the job's runtime_env: every job gets `grace_s` there (the pool's
grace period) at start. A stop order's own grace_s cannot change it afterwards: a shorter one
(a stop resent after a restart) still waits `grace_s`. A job stopped while still PENDING in
Ray stays PENDING (Ray stops it the moment it would start) and is reported STOPPED at once.
The wall-time limit is the control plane's TIMEOUT stop, delivered like any stop.

Restart-safe: nothing is kept outside Ray. `known()` reads `list_jobs`, adopts every gpupool
job still PENDING or RUNNING (and any that ended within `keep_ended_s`, whose end the next
`poll()` reports: a job that ended while the control plane was down is then recorded as it
ended, not lost and run again), and returns their keys. Jobs keep running while the control
plane is down or restarting; a dispatcher never stops jobs on shutdown.

Ray's job records: Ray keeps every job it ever ran, and `list_jobs` returns them all, so
each refresh would grow with the cluster's age. The dispatcher deletes the records of its
own jobs that ended more than `keep_ended_s` ago (at most DELETE_PER_REFRESH per refresh):
their ends were recorded long before, and their logs (which Ray finds through the record)
are no longer served. A key is never submitted again once its attempt has ended, so a
deleted record cannot let an attempt run twice.

Faults: Ray unreachable (or refusing the token) -> DispatchError (not permanent) from
start/stop/known, and for `retry_s` after it every call fails at once instead of waiting
for a timeout again; poll() then returns what it has and never raises. A runtime_env the
SDK rejects before sending -> DispatchError(permanent=True, "runtime_env rejected: ...");
one Ray fails to set up (a pip package that does not exist) -> FAILED "runtime_env rejected:
...". Every HTTP call has a timeout (`timeout_s`).

Auth: Ray 2.60 turns token auth on for a cluster started by ray.init(), and for `ray start
--head` when RAY_AUTH_MODE=token or a token exists (RAY_AUTH_TOKEN, ~/.ray/auth_token);
RAY_AUTH_MODE=disabled turns it off. Pass the cluster's token (`ray get-auth-token`) as
`token`: it is sent as `Authorization: Bearer <token>`. Without one, the SDK sends a token
only if this process itself has RAY_AUTH_MODE=token (and RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH
or ~/.ray/auth_token). A refused token is a DispatchError like an unreachable Ray. Beware:
Ray's SDK prefers RAY_API_SERVER_ADDRESS or RAY_ADDRESS from the environment over the address
it is given (a warning is logged).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import shlex
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from scheduler.core.types import Piece
from scheduler.runtime.ports import (
    Clock,
    DispatchError,
    EventKind,
    JobEvent,
    NodeSighting,
    StartOrder,
    StopOrder,
)

if TYPE_CHECKING:
    from ray.job_submission import JobDetails, JobSubmissionClient
    from ray.util.state import StateApiClient

log = logging.getLogger("gpupool.ray")

DEFAULT_ADDRESS = "http://127.0.0.1:8265"  # the dashboard of a Ray head on this machine
PIN_PREFIX = "gpupool_node:"
PIN = 0.001  # of a node's gpupool_node:<name> per job or bundle
MARK = "gpupool"  # metadata key set to "1" on every job this dispatcher submits
MAX_EVENTS = 1000  # per poll(): a take-over may find a long history of ended jobs
DELETE_PER_REFRESH = 100  # Ray job records deleted per refresh, at most (see keep_ended_s)
ABSENT_REASON = "not in the Ray cluster (no live Ray node declares gpupool_node:<its name>)"

T = TypeVar("T")


def pin_resource(node: str) -> str:
    """The custom resource by which a Ray node declares its gpupool name."""
    return PIN_PREFIX + node


def dashboard_url(address: str) -> str:
    """The Jobs API's URL for an address as an operator writes it: empty is this machine's
    Ray (DEFAULT_ADDRESS), a bare HEAD:PORT is http."""
    text = address.strip() or DEFAULT_ADDRESS
    if "://" not in text:
        text = "http://" + text
    return text.rstrip("/")


def address_problem(url: str) -> str | None:
    """Why `url` (from dashboard_url) cannot be the Jobs API's address, or None. The SDK
    would take ray://... as Ray Client (the control plane would become a Ray driver, and
    block 30 s on a head that does not answer)."""
    scheme, _, rest = url.partition("://")
    if scheme not in ("http", "https") or not rest or any(c.isspace() for c in rest):
        return (
            f"{url!r} is not the Ray dashboard's URL: give http://HEAD:8265 (the Jobs API), "
            "not ray://HEAD:10001 (Ray Client) or HEAD:6379 (the GCS)"
        )
    return None


def auth_token(given: str = "") -> str | None:
    """The Ray token to send: `given`, else where Ray's own tools find one (RAY_AUTH_TOKEN,
    the file RAY_AUTH_TOKEN_PATH names, ~/.ray/auth_token); None if there is none. A token
    sent to a cluster without token auth is ignored by it."""
    if given.strip():
        return given.strip()
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = os.environ.get("RAY_AUTH_TOKEN_PATH", "") or os.path.join(
        os.path.expanduser("~"), ".ray", "auth_token"
    )
    try:
        with open(path, encoding="utf-8") as file:
            return file.read().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


# The multi-node entrypoint (see the module docstring): argv[1] is the job's own command.
GANG_LAUNCHER = """\
import json, os, signal, subprocess, sys
import ray
from ray.util.placement_group import placement_group
env = os.environ
ray.init(namespace=env["GPUPOOL_RAY_NAMESPACE"], log_to_driver=False)
name, bundles = env["GPUPOOL_PLACEMENT_GROUP"], json.loads(env["GPUPOOL_BUNDLES"])
print(f"gpupool: reserving placement group {name}: {bundles}", flush=True)
group = placement_group(bundles, strategy="STRICT_SPREAD", name=name)
ray.get(group.ready())
print(f"gpupool: placement group {name} reserved; running: {sys.argv[1]}", flush=True)
# Ray's stop signals the command too; the group must live until the command has exited.
signal.signal(signal.SIGTERM, lambda *_: None)
child = subprocess.Popen(sys.argv[1], shell=True,
                         env=dict(env, GPUPOOL_PLACEMENT_GROUP_ID=group.id.hex()))
code = child.wait()
sys.exit(code if code >= 0 else 128 - code)
"""


@dataclass(slots=True)
class _Run:
    """An attempt this dispatcher follows until it has reported its end."""

    key: str
    job_id: str
    attempt: int
    nodes: tuple[str, ...]
    since: float  # time.monotonic() when it was submitted or adopted
    status: str = "PENDING"  # Ray's, as last seen
    running: bool = False  # RUNNING reported
    stop: StopOrder | None = None
    lost: str | None = None  # being given up for this reason: its end is reported LOST
    give_up_at: float | None = None  # time.monotonic(): report `give_up` without Ray then
    give_up: tuple[EventKind, str] = (EventKind.LOST, "")

    @property
    def gang(self) -> bool:
        return len(self.nodes) > 1


class RayDispatcher:
    """Runs attempts as Ray jobs; see the module docstring. Thread-safe."""

    def __init__(
        self,
        clock: Clock,
        address: str,
        token: str | None = None,
        poll_s: float = 2.0,
        *,
        grace_s: float = 120.0,
        pending_s: float = 900.0,
        cpus_per_gpu: float = 1.0,
        python: str = "python",
        timeout_s: float = 10.0,
        retry_s: float = 5.0,
        keep_ended_s: float = 7 * 86400.0,
        nodes_every_s: float = 10.0,
    ) -> None:
        """`address`: the Ray dashboard's URL (http://head:8265; see dashboard_url: a bad
        one makes every call a DispatchError, as an unreachable Ray does). `poll_s`: poll() asks Ray
        at most this often (list_jobs returns every job the cluster ever ran). `grace_s`:
        SIGTERM to SIGKILL on a stop. `pending_s`: how long a job may wait in Ray to start
        (or for its group) before it is given up as LOST; PENDING includes installing its
        runtime_env, and Ray itself fails a job PENDING for 15 minutes
        (RAY_JOB_START_TIMEOUT_SECONDS). `keep_ended_s`: how long Ray keeps the records
        (and so the logs) of ended jobs, and how far back a take-over looks for jobs that
        ended while no one followed them. `python`: the command that runs
        Ray's Python on the nodes (the multi-node launcher's interpreter). `nodes_every_s`:
        how often sight_nodes() lists Ray's nodes."""
        self.clock, self.address, self.poll_s = clock, dashboard_url(address), poll_s
        self._bad_address = address_problem(self.address)
        self.grace_s, self.pending_s, self.cpus_per_gpu = grace_s, pending_s, cpus_per_gpu
        self.python, self.timeout_s, self.retry_s = python, timeout_s, retry_s
        self.keep_ended_s, self.nodes_every_s = keep_ended_s, nodes_every_s
        self._next_sighting = 0.0
        self._deletions_asked: set[str] = set()  # see _forget_old
        self._last_alive: set[str] | None = None  # the node list sight_nodes() saw last
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._jobs_client: JobSubmissionClient | None = None
        self._state_client: StateApiClient | None = None
        self._down_until = 0.0  # time.monotonic(): calls fail at once until then
        self._down_error = ""
        self._next_refresh = 0.0
        self._absent: dict[str, int] = {}  # node -> refreshes in a row it was not alive in
        self._runs: dict[str, _Run] = {}
        self._events: list[JobEvent] = []
        self._lock = threading.Lock()
        for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
            if os.environ.get(name):
                log.warning("%s is set: Ray's SDK uses it instead of %s", name, self.address)
                break

    # -- the Dispatcher port ------------------------------------------------------------

    @property
    def poll_every_s(self) -> float | None:
        """While it follows attempts, the loop polls it this often between ticks: Ray does
        not call back, and a job's start or end is recorded within poll_s of Ray's."""
        return self.poll_s if self._runs else None

    def start(self, order: StartOrder) -> None:
        with self._lock:
            if order.key in self._runs:
                return
            spec = submission(order, self.grace_s, self.cpus_per_gpu, self.python)
            try:
                self._call(lambda jobs: jobs.submit_job(**spec))
            except (TypeError, ValueError) as err:  # the SDK checks runtime_env before sending
                raise DispatchError(f"runtime_env rejected: {_line(err)}", permanent=True) from err
            except RuntimeError as err:  # Ray answered with an error
                if "already exists" not in str(err):
                    raise DispatchError(f"Ray refused {order.key}: {_short(err)}") from err
                log.info("%s was already submitted to Ray: not started again", order.key)
            nodes = tuple(node for node, _ in order.pieces)
            self._runs[order.key] = _Run(
                order.key, order.job_id, order.attempt, nodes, time.monotonic()
            )

    def stop(self, order: StopOrder) -> None:
        with self._lock:
            run = self._runs.get(order.key)
            if run is None or run.stop is not None:
                return
            try:
                self._call(lambda jobs: jobs.stop_job(order.key))
            except RuntimeError as err:
                if "does not exist" not in str(err):
                    raise DispatchError(f"Ray could not stop {order.key}: {_short(err)}") from err
                self._finish(run, EventKind.LOST, "Ray no longer knows this job")
                return
            run.stop = order
            if run.give_up_at is None:
                wait = max(order.grace_s, self.grace_s) + 30.0
                note = f"stopped: {order.why.value} (Ray did not confirm it within {wait:g} s)"
                run.give_up_at, run.give_up = time.monotonic() + wait, (EventKind.STOPPED, note)

    def poll(self) -> list[JobEvent]:
        with self._lock:
            if self._runs and time.monotonic() >= self._next_refresh:
                try:  # poll never raises: the loop keeps planning while Ray is away
                    self._refresh(adopt=False)
                except DispatchError as err:
                    log.debug("poll: %s", err)
                except Exception:
                    log.exception("poll: following Ray's jobs failed; trying again next poll")
            events, self._events = self._events[:MAX_EVENTS], self._events[MAX_EVENTS:]
            return events

    def known(self) -> set[str]:
        """The attempts Ray runs (PENDING or RUNNING) and those that ended but whose end
        poll() has not reported yet; DispatchError if Ray cannot be asked (then the caller
        must not conclude that anything is gone)."""
        with self._lock:
            self._refresh(adopt=True)
            unreported = {
                f"{e.job_id}-{e.attempt}" for e in self._events if e.kind is not EventKind.RUNNING
            }
            return set(self._runs) | unreported

    def sight_nodes(self) -> NodeSighting | None:
        """The pool nodes Ray has (a node counts as present if it was alive in either of
        the last two node lists: missing once takes no node out), at most every
        `nodes_every_s`; None in between, and when Ray cannot be asked."""
        with self._lock:
            if time.monotonic() < self._next_sighting:
                return None
            self._next_sighting = time.monotonic() + self.nodes_every_s
            alive = self._alive_nodes()
            if alive is None:
                return None
            last, self._last_alive = self._last_alive, alive
            if last is None:
                return None
            return NodeSighting(frozenset(alive | last), ABSENT_REASON)

    # -- more -----------------------------------------------------------------------------

    def logs(self, job_id: str, attempt: int) -> str:
        """The attempt's output so far (Ray keeps it on the node that ran the entrypoint)."""
        key = f"{job_id}-{attempt}"
        with self._lock:
            try:
                text: str = self._call(lambda jobs: jobs.get_job_logs(key))
            except RuntimeError as err:
                raise DispatchError(f"no logs for {key}: {_short(err)}") from err
            return text

    # -- following Ray --------------------------------------------------------------------

    def _refresh(self, adopt: bool) -> None:
        try:
            listed = self._call(lambda jobs: jobs.list_jobs())
        except DispatchError:
            raise
        except Exception as err:  # an error answer, or one the SDK cannot parse
            raise DispatchError(f"Ray's job list: {_short(str(err))}") from err
        self._next_refresh = time.monotonic() + self.poll_s
        ours = {
            job.submission_id: job
            for job in listed
            if job.submission_id and (job.metadata or {}).get(MARK) == "1"
        }
        now = time.monotonic()
        oldest = (time.time() - self.keep_ended_s) * 1000  # Ray's times: wall clock, ms
        if adopt:
            for key, job in ours.items():
                ended = job.status.is_terminal()
                if key not in self._runs and (not ended or (job.end_time or 0) >= oldest):
                    self._runs[key] = _adopted(key, job, now)
        self._forget_old(
            [
                key
                for key, job in ours.items()
                if key not in self._runs
                and job.status.is_terminal()
                and job.end_time is not None
                and job.end_time < oldest
            ],
            set(ours),
        )
        # Also for jobs just ended: a job whose node died ends FAILED in Ray.
        alive = self._alive_nodes() if self._runs else None
        if alive is not None:
            wanted = {node for run in self._runs.values() for node in run.nodes}
            self._absent = {n: self._absent.get(n, 0) + 1 for n in wanted if n not in alive}
        for run in list(self._runs.values()):
            self._follow(run, ours.get(run.key), alive, now)

    def _forget_old(self, keys: list[str], listed: set[str]) -> None:
        """Delete Ray's records of these ended jobs (see keep_ended_s), a few per refresh.
        Each is asked once: a record Ray refused to delete, or still lists for a while
        after deleting it, is not asked again (it would hold back the others) while it is
        listed."""
        self._deletions_asked &= listed
        todo = [key for key in keys if key not in self._deletions_asked][:DELETE_PER_REFRESH]
        for key in todo:
            try:
                self._call(functools.partial(_delete_job, key=key))
            except DispatchError:
                return  # Ray is away: next refresh
            except RuntimeError as err:  # Ray refused this one; the others may go
                log.warning("could not delete Ray's record of %s: %s", key, _short(err))
            self._deletions_asked.add(key)
        if todo:
            log.info("deleted Ray's records of %d jobs ended long ago", len(todo))

    def _follow(
        self, run: _Run, job: JobDetails | None, alive: set[str] | None, now: float
    ) -> None:
        if job is None:
            self._finish(run, EventKind.LOST, "Ray no longer knows this job (restarted?)")
            return
        run.status = job.status.value
        if job.status.is_terminal():
            if not run.running and job.driver_node_id and run.lost is None:
                self._report(run, EventKind.RUNNING, at=_ms(job.start_time))
            kind, message = self._outcome(run, job, alive)
            self._finish(run, kind, message, _ms(job.end_time))
            return
        if run.stop is not None and run.status == "PENDING":
            # Nothing runs; Ray keeps it PENDING and stops it the moment it would start.
            self._finish(run, EventKind.STOPPED, f"stopped: {run.stop.why.value}")
            return
        # Absent twice in a row: a node list that missed a node once stops no job.
        gone = [node for node in run.nodes if self._absent.get(node, 0) >= 2]
        if run.lost is None and gone:
            left = "left" if run.status == "RUNNING" else "is not in the Ray cluster"
            self._give_up(run, f"node {gone[0]} {left}", at_once=run.status == "PENDING")
            return
        if run.lost is None and run.stop is None and not run.running:
            if run.status == "RUNNING" and (not run.gang or self._group_reserved(run)):
                self._report(run, EventKind.RUNNING)
            elif now - run.since > self.pending_s:
                nodes, within = ", ".join(run.nodes), f"within {self.pending_s:g} s"
                why = (
                    f"its placement group was not reserved {within} (not all of its GPUs on "
                    f"{nodes} are free in Ray)"
                    if run.status == "RUNNING"
                    else f"Ray did not start it {within} (its GPUs on {nodes} are not free in "
                    "Ray, or its runtime_env is still being set up)"
                )
                self._give_up(run, why, at_once=run.status == "PENDING")
                return
        if run.give_up_at is not None and now >= run.give_up_at:
            self._finish(run, *run.give_up)

    def _outcome(self, run: _Run, job: JobDetails, alive: set[str] | None) -> tuple[EventKind, str]:
        status, error = job.status.value, str(getattr(job.error_type, "value", job.error_type))
        if run.lost is not None:
            return EventKind.LOST, run.lost
        if status == "SUCCEEDED":
            return EventKind.SUCCEEDED, "exit code 0"
        if status == "STOPPED":
            if run.stop is None:
                return EventKind.STOPPED, "stopped in Ray, not by gpupool"
            return EventKind.STOPPED, f"stopped: {run.stop.why.value}"
        gone = [node for node in run.nodes if alive is not None and node not in alive]
        if gone:
            return EventKind.LOST, f"node {gone[0]} left"
        message = job.message or ""
        if error == "RUNTIME_ENV_SETUP_FAILURE":
            return EventKind.FAILED, f"runtime_env rejected: {_cause(message)}"
        if error == "JOB_ENTRYPOINT_COMMAND_ERROR":
            code = job.driver_exit_code
            tail = _log_tail(message)
            output = f"; last output: {tail}" if tail else ""
            return EventKind.FAILED, f"exit code {code}{output}"
        if error.startswith("JOB_SUPERVISOR_ACTOR") and error != (
            "JOB_SUPERVISOR_ACTOR_START_FAILURE"
        ):
            return EventKind.LOST, f"Ray lost it: {_short(_first(message))}"
        return EventKind.FAILED, _short(_first(message)) or "failed in Ray"

    def _give_up(self, run: _Run, reason: str, at_once: bool) -> None:
        """Stop it in Ray and report it LOST for `reason`: now if nothing of it runs yet,
        else once Ray has ended it (or did not within the grace period)."""
        log.warning("giving up %s: %s", run.key, reason)
        try:
            self._call(lambda jobs: jobs.stop_job(run.key))
        except (DispatchError, RuntimeError) as err:
            log.warning("could not stop %s in Ray: %s", run.key, err)
        if at_once:
            self._finish(run, EventKind.LOST, reason)
            return
        run.lost = reason
        wait = self.grace_s + 30.0
        run.give_up_at, run.give_up = time.monotonic() + wait, (EventKind.LOST, reason)

    def _report(
        self, run: _Run, kind: EventKind, message: str = "", at: float | None = None
    ) -> None:
        now = self.clock.now()
        when = now if at is None else min(now, at)
        self._events.append(JobEvent(run.job_id, run.attempt, kind, when, message))
        if kind is EventKind.RUNNING:
            run.running = True

    def _finish(self, run: _Run, kind: EventKind, message: str, at: float | None = None) -> None:
        self._report(run, kind, message, at)
        del self._runs[run.key]

    def _alive_nodes(self) -> set[str] | None:
        """The gpupool names of the nodes Ray has alive (None: the state API did not say)."""
        try:
            rows = self._state("nodes", [])
        except DispatchError:
            return None
        alive = {
            key.removeprefix(PIN_PREFIX)
            for row in rows
            if getattr(row, "state", "") == "ALIVE"
            for key in (getattr(row, "resources_total", None) or {})
            if key.startswith(PIN_PREFIX) and "_group_" not in key
        }
        return alive or None  # no gpupool node at all: rather a bad answer than a fact

    def _group_reserved(self, run: _Run) -> bool:
        try:
            rows = self._state("placement_groups", [("name", "=", group_name(run.key))])
        except DispatchError:
            return False
        return any(getattr(row, "state", "") == "CREATED" for row in rows)

    # -- talking to Ray -------------------------------------------------------------------

    def _call(self, action: Callable[[JobSubmissionClient], T]) -> T:
        """Run `action` with a Jobs API client; DispatchError when Ray cannot be reached or
        refuses the token. Ray's own answers (RuntimeError) and the SDK's checks of the
        arguments (TypeError, ValueError) pass through."""
        if self._bad_address is not None:
            raise DispatchError(self._bad_address)
        if time.monotonic() < self._down_until:
            raise DispatchError(f"Ray at {self.address} {self._down_error}")
        try:
            if self._jobs_client is None:
                self._jobs_client = self._connect()
            return action(self._jobs_client)
        except DispatchError:
            raise
        except Exception as err:
            why = _unreachable(err)
            if why is None:
                raise
            self._jobs_client = self._state_client = None
            self._down_error = f"{why}: {_short(_first(str(err)) or type(err).__name__)}"
            self._down_until = time.monotonic() + self.retry_s
            log.warning("Ray at %s %s", self.address, self._down_error)
            raise DispatchError(f"Ray at {self.address} {self._down_error}") from err

    def _connect(self) -> JobSubmissionClient:
        return _jobs_client(self.address, self._headers, self.timeout_s)

    def _state(self, resource: str, filters: list[Any]) -> list[Any]:
        def listing(_: JobSubmissionClient) -> list[Any]:
            from ray.util.state import StateApiClient
            from ray.util.state.common import ListApiOptions, StateResource

            if self._state_client is None:
                headers = {"Content-Type": "application/json", **self._headers}
                self._state_client = StateApiClient(self.address, headers=headers)
            options = ListApiOptions(
                limit=10_000, timeout=max(1, int(self.timeout_s)), filters=filters
            )
            rows = self._state_client.list(
                StateResource(resource), options=options, raise_on_missing_output=False
            )
            return list(rows)

        try:
            return self._call(listing)
        except DispatchError:
            raise
        except Exception as err:  # its own errors, odd answers: this refresh goes without
            raise DispatchError(f"Ray's state API: {_short(str(err))}") from err


def _jobs_client(address: str, headers: Mapping[str, str], timeout_s: float) -> JobSubmissionClient:
    """A Jobs API client whose every request has a timeout. Constructing it asks Ray for
    its version: ConnectionError (or another OSError) if nothing answers as a Ray head."""
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as err:
        raise DispatchError(f"Ray is not installed here: {err}") from err

    class Client(JobSubmissionClient):
        # The SDK sets no timeout: a head that stops answering would hang the loop.
        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", timeout_s)
            return super()._do_request(method, endpoint, **kwargs)

    try:
        return Client(address, headers=dict(headers))
    except RuntimeError as err:  # the version check answered, but not as a Ray head
        raise ConnectionError(str(err)) from err


class UnknownRayJob(DispatchError):
    """Ray does not know this job (never submitted, or the cluster was restarted since)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


_log_clients: dict[tuple[str, str], JobSubmissionClient] = {}
_log_clients_lock = threading.Lock()


def job_logs(address: str, token: str | None, key: str, timeout_s: float = 10.0) -> str:
    """The output so far of attempt `key` (job id + attempt: its submission id), read from
    Ray without a dispatcher (what the API serves; Ray keeps the log on the node that ran
    the entrypoint). UnknownRayJob if Ray does not know the attempt; DispatchError if Ray
    cannot be asked (unreachable, refusing the token, a bad address)."""
    url = dashboard_url(address)
    problem = address_problem(url)
    if problem is not None:
        raise DispatchError(problem)
    cache_key = (url, token or "")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with _log_clients_lock:
            client = _log_clients.get(cache_key)
        if client is None:
            client = _jobs_client(url, headers, timeout_s)
            with _log_clients_lock:
                _log_clients[cache_key] = client
        text: str = client.get_job_logs(key)
        return text
    except DispatchError:
        raise
    except RuntimeError as err:  # Ray answered with an error
        if "does not exist" in str(err) or "404" in str(err):
            raise UnknownRayJob(f"Ray does not know {key}") from err
        raise DispatchError(f"Ray could not give the logs of {key}: {_short(err)}") from err
    except Exception as err:
        with _log_clients_lock:
            _log_clients.pop(cache_key, None)
        why = _unreachable(err)
        if why is None:
            raise DispatchError(f"Ray could not give the logs of {key}: {_line(err)}") from err
        raise DispatchError(f"Ray at {url} {why}: {_short(_first(str(err)))}") from err


def _delete_job(jobs: JobSubmissionClient, key: str) -> bool:
    return bool(jobs.delete_job(key))


def group_name(key: str) -> str:
    """The placement group (and its namespace) of a multi-node attempt."""
    return f"gpupool-{key}"


def submission(
    order: StartOrder, grace_s: float, cpus_per_gpu: float, python: str = "python"
) -> dict[str, Any]:
    """The keyword arguments of `JobSubmissionClient.submit_job` for an order (without
    talking to Ray). DispatchError (permanent) for an order Ray could never run as given."""
    if not order.pieces or any(gpus <= 0 for _, gpus in order.pieces):
        raise DispatchError(f"{order.key}: no placement to run on", permanent=True)
    first, gpus = order.pieces[0]
    env = {
        "GPUPOOL_JOB_ID": order.job_id,
        "GPUPOOL_PROJECT": order.project,
        "GPUPOOL_ATTEMPT": str(order.attempt),
        "GPUPOOL_NODES": ",".join(f"{node}:{n}" for node, n in order.pieces),
        # Read by Ray's job supervisor on stop_job: SIGTERM, then SIGKILL after this long.
        "RAY_JOB_STOP_WAIT_TIME_S": str(max(1, math.ceil(grace_s))),
    }
    spec: dict[str, Any] = {
        "submission_id": order.key,
        "metadata": {
            MARK: "1",
            "gpupool_job_id": order.job_id,
            "gpupool_attempt": str(order.attempt),
            "gpupool_project": order.project,
            "gpupool_user": order.user,
            "gpupool_flavor": order.flavor,
            "gpupool_nodes": env["GPUPOOL_NODES"],
            "gpupool_max_runtime_s": f"{order.max_runtime_s:g}",
        },
        "entrypoint_resources": {pin_resource(first): PIN},
    }
    if len(order.pieces) == 1:
        spec["entrypoint"] = order.entrypoint
        spec["entrypoint_num_gpus"] = gpus
    else:
        name = group_name(order.key)
        env |= {
            "GPUPOOL_PLACEMENT_GROUP": name,
            "GPUPOOL_RAY_NAMESPACE": name,
            "GPUPOOL_BUNDLES": json.dumps([_bundle(p, cpus_per_gpu) for p in order.pieces]),
            "GPUPOOL_GANG_LAUNCHER": GANG_LAUNCHER,
        }
        # "$GPUPOOL_GANG_LAUNCHER" keeps the entrypoint readable in Ray's job list.
        spec["entrypoint"] = f'{python} -c "$GPUPOOL_GANG_LAUNCHER" {shlex.quote(order.entrypoint)}'
    spec["runtime_env"] = _runtime_env(order.runtime_env, env)
    return spec


def _bundle(piece: Piece, cpus_per_gpu: float) -> dict[str, float]:
    node, gpus = piece
    bundle = {"GPU": float(gpus), pin_resource(node): PIN}
    if cpus_per_gpu > 0:
        bundle["CPU"] = cpus_per_gpu * gpus
    return bundle


_DROPPED = {"CUDA_VISIBLE_DEVICES"}  # Ray assigns it from the job's GPUs


def _runtime_env(given: Mapping[str, Any], env: dict[str, str]) -> dict[str, Any]:
    runtime_env = dict(given)
    env_vars = runtime_env.get("env_vars") or {}
    if not isinstance(env_vars, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()
    ):
        raise DispatchError(
            "runtime_env rejected: env_vars must map names to strings", permanent=True
        )
    # Set last: a job's env_vars must not change what gpupool sets.
    runtime_env["env_vars"] = {k: v for k, v in env_vars.items() if k not in _DROPPED} | env
    return runtime_env


def _adopted(key: str, job: JobDetails, now: float) -> _Run:
    meta = job.metadata or {}
    nodes = tuple(
        part.rsplit(":", 1)[0] for part in meta.get("gpupool_nodes", "").split(",") if part
    )
    job_id, _, attempt = key.rpartition("-")
    return _Run(
        key,
        meta.get("gpupool_job_id", job_id),
        int(meta.get("gpupool_attempt", attempt or 0)),
        nodes,
        now,
    )


def _unreachable(err: Exception) -> str | None:
    """Why Ray could not be asked at all (down, refusing the token), or None."""
    if isinstance(err, OSError):  # requests' errors, timeouts, refused connections
        return "is unreachable"
    try:
        from ray.exceptions import AuthenticationError
    except ImportError:
        return None
    return "refused the token" if isinstance(err, AuthenticationError) else None


def _ms(stamp: int | None) -> float | None:
    return None if stamp is None else stamp / 1000.0


def _first(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _line(err: BaseException) -> str:
    return _short(_first(str(err)) or type(err).__name__)


def _short(text: object, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# Lines Ray adds to a job's log: its own log records and the "Running entrypoint" line.
_RAY_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d [\d:,]+\s+(INFO|DEBUG|WARNING)\s|^Running entrypoint for job "
)


def _log_tail(message: str, lines: int = 3) -> str:
    """The last lines the job printed, from Ray's failure message (which quotes its log)."""
    _, _, log_text = message.partition("last available logs")
    body = log_text.split("\n", 1)[1] if "\n" in log_text else ""
    kept = [line for line in body.splitlines() if line.strip() and not _RAY_LINE.match(line)]
    return _short(" | ".join(line.strip() for line in kept[-lines:]))


def _cause(message: str) -> str:
    """The telling line of Ray's runtime_env failure (its message holds a traceback, and
    for pip the installer's output): pip's last ERROR, else the exception."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    tool = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR: ")]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b", line)]
    found = tool or errors or lines
    return _short(found[-1] if found else "setup failed")
