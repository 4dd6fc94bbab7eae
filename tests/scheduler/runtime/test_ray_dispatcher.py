"""The Ray dispatcher against a real local Ray cluster (tests/scheduler/runtime/ray_cluster.py):
a head and two worker "nodes" with fake GPUs, gpu-01 and gpu-02 (4 GPUs each), started once
for the test session with token auth on (tests/conftest.py). Jobs print where they ran
(GPUPOOL_TEST_NODE is each node's own name) and which GPUs they got, and the tests read that
back with get_job_logs. Without a working Ray, the tests that need a cluster are skipped with
the reason. Job ids here count from 1; other modules on the same cluster keep to their own."""

from __future__ import annotations

import itertools
import json
import shlex
import time
from pathlib import Path
from typing import Any

import pytest

from scheduler.core.types import Piece
from scheduler.runtime import ray_dispatcher
from scheduler.runtime.clock import SystemClock
from scheduler.runtime.ports import (
    DispatchError,
    EventKind,
    JobEvent,
    StartOrder,
    StopOrder,
    StopWhy,
)
from scheduler.runtime.ray_dispatcher import (
    ABSENT_REASON,
    DELETE_PER_REFRESH,
    GANG_LAUNCHER,
    PIN,
    RayDispatcher,
    _cause,
    _log_tail,
    submission,
)
from tests.scheduler.runtime.ray_cluster import LocalRayCluster, free_port

ENDED = {EventKind.SUCCEEDED, EventKind.FAILED, EventKind.STOPPED, EventKind.LOST}
_ids = itertools.count(1)


@pytest.fixture
def cluster(ray_cluster: LocalRayCluster) -> LocalRayCluster:
    """The session's cluster (tests/conftest.py)."""
    return ray_cluster


def dispatcher(cluster: LocalRayCluster, **options: Any) -> RayDispatcher:
    options = {"poll_s": 0.0, "grace_s": 2.0, **options}
    return RayDispatcher(SystemClock(), cluster.address, token=cluster.token, **options)


def order(
    pieces: tuple[Piece, ...],
    entrypoint: str,
    runtime_env: dict[str, Any] | None = None,
    job_id: str | None = None,
) -> StartOrder:
    return StartOrder(
        job_id or str(next(_ids)),
        1,
        "proj-a",
        "alice",
        entrypoint,
        "H100",
        pieces,
        3600.0,
        runtime_env or {},
    )


_seen: dict[int, dict[str, list[JobEvent]]] = {}  # per dispatcher: its events by key


def wait_for(
    d: RayDispatcher, key: str, until: set[EventKind], timeout_s: float = 40.0
) -> list[JobEvent]:
    """Poll until an event of a kind in `until` has arrived for `key`; all of that key's
    events so far (the events of other keys are kept for their own wait_for)."""
    seen = _seen.setdefault(id(d), {})
    deadline = time.monotonic() + timeout_s
    while True:
        for event in d.poll():
            seen.setdefault(f"{event.job_id}-{event.attempt}", []).append(event)
        events = seen.get(key, [])
        if any(e.kind in until for e in events):
            return list(events)
        if time.monotonic() > deadline:
            raise AssertionError(f"{key}: no {sorted(until)} within {timeout_s} s: {events}")
        time.sleep(0.2)


def kinds(events: list[JobEvent]) -> list[EventKind]:
    return [e.kind for e in events]


def submissions(cluster: LocalRayCluster, key: str) -> int:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(cluster.address, headers=cluster.headers)
    return sum(job.submission_id == key for job in client.list_jobs())


# --- placement ---------------------------------------------------------------------------


