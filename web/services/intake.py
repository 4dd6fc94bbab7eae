"""Submissions at rate: many requests, one transaction (group commit).

Each request is checked at once against reference data (projects, quotas, the pool's shape)
read at most `max_age_s` ago, then handed to one writer thread that stores every submission
waiting at that moment in one transaction. A request is answered only after that commit, so
an accepted job survives a crash of the server the instant after. With SQLite (one writer
at a time) this is the difference between hundreds and thousands of submissions a second.

While submissions keep coming, the writer also reloads the reference data (when it is half
its maximum age), so requests find it fresh and never wait for it; only the first request
after a quiet spell, or after a change on this server (`refresh`), loads it itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlmodel import Session

from web.db import read_session, write_session
from web.models import Job, JobCreate
from web.services.auth import Principal
from web.services.batching import (
    CommitFailed,
    GroupCommitWriter,
    settle,
    store_one_by_one_on_failure,
)
from web.services.errors import Conflict, ServiceError
from web.services.jobs import (
    Reference,
    SubmitLimits,
    Submitted,
    load_reference,
    prepare,
    resent,
    store,
    stored_by_idempotency_keys,
)

log = logging.getLogger("gpupool.intake")

Answer = Submitted | BaseException


@dataclass(slots=True)
class _Pending:
    asker: Principal
    key: str | None
    jobs: list[Job]
    # Refused by the checks: answered so, unless its idempotency key made jobs before.
    refusal: ServiceError | None = None
    result: Future[Submitted] = field(default_factory=Future)

    @property
    def user(self) -> str:
        return self.asker.name


class SubmissionIntake(GroupCommitWriter[_Pending]):
    what = "submissions"
    thread_name = "gpupool-intake"

    def __init__(
        self,
        engine: Engine,
        limits: SubmitLimits,
        max_age_s: float = 1.0,
        max_batch: int = 500,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(max_batch)
        self.engine, self.limits, self.max_age_s = engine, limits, max_age_s
        self.clock = clock  # the time the requests' `now` is in
        self._reference: tuple[float, Reference] | None = None
        # refresh() bumps it; data read before a refresh is not kept after it.
        self._generation = 0
        self._swap_lock = threading.Lock()  # the generation check and the store, together
        self._reference_lock = threading.Lock()  # one synchronous load at a time

    def refresh(self) -> None:
        """Forget the reference data (a project, quota or node changed here)."""
        with self._swap_lock:
            self._generation += 1
            self._reference = None

    def submit(self, asker: Principal, spec: JobCreate, now: float) -> Future[Submitted]:
        """Check now (raises the service's errors); store with the next group commit."""
        try:
            pending = _Pending(
                asker,
                spec.idempotency_key,
                prepare(self.reference(now), asker, spec, now, self.limits),
            )
        except ServiceError as refusal:
            if spec.idempotency_key is None:
                raise
            # Perhaps a resend of a submission accepted before (its project has closed
            # since, its quota was lowered): the writer looks the key up, after whatever
            # was queued before it, and answers with the first jobs if it finds them.
            pending = _Pending(asker, spec.idempotency_key, [], refusal)
        self.enqueue(pending)
        return pending.result

    def reference(self, now: float) -> Reference:
        """The reference data, read at most max_age_s before `now`."""
        cached = self._reference
        if cached is not None and now - cached[0] < self.max_age_s:
            return cached[1]
        with self._reference_lock:
            cached = self._reference
            if cached is None or now - cached[0] >= self.max_age_s:
                return self._load(now)
        return cached[1]

    def _load(self, now: float) -> Reference:
        generation = self._generation
        with read_session(self.engine) as session:
            reference = load_reference(session)
        with self._swap_lock:
            if generation == self._generation:
                self._reference = (now, reference)
        return reference

    def _keep_reference_fresh(self) -> None:
        """In the writer, between batches: reload the reference data once it is half its
        maximum age, so that the requests of a steady stream never load it themselves."""
        now = self.clock()
        cached = self._reference
        if cached is not None and now - cached[0] < self.max_age_s / 2:
            return
        try:
            self._load(now)
        except Exception:  # the next request loads it, or says why it cannot
            log.exception("reloading the submissions' reference data failed")

    def between_batches(self) -> None:
        self._keep_reference_fresh()

    def store(self, batch: list[_Pending]) -> None:
        self._commit(batch)

    def _commit(self, batch: list[_Pending]) -> None:
        """Store the batch in one transaction; if that fails before its commit, store each
        submission on its own, so that only a bad one fails (or one whose idempotency key
        raced in from another server finds its first jobs)."""
        answers = store_one_by_one_on_failure(
            batch, self._store, "submissions", lambda item: item.user
        )
        for item, answer in answers:
            settle(item.result, answer)

    def _store(self, batch: list[_Pending]) -> list[tuple[_Pending, Answer]]:
        """One transaction: each submission's answer, to give once it is committed."""
        with write_session(self.engine) as session:
            fresh, answers = self._split(session, batch)
            store(session, [item.jobs for item in fresh])
            try:
                session.commit()
            except Exception as err:
                raise CommitFailed(str(err)) from err
        return [(item, Submitted(item.jobs, duplicate=False)) for item in fresh] + answers

    def _split(
        self, session: Session, batch: list[_Pending]
    ) -> tuple[list[_Pending], list[tuple[_Pending, Answer]]]:
        """New submissions to store, and the answers of the others: repeats of a key
        (stored before, or earlier in this batch) and refusals."""
        fresh: list[_Pending] = []
        answers: list[tuple[_Pending, Answer]] = []
        keys = {(item.user, item.key) for item in batch if item.key is not None}
        seen = stored_by_idempotency_keys(session, keys)
        for item in batch:
            known = seen.get((item.user, item.key)) if item.key is not None else None
            if known:
                # The first jobs, if its maker may still see them (a resend); why not, else.
                try:
                    answers.append((item, resent(item.asker, known)))
                except Conflict as unseen:
                    answers.append((item, item.refusal or unseen))
            elif item.refusal is not None:
                answers.append((item, item.refusal))
            else:
                fresh.append(item)
                if item.key is not None:
                    seen[(item.user, item.key)] = item.jobs
        return fresh, answers
