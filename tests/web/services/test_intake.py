"""The group-commit intake below the API: a bad submission fails alone, a request that went
away is neither stored nor answered, a refused resend finds its first jobs, and the writer
keeps the reference data fresh while submissions keep coming."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import col, select

from tests.web.conftest import POOL_TOML, START, unique
from web.db import read_session, write_session
from web.models import Job, JobCreate, MemberRole, Role
from web.services import intake as intake_module
from web.services.auth import Principal
from web.services.batching import settle
from web.services.errors import Conflict, ServiceError
from web.services.intake import SubmissionIntake, _Pending
from web.services.jobs import Reference, SubmitLimits, Submitted, prepare
from web.services.seed import seed_pool

ALICE = Principal("alice", Role.RESEARCHER, {"p1": MemberRole.PI})
LIMITS = SubmitLimits(default_max_runtime_s=3600.0, max_array_size=50)


@pytest.fixture(scope="module")
def seeded(module_engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    toml = tmp_path_factory.mktemp("seed") / "pool.toml"
    toml.write_text(POOL_TOML)
    with write_session(module_engine) as session:
        seed_pool(session, toml, START)
    return module_engine


class Clock:
    def __init__(self) -> None:
        self.t = START

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def intake(seeded: Engine) -> Iterator[SubmissionIntake]:
    intake = SubmissionIntake(seeded, LIMITS, clock=Clock())
    try:
        yield intake
    finally:
        intake.stop()


def pending(
    intake: SubmissionIntake, asker: Principal = ALICE, key: str | None = None, **spec: Any
) -> _Pending:
    """A checked submission, as SubmissionIntake.submit queues it (named uniquely)."""
    job = JobCreate(
        project="p1", entrypoint="x", gpus=1, name=unique("job"), idempotency_key=key, **spec
    )
    jobs = prepare(intake.reference(START), asker, job, START, LIMITS)
    return _Pending(asker, key, jobs)


def refused(asker: Principal, key: str, refusal: ServiceError) -> _Pending:
    return _Pending(asker, key, [], refusal)


def in_one_batch(intake: SubmissionIntake, items: list[_Pending]) -> list[int]:
    """Queue `items` before the writer starts, so that it takes them as one batch; wait
    for every answer. The sizes of the transactions the writer tried."""
    sizes: list[int] = []
    store = intake._store

    def counted(batch: list[_Pending]) -> Any:
        sizes.append(len(batch))
        return store(batch)

    intake._store = counted  # type: ignore[method-assign]
    for item in items:
        intake._queue.put(item)
    intake.start()
    for item in items:
        deadline = time.monotonic() + 30
        while not item.result.done():
            assert time.monotonic() < deadline, "no answer"
            time.sleep(0.005)
    return sizes


def stored_names(engine: Engine, items: list[_Pending]) -> set[str]:
    names = [job.name for item in items for job in item.jobs]
    with read_session(engine) as session:
        return set(session.exec(select(Job.name).where(col(Job.name).in_(names))).all())


def unserializable(job: Job) -> None:
    job.runtime_env = {"x": object()}  # not JSON: fails before the insert reaches the database


def unknown_project(job: Job) -> None:
    job.project = "no-such-project"  # a foreign key the database refuses (IntegrityError)


@pytest.mark.parametrize(
    "spoil",
    [unserializable, unknown_project],
    ids=["not-serializable", "foreign-key"],
)
def test_a_bad_submission_fails_alone_and_the_rest_of_its_batch_is_stored(
    intake: SubmissionIntake, seeded: Engine, spoil: Callable[[Job], None]
) -> None:
    items = [pending(intake) for _ in range(5)]
    items.append(pending(intake, count=3))  # an array among them
    bad = items[2]
    spoil(bad.jobs[0])

    sizes = in_one_batch(intake, items)

    assert sizes[0] == len(items)  # tried together first, then one by one
    assert bad.result.exception() is not None
    good = [item for item in items if item is not bad]
    for item in good:
        answer = item.result.result()
        assert answer.duplicate is False and all(job.id for job in answer.jobs)
    assert stored_names(seeded, items) == {job.name for item in good for job in item.jobs}
    array = good[-1].result.result().jobs
    assert {job.array_id for job in array} == {array[0].id}


def test_a_request_that_went_away_is_neither_stored_nor_answered_and_the_rest_are(
    intake: SubmissionIntake, seeded: Engine
) -> None:
    items = [pending(intake) for _ in range(3)]
    assert items[1].result.cancel()  # its caller gave up before the writer got to it

    in_one_batch(intake, items)

    assert items[1].result.cancelled()
    assert [item.result.result().duplicate for item in (items[0], items[2])] == [False, False]
    assert stored_names(seeded, items) == {items[0].jobs[0].name, items[2].jobs[0].name}


@pytest.mark.parametrize(
    "finish",
    [
        lambda f: f.cancel(),
        lambda f: f.set_result(Submitted([], duplicate=False)),
        lambda f: f.set_exception(RuntimeError("answered")),
    ],
    ids=["cancelled", "answered", "failed"],
)
def test_settling_a_future_that_is_done_already_changes_nothing(
    finish: Callable[[Future[Submitted]], Any],
) -> None:
    result: Future[Submitted] = Future()
    finish(result)
    before = (result.cancelled(), result.done())
    settle(result, Submitted([], duplicate=True))  # neither raises nor changes it
    settle(result, RuntimeError("late"))
    assert (result.cancelled(), result.done()) == before


# A resend that the checks refuse now (its project closed, its quota lowered) is answered
# with the jobs its key made, if its sender may still see them.
RESENDS = [
    # id, stored before (in an earlier batch), in the same batch, who resends, answered with
    ("stored-before", True, False, ALICE, "first jobs"),
    ("earlier-in-the-batch", False, True, ALICE, "first jobs"),
    ("never-seen", False, False, ALICE, "refusal"),
    ("no-longer-a-member", True, False, Principal("alice", Role.RESEARCHER, {}), "refusal"),
]


@pytest.mark.parametrize(
    ("before", "same_batch", "resender", "answer"),
    [pytest.param(*case[1:], id=case[0]) for case in RESENDS],
)
def test_a_refused_resend_is_answered_with_its_first_jobs(
    intake: SubmissionIntake,
    seeded: Engine,
    before: bool,
    same_batch: bool,
    resender: Principal,
    answer: str,
) -> None:
    key = unique("key")
    first = pending(intake, key=key, count=2)
    if before:
        in_one_batch(intake, [first])
        intake.stop()
    refusal = Conflict("project 'p1' is closed", field="project")
    resend = refused(resender, key, refusal)

    in_one_batch(intake, [first, resend] if same_batch else [resend])

    if answer == "refusal":
        assert resend.result.exception() is refusal
    else:
        again = resend.result.result()
        assert again.duplicate is True
        assert [job.id for job in again.jobs] == [job.id for job in first.jobs]


def test_the_writer_reloads_the_reference_data_while_submissions_keep_coming(
    intake: SubmissionIntake, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = intake.clock
    assert isinstance(clock, Clock)
    loads: list[tuple[float, str]] = []
    load = intake_module.load_reference

    def counted(session: Any) -> Reference:
        loads.append((clock(), threading.current_thread().name))
        return load(session)

    monkeypatch.setattr(intake_module, "load_reference", counted)

    def submit_at(t: float) -> None:
        clock.t = START + t
        spec = JobCreate(project="p1", entrypoint="x", gpus=1)
        intake.submit(ALICE, spec, clock()).result(timeout=30)

    def reloaded() -> None:  # the writer reloads after it answered: wait for it
        deadline = time.monotonic() + 10
        while (cached := intake._reference) is None or cached[0] != clock():
            assert time.monotonic() < deadline, loads
            time.sleep(0.005)

    submit_at(0.0)  # nothing loaded yet: the request loads it
    assert loads == [(START, "MainThread")]
    submit_at(0.3)  # under half its age: nobody reloads
    submit_at(0.6)  # over half its age: the writer reloads, after answering
    reloaded()
    assert loads[1] == (START + 0.6, "gpupool-intake")
    submit_at(1.2)  # over the maximum age since the first load, not since the writer's
    reloaded()
    assert [thread for _, thread in loads] == ["MainThread", "gpupool-intake", "gpupool-intake"]
    submit_at(5.0)  # after a quiet spell the request loads it again
    assert loads[3] == (START + 5.0, "MainThread")


def test_data_read_before_a_refresh_is_not_kept_after_it(
    intake: SubmissionIntake, monkeypatch: pytest.MonkeyPatch
) -> None:
    load = intake_module.load_reference

    def changed_meanwhile(session: Any) -> Reference:
        reference = load(session)
        intake.refresh()  # a quota changed and its route said so while this load ran
        return reference

    monkeypatch.setattr(intake_module, "load_reference", changed_meanwhile)
    intake.reference(START)
    assert intake._reference is None  # the next request loads afresh

    monkeypatch.setattr(intake_module, "load_reference", load)
    intake.reference(START)
    assert intake._reference is not None