def test_a_single_node_job_runs_on_its_node_with_its_gpus_and_env(
    cluster: LocalRayCluster, tmp_path: Path
) -> None:
    (tmp_path / "note.txt").write_text("note=from-working-dir\n")
    d = dispatcher(cluster)
    start = order(
        (("gpu-02", 3),),
        'echo "node=$GPUPOOL_TEST_NODE gpus=$CUDA_VISIBLE_DEVICES job=$GPUPOOL_JOB_ID '
        "project=$GPUPOOL_PROJECT attempt=$GPUPOOL_ATTEMPT nodes=$GPUPOOL_NODES mine=$MINE "
        '$(cat note.txt)"',
        {
            "working_dir": str(tmp_path),  # uploaded by the SDK
            # The job's own env_vars cannot move it onto other GPUs nor pose as another job.
            "env_vars": {"MINE": "yes", "CUDA_VISIBLE_DEVICES": "7", "GPUPOOL_JOB_ID": "x"},
        },
    )
    d.start(start)
    d.start(start)  # a resent start: nothing more

    events = wait_for(d, start.key, ENDED)

    assert kinds(events) == [EventKind.RUNNING, EventKind.SUCCEEDED]
    line = next(x for x in d.logs(start.job_id, 1).splitlines() if x.startswith("node="))
    fields = dict(part.split("=", 1) for part in line.split())
    assert fields["node"] == "gpu-02"
    assert len(fields["gpus"].split(",")) == 3
    assert fields["job"] == start.job_id
    assert (fields["project"], fields["attempt"], fields["nodes"]) == ("proj-a", "1", "gpu-02:3")
    assert fields["mine"] == "yes"
    assert fields["note"] == "from-working-dir"
    assert submissions(cluster, start.key) == 1


GANG_CHECK = """\
import json, os, ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
ray.init(namespace=os.environ["GPUPOOL_RAY_NAMESPACE"])
name = os.environ["GPUPOOL_PLACEMENT_GROUP"]
group = ray.util.get_placement_group(name)
table = ray.util.placement_group_table(group)
pins = {n["NodeID"]: [k.split(":", 1)[1] for k in n["Resources"]
                      if k.startswith("gpupool_node:") and "_group_" not in k]
        for n in ray.nodes()}

@ray.remote(num_gpus=2, num_cpus=1)
def where():
    return os.environ["GPUPOOL_TEST_NODE"], os.environ["CUDA_VISIBLE_DEVICES"]

tasks = [where.options(scheduling_strategy=PlacementGroupSchedulingStrategy(group, i)).remote()
         for i in range(2)]
print("GANG " + json.dumps({
    "driver": os.environ["GPUPOOL_TEST_NODE"], "group": name,
    "id": os.environ["GPUPOOL_PLACEMENT_GROUP_ID"] == group.id.hex(),
    "state": table["state"], "strategy": table["strategy"],
    "bundles": {str(i): pins[node] for i, node in table["bundles_to_node_id"].items()},
    "tasks": ray.get(tasks),
}))
"""


def test_a_two_node_job_gets_its_placement_group_before_it_starts(
    cluster: LocalRayCluster, tmp_path: Path
) -> None:
    script = tmp_path / "gang_check.py"  # on this machine, where every "node" runs
    script.write_text(GANG_CHECK)
    d = dispatcher(cluster)
    start = order((("gpu-01", 2), ("gpu-02", 2)), f"python {script}")
    d.start(start)

    events = wait_for(d, start.key, ENDED, timeout_s=60)

    assert kinds(events) == [EventKind.RUNNING, EventKind.SUCCEEDED], events
    log = d.logs(start.job_id, 1)
    line = next(x for x in log.splitlines() if x.startswith("GANG "))
    gang = json.loads(line.removeprefix("GANG "))
    assert gang["driver"] == "gpu-01"  # the entrypoint runs on the first piece's node
    assert gang["group"] == f"gpupool-{start.key}" and gang["id"]
    assert (gang["state"], gang["strategy"]) == ("CREATED", "STRICT_SPREAD")
    assert gang["bundles"] == {"0": ["gpu-01"], "1": ["gpu-02"]}
    assert [node for node, _ in gang["tasks"]] == ["gpu-01", "gpu-02"]
    assert all(len(gpus.split(",")) == 2 for _, gpus in gang["tasks"])


# --- lifecycle -----------------------------------------------------------------------------


def test_stop_sends_sigterm_and_kills_after_the_grace_period(cluster: LocalRayCluster) -> None:
    d = dispatcher(cluster, grace_s=2.0)
    polite = order((("gpu-01", 1),), "trap 'echo got TERM; exit 0' TERM; sleep 60 & wait")
    stubborn = order((("gpu-01", 1),), "trap 'echo ignoring TERM' TERM; sleep 60 & wait; sleep 60")
    d.start(polite)
    d.start(stubborn)
    wait_for(d, polite.key, {EventKind.RUNNING})
    wait_for(d, stubborn.key, {EventKind.RUNNING})

    started = time.monotonic()
    d.stop(StopOrder(polite.job_id, 1, 2.0, StopWhy.PREEMPTED))
    d.stop(StopOrder(stubborn.job_id, 1, 2.0, StopWhy.CANCELLED))
    d.stop(StopOrder(polite.job_id, 1, 2.0, StopWhy.PREEMPTED))  # again: nothing more
    first = wait_for(d, polite.key, ENDED)
    second = wait_for(d, stubborn.key, ENDED)
    took = time.monotonic() - started

    assert (first[-1].kind, first[-1].message) == (EventKind.STOPPED, "stopped: preempted")
    assert (second[-1].kind, second[-1].message) == (EventKind.STOPPED, "stopped: cancelled")
    assert "got TERM" in d.logs(polite.job_id, 1)
    assert "ignoring TERM" in d.logs(stubborn.job_id, 1)
    assert 1.5 <= took < 10  # SIGKILL came after RAY_JOB_STOP_WAIT_TIME_S = grace_s


GANG_STOP = """\
import os, signal, sys, time, ray
ray.init(namespace=os.environ["GPUPOOL_RAY_NAMESPACE"])
group = ray.util.get_placement_group(os.environ["GPUPOOL_PLACEMENT_GROUP"])
def bye(*_):
    time.sleep(0.5)
    print("TERM: group", ray.util.placement_group_table(group)["state"], flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("READY", flush=True)
while True:
    time.sleep(0.1)
"""


def test_a_stopped_multi_node_job_keeps_its_group_until_it_has_exited(
    cluster: LocalRayCluster, tmp_path: Path
) -> None:
    script = tmp_path / "gang_stop.py"
    script.write_text(GANG_STOP)
    d = dispatcher(cluster, grace_s=3.0)
    start = order((("gpu-01", 1), ("gpu-02", 1)), f"python {script}")
    d.start(start)
    wait_for(d, start.key, {EventKind.RUNNING})
    deadline = time.monotonic() + 30
    while "READY" not in d.logs(start.job_id, 1) and time.monotonic() < deadline:
        time.sleep(0.2)

    d.stop(StopOrder(start.job_id, 1, 3.0, StopWhy.PREEMPTED))

    assert wait_for(d, start.key, ENDED)[-1].kind is EventKind.STOPPED
    assert "TERM: group CREATED" in d.logs(start.job_id, 1)


def test_a_job_stopped_while_ray_keeps_it_pending_is_stopped_at_once(
    cluster: LocalRayCluster,
) -> None:
    d = dispatcher(cluster)
    start = order((("gpu-01", 16),), "true")  # more GPUs than the node has: PENDING in Ray
    d.start(start)

    d.stop(StopOrder(start.job_id, 1, 120.0, StopWhy.CANCELLED))

    events = wait_for(d, start.key, ENDED, timeout_s=5)
    assert [(e.kind, e.message) for e in events] == [(EventKind.STOPPED, "stopped: cancelled")]


def test_an_entrypoint_that_exits_at_once_fails_with_its_exit_code_and_output(
    cluster: LocalRayCluster,
) -> None:
    d = dispatcher(cluster)
    start = order((("gpu-01", 1),), "echo cannot find data.csv >&2; exit 3")
    d.start(start)

    events = wait_for(d, start.key, ENDED)

    assert events[-1].kind is EventKind.FAILED
    assert events[-1].message == "exit code 3; last output: cannot find data.csv"


def test_a_runtime_env_the_sdk_rejects_is_a_permanent_dispatch_error(
    cluster: LocalRayCluster,
) -> None:
    d = dispatcher(cluster)
    refused_keys = set()
    for runtime_env in (
        {"pip": 5},
        {"working_dir": "/no/such/directory"},
        {"env_vars": {"N": 1}},
    ):
        start = order((("gpu-01", 1),), "true", runtime_env)
        with pytest.raises(DispatchError, match=r"^runtime_env rejected: ") as refused:
            d.start(start)
        assert refused.value.permanent, runtime_env
        refused_keys.add(start.key)
    assert not refused_keys & d.known()  # nothing was submitted


def test_a_runtime_env_ray_cannot_set_up_fails_the_job(cluster: LocalRayCluster) -> None:
    d = dispatcher(cluster)
    start = order((("gpu-01", 1),), "true", {"working_dir": "https://127.0.0.1:1/missing.zip"})
    d.start(start)

    events = wait_for(d, start.key, ENDED)

    assert kinds(events) == [EventKind.FAILED]  # it never ran
    assert events[-1].message.startswith("runtime_env rejected: ")
    assert "127.0.0.1" in events[-1].message or "onnect" in events[-1].message


# --- restarts and faults ---------------------------------------------------------------


def test_a_new_dispatcher_finds_what_runs_and_what_ended_meanwhile(
    cluster: LocalRayCluster,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = dispatcher(cluster)
    running = order((("gpu-01", 1),), "sleep 60")
    ended = order((("gpu-02", 1),), "echo done")
    before.start(running)
    before.start(ended)
    wait_for(before, running.key, {EventKind.RUNNING})
    wait_for(before, ended.key, ENDED)  # and the control plane "restarts" (no more polls)

    after = dispatcher(cluster)
    known = after.known()
    after.start(running)  # the new leader resends the admitted start: not run twice

    assert {running.key, ended.key} <= known
    assert submissions(cluster, running.key) == 1
    end = wait_for(after, ended.key, ENDED)
    assert end[-1].kind is EventKind.SUCCEEDED  # not lost, not run again
    assert EventKind.RUNNING in kinds(wait_for(after, running.key, {EventKind.RUNNING}))
    after.stop(StopOrder(running.job_id, 1, 2.0, StopWhy.CANCELLED))
    assert wait_for(after, running.key, ENDED)[-1].kind is EventKind.STOPPED
    # Without the window for ended jobs, known() is what Ray runs now, and Ray's records
    # of gpupool's ended jobs are deleted (every ended one in this session's cluster).
    # (Whether Ray's job list stops listing a deleted job at once is Ray's business: what is
    # checked is that Ray accepted each deletion.)
    deleted: dict[str, bool] = {}
    real_delete = ray_dispatcher._delete_job

    def record(jobs: Any, key: str) -> bool:
        deleted[key] = real_delete(jobs, key)
        return deleted[key]

    monkeypatch.setattr(ray_dispatcher, "_delete_job", record)
    forgetful = dispatcher(cluster, keep_ended_s=0)
    assert running.key not in forgetful.known()
    deadline = time.monotonic() + 60  # DELETE_PER_REFRESH a refresh: the session has many
    while not {ended.key, running.key} <= set(deleted):
        assert time.monotonic() < deadline, f"not deleted: {deleted}\n{caplog.text}"
        forgetful.known()
        time.sleep(0.2)
    assert deleted[ended.key] is deleted[running.key] is True


def test_ray_unreachable_is_a_dispatch_error_that_is_not_permanent() -> None:
    d = RayDispatcher(SystemClock(), f"http://127.0.0.1:{free_port()}", poll_s=0.0)
    start = order((("gpu-01", 1),), "true")

    with pytest.raises(DispatchError, match="unreachable") as refused:
        d.start(start)
    assert not refused.value.permanent
    began = time.monotonic()
    with pytest.raises(DispatchError):
        d.start(start)  # for retry_s, without waiting on the network again
    with pytest.raises(DispatchError):
        d.known()  # the loop must not take "nothing known" for "everything is gone"
    assert d.poll() == []
    assert time.monotonic() - began < 0.5


def test_a_wrong_token_is_a_dispatch_error_that_is_not_permanent(
    cluster: LocalRayCluster,
) -> None:
    d = RayDispatcher(SystemClock(), cluster.address, token="not-the-token", poll_s=0.0)

    with pytest.raises(DispatchError, match="refused the token") as refused:
        d.start(order((("gpu-01", 1),), "true"))

    assert not refused.value.permanent


def test_a_job_whose_node_is_not_in_ray_is_lost_at_once(cluster: LocalRayCluster) -> None:
    d = dispatcher(cluster)
    start = order((("gpu-09", 1),), "true")
    d.start(start)

    events = wait_for(d, start.key, ENDED, timeout_s=10)

    assert [(e.kind, e.message) for e in events] == [
        (EventKind.LOST, "node gpu-09 is not in the Ray cluster")
    ]


def test_a_job_ray_cannot_place_is_given_up_after_pending_s(cluster: LocalRayCluster) -> None:
    # The gang's driver must reach RUNNING (to wait for its placement group) before its
    # pending_s ends; Ray's job supervisors take over a second to start on a busy machine.
    d, gang_d = dispatcher(cluster, pending_s=1.0), dispatcher(cluster, pending_s=8.0)
    single = order((("gpu-01", 16),), "true")  # more GPUs than the node has (Ray waits)
    gang = order((("gpu-01", 1), ("gpu-02", 16)), "true")
    d.start(single)
    gang_d.start(gang)

    lost = wait_for(d, single.key, ENDED, timeout_s=60)[-1]
    gang_lost = wait_for(gang_d, gang.key, ENDED, timeout_s=60)[-1]

    assert lost.kind is EventKind.LOST
    assert lost.message == (
        "Ray did not start it within 1 s (its GPUs on gpu-01 are not free in Ray, or its "
        "runtime_env is still being set up)"
    )
    assert gang_lost.kind is EventKind.LOST
    assert gang_lost.message == (
        "its placement group was not reserved within 8 s (not all of its GPUs on gpu-01, "
        "gpu-02 are free in Ray)"
    )


def test_a_node_that_leaves_mid_job_loses_its_job(cluster: LocalRayCluster) -> None:
    cluster.add_node("gpu-03", gpus=2)
    d = dispatcher(cluster)
    start = order((("gpu-03", 2),), "sleep 60")
    d.start(start)
    wait_for(d, start.key, {EventKind.RUNNING})

    sightings = dispatcher(cluster, nodes_every_s=0.0)
    assert sightings.sight_nodes() is None  # one node list is not enough to judge
    seen = sightings.sight_nodes()
    assert seen is not None and "gpu-03" in seen.present

    cluster.kill_node("gpu-03")
    events = wait_for(d, start.key, ENDED, timeout_s=30)

    assert (events[-1].kind, events[-1].message) == (EventKind.LOST, "node gpu-03 left")
    seen = sightings.sight_nodes()  # the list before the kill may still have it
    seen = sightings.sight_nodes()
    assert seen is not None and "gpu-03" not in seen.present
    assert seen.absent_reason == ABSENT_REASON


# --- without Ray -----------------------------------------------------------------------------


def test_a_single_node_submission_pins_the_node_and_holds_the_gpus() -> None:
    start = order(
        (("gpu-02", 3),),
        "python train.py",
        {"pip": ["torch"], "env_vars": {"A": "1", "CUDA_VISIBLE_DEVICES": "0"}},
        job_id="42",
    )

    spec = submission(start, grace_s=120.5, cpus_per_gpu=2.0)

    assert spec["submission_id"] == "42-1"
    assert spec["entrypoint"] == "python train.py"
    assert spec["entrypoint_num_gpus"] == 3
    assert spec["entrypoint_resources"] == {"gpupool_node:gpu-02": PIN}
    assert spec["runtime_env"]["pip"] == ["torch"]
    assert spec["runtime_env"]["env_vars"] == {
        "A": "1",
        "GPUPOOL_JOB_ID": "42",
        "GPUPOOL_PROJECT": "proj-a",
        "GPUPOOL_ATTEMPT": "1",
        "GPUPOOL_NODES": "gpu-02:3",
        "RAY_JOB_STOP_WAIT_TIME_S": "121",  # Ray parses an integer
    }
    assert spec["metadata"]["gpupool"] == "1"
    assert start.runtime_env["env_vars"]["CUDA_VISIBLE_DEVICES"] == "0"  # not mutated


def test_a_multi_node_submission_runs_the_launcher_on_the_first_node() -> None:
    start = order((("a", 4), ("b", 2)), "python train.py --name 'x y'", job_id="7")

    spec = submission(start, grace_s=3, cpus_per_gpu=2.0, python="/opt/py/bin/python")

    env = spec["runtime_env"]["env_vars"]
    launcher = '/opt/py/bin/python -c "$GPUPOOL_GANG_LAUNCHER" '
    assert spec["entrypoint"] == launcher + shlex.quote("python train.py --name 'x y'")
    assert env["GPUPOOL_GANG_LAUNCHER"] == GANG_LAUNCHER
    assert "entrypoint_num_gpus" not in spec  # the group holds every GPU
    assert spec["entrypoint_resources"] == {"gpupool_node:a": PIN}
    assert env["GPUPOOL_PLACEMENT_GROUP"] == env["GPUPOOL_RAY_NAMESPACE"] == "gpupool-7-1"
    assert json.loads(env["GPUPOOL_BUNDLES"]) == [
        {"GPU": 4.0, "gpupool_node:a": PIN, "CPU": 8.0},
        {"GPU": 2.0, "gpupool_node:b": PIN, "CPU": 4.0},
    ]


def test_orders_ray_could_never_run_are_refused_for_good() -> None:
    for start in (
        order((), "true"),
        order((("a", 1),), "true", {"env_vars": ["A=1"]}),
    ):
        with pytest.raises(DispatchError) as refused:
            submission(start, 120, 1.0)
        assert refused.value.permanent


def test_messages_are_cut_from_rays_job_info() -> None:
    exit_message = (
        "Job entrypoint command failed with exit code 3, last available logs (truncated to "
        "20,000 chars):\n2026-11-22 03:07:12,726\tINFO job_manager.py:581 -- Runtime env is "
        "setting up.\nloading\nRunning entrypoint for job b-1: exit 3\nboom\n"
    )
    env_message = (
        "runtime_env setup failed: Failed to set up runtime environment.\n"
        "Traceback (most recent call last):\n  File x, line 1\n"
        "ray.exceptions.RuntimeEnvSetupError: pip install failed: no such package\n"
    )
    pip_message = (
        "runtime_env setup failed: Failed to set up runtime environment.\n[Node 10.0.0.2] "
        "Traceback (most recent call last):\n  File pip.py, line 105\n"
        "ray._private.runtime_env.utils.SubprocessCalledProcessError: Run cmd[9] failed\n"
        "Last 50 lines of stdout:\n    Looking in indexes: https://pypi.org/simple\n"
        "    ERROR: Could not find a version that satisfies the requirement nope==9.9\n"
        "    ERROR: No matching distribution found for nope==9.9\n"
    )
    assert _log_tail(exit_message) == "loading | boom"
    assert _cause(pip_message) == "No matching distribution found for nope==9.9"
    assert _cause(env_message) == (
        "ray.exceptions.RuntimeEnvSetupError: pip install failed: no such package"
    )


class FakeJobs:
    """The Jobs API as the dispatcher uses it, held in memory."""

    def __init__(self) -> None:
        from ray.job_submission import JobDetails, JobStatus

        self.details, self.status = JobDetails, JobStatus
        self.jobs: dict[str, Any] = {}
        self.stopped: list[str] = []
        self.broken: Exception | None = None
        self.deletions: list[str] = []
        self.undeletable: set[str] = set()

    def submit_job(self, **spec: Any) -> str:
        key = spec["submission_id"]
        self.jobs[key] = self.details(
            type="SUBMISSION",
            submission_id=key,
            status=self.status.PENDING,
            entrypoint=spec["entrypoint"],
            metadata=spec["metadata"],
            start_time=int(time.time() * 1000),
        )
        return str(key)

    def set(self, key: str, status: str) -> None:
        self.jobs[key].status = self.status(status)
        self.jobs[key].driver_node_id = "n1"

    def list_jobs(self) -> list[Any]:
        if self.broken is not None:
            raise self.broken
        return list(self.jobs.values())

    def stop_job(self, key: str) -> bool:
        self.stopped.append(key)
        return True

    def delete_job(self, key: str) -> bool:
        self.deletions.append(key)
        if key in self.undeletable:
            raise RuntimeError(f"Request failed with status code 400: cannot delete {key}")
        del self.jobs[key]
        return True


class FakeRayDispatcher(RayDispatcher):
    """A RayDispatcher over FakeJobs, with the alive nodes set by the test."""

    def __init__(self) -> None:
        super().__init__(SystemClock(), "http://ray-head:8265", poll_s=0.0)
        self.fake = FakeJobs()
        self.alive: set[str] | None = {"gpu-01", "gpu-02"}

    def _connect(self) -> Any:
        return self.fake

    def _alive_nodes(self) -> set[str] | None:
        return self.alive

    def _group_reserved(self, run: Any) -> bool:
        return True


def test_a_job_ray_forgets_is_lost_and_errors_from_ray_never_escape_poll() -> None:
    d = FakeRayDispatcher()
    start = order((("gpu-01", 1),), "sleep 60")
    d.start(start)
    d.fake.set(start.key, "RUNNING")
    assert kinds(d.poll()) == [EventKind.RUNNING]

    d.fake.broken = RuntimeError("Request failed with status code 500: oops")
    assert d.poll() == []  # nothing known, nothing raised: the loop keeps planning
    with pytest.raises(DispatchError, match="oops"):
        d.known()  # but a take-over must not go on without knowing

    d.fake.broken = None
    d.fake.jobs.clear()  # the Ray cluster was restarted
    [lost] = d.poll()
    assert (lost.kind, lost.message) == (
        EventKind.LOST,
        "Ray no longer knows this job (restarted?)",
    )


def test_a_node_missing_once_from_rays_list_stops_nothing() -> None:
    d = FakeRayDispatcher()
    start = order((("gpu-01", 1), ("gpu-02", 1)), "sleep 60")
    d.start(start)
    d.fake.set(start.key, "RUNNING")
    assert kinds(d.poll()) == [EventKind.RUNNING]
    d.alive = {"gpu-01"}

    assert d.poll() == []  # once: perhaps a bad answer
    assert d.poll() == []  # twice: given up; reported once Ray has ended it
    assert d.fake.stopped == [start.key]
    d.fake.set(start.key, "STOPPED")
    [lost] = d.poll()
    assert (lost.kind, lost.message) == (EventKind.LOST, "node gpu-02 left")


def test_rays_records_of_jobs_ended_long_ago_are_deleted_a_few_per_refresh() -> None:
    d = FakeRayDispatcher()
    d.keep_ended_s = 86400.0
    long_ago = int((time.time() - 2 * 86400) * 1000)
    for i in range(DELETE_PER_REFRESH + 5):
        old = order((("gpu-01", 1),), "true", job_id=f"old{i}")
        d.fake.submit_job(**submission(old, 1.0, 1.0))
        d.fake.jobs[old.key].status = d.fake.status.SUCCEEDED
        d.fake.jobs[old.key].end_time = long_ago
    recent = order((("gpu-01", 1),), "true", job_id="recent")
    d.fake.submit_job(**submission(recent, 1.0, 1.0))
    d.fake.jobs[recent.key].status = d.fake.status.SUCCEEDED
    d.fake.jobs[recent.key].end_time = int(time.time() * 1000)
    d.fake.submit_job(id="not-ours", submission_id="other-1", entrypoint="true", metadata={})
    d.fake.jobs["other-1"].status = d.fake.status.SUCCEEDED
    d.fake.jobs["other-1"].end_time = long_ago

    d.known()
    assert len(d.fake.jobs) == 5 + 2  # at most DELETE_PER_REFRESH at a time
    d.known()
    assert set(d.fake.jobs) == {recent.key, "other-1"}  # kept: recent, and not gpupool's


def test_a_record_ray_refuses_to_delete_is_asked_once_and_holds_back_no_other() -> None:
    d = FakeRayDispatcher()
    d.keep_ended_s = 86400.0
    long_ago = int((time.time() - 2 * 86400) * 1000)
    keys = []
    for i in range(DELETE_PER_REFRESH + 1):
        old = order((("gpu-01", 1),), "true", job_id=f"old{i}")
        d.fake.submit_job(**submission(old, 1.0, 1.0))
        d.fake.jobs[old.key].status = d.fake.status.SUCCEEDED
        d.fake.jobs[old.key].end_time = long_ago
        keys.append(old.key)
    d.fake.undeletable = set(keys[:DELETE_PER_REFRESH])  # a whole refresh's worth
    d.known()
    d.known()
    assert sorted(d.fake.deletions) == sorted(keys)  # each asked once; the last got its turn
    assert set(d.fake.jobs) == d.fake.undeletable


def test_nodes_are_sighted_at_most_every_nodes_every_s_and_absent_only_twice_in_a_row() -> None:
    d = FakeRayDispatcher()
    d.nodes_every_s = 0.0
    assert d.sight_nodes() is None  # the first list: nothing to compare with yet
    d.alive = {"gpu-01"}
    seen = d.sight_nodes()
    assert seen is not None and seen.present == {"gpu-01", "gpu-02"}  # missing once
    seen = d.sight_nodes()
    assert seen is not None and seen.present == {"gpu-01"}  # twice: gone
    d.alive = None  # the state API did not answer: no judgement
    assert d.sight_nodes() is None

    d.nodes_every_s = 3600.0
    d.alive = {"gpu-01", "gpu-02"}
    assert d.sight_nodes() is not None
    assert d.sight_nodes() is None  # not again within nodes_every_s


def test_job_logs_without_a_dispatcher_tell_an_unknown_job_from_a_ray_away(
    cluster: LocalRayCluster,
) -> None:
    from scheduler.runtime.ray_dispatcher import UnknownRayJob, job_logs

    d = dispatcher(cluster)
    start = order((("gpu-01", 1),), "echo hello from $GPUPOOL_JOB_ID")
    d.start(start)
    wait_for(d, start.key, ENDED)
    assert f"hello from {start.job_id}" in job_logs(cluster.address, cluster.token, start.key)
    with pytest.raises(UnknownRayJob):
        job_logs(cluster.address, cluster.token, "999999-1")
    with pytest.raises(DispatchError, match="refused the token") as refused:
        job_logs(cluster.address, "not-the-token", start.key)
    assert not isinstance(refused.value, UnknownRayJob)
    with pytest.raises(DispatchError, match="is unreachable"):
        job_logs(f"http://127.0.0.1:{free_port()}", cluster.token, start.key)
