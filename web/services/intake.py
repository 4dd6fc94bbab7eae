"""Submissions at rate: many requests, one transaction (group commit).

Each request is checked at once against reference data (projects, quotas, the pool's shape)
read at most `max_age_s` ago, then handed to one writer thread that stores every submission
waiting at that moment in one transaction. A request is answered only after that commit, so
an accepted job survives a crash of the server the instant after. With SQLite (one writer
at a time) this is the difference between hundreds and thousands of submissions a second.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from web.db import read_session, write_session
from web.models import Job, JobCreate
from web.services.auth import Principal
from web.services.jobs import (
    Reference,
    SubmitLimits,
    Submitted,
    load_reference,
    prepare,
    store,
    stored_by_idempotency_keys,
)

log = logging.getLogger("gpupool.intake")


@dataclass(slots=True)
class _Pending:
    user: str
    key: str | None
    jobs: list[Job]
    result: Future[Submitted] = field(default_factory=Future)


class SubmissionIntake:
    def __init__(
        self, engine: Engine, limits: SubmitLimits, max_age_s: float = 1.0, max_batch: int = 500
    ) -> None:
        self.engine, self.limits = engine, limits
        self.max_age_s, self.max_batch = max_age_s, max_batch
        self._reference: tuple[float, Reference] | None = None
        self._reference_lock = threading.Lock()
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._writer: threading.Thread | None = None

    def start(self) -> None:
        if self._writer is None:
            self._writer = threading.Thread(target=self._write, name="gpupool-intake", daemon=True)
            self._writer.start()

    def stop(self) -> None:
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout=30)
            self._writer = None

    def refresh(self) -> None:
        """Forget the reference data (a project, quota or node changed here)."""
        self._reference = None

    def submit(self, asker: Principal, spec: JobCreate, now: float) -> Future[Submitted]:
        """Check now (raises the service's errors); store with the next group commit."""
        jobs = prepare(self._current_reference(now), asker, spec, now, self.limits)
        if self._writer is None:
            self.start()
        pending = _Pending(asker.name, spec.idempotency_key, jobs)
        self._queue.put(pending)
        return pending.result

    def _current_reference(self, now: float) -> Reference:
        cached = self._reference
        if cached is not None and now - cached[0] < self.max_age_s:
            return cached[1]
        with self._reference_lock:
            cached = self._reference
            if cached is None or now - cached[0] >= self.max_age_s:
                with read_session(self.engine) as session:
                    cached = (now, load_reference(session))
                self._reference = cached
        return cached[1]

    def _write(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(item)
            try:
                self._commit(batch)
            except Exception as err:  # answered to every waiting request; the writer goes on
                log.exception("storing %d submissions failed", len(batch))
                for item in batch:
                    if not item.result.done():
                        item.result.set_exception(err)

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            with write_session(self.engine) as session:
                fresh, repeats = self._split(session, batch)
                store(session, [item.jobs for item in fresh])
        except IntegrityError:
            # An idempotency key raced in from another server: store one by one.
            for item in batch:
                self._commit_one(item)
            return
        for item in fresh:
            item.result.set_result(Submitted(item.jobs, duplicate=False))
        for item, earlier in repeats:
            item.result.set_result(Submitted(earlier, duplicate=True))

    def _split(
        self, session: Session, batch: list[_Pending]
    ) -> tuple[list[_Pending], list[tuple[_Pending, list[Job]]]]:
        """New submissions, and repeats of a key (stored before, or earlier in this batch)."""
        fresh: list[_Pending] = []
        repeats: list[tuple[_Pending, list[Job]]] = []
        keys = {(item.user, item.key) for item in batch if item.key is not None}
        seen = stored_by_idempotency_keys(session, keys)
        for item in batch:
            if item.key is None:
                fresh.append(item)
                continue
            known = seen.get((item.user, item.key))
            if known:
                repeats.append((item, known))
            else:
                fresh.append(item)
                seen[(item.user, item.key)] = item.jobs
        return fresh, repeats

    def _commit_one(self, item: _Pending) -> None:
        try:
            with write_session(self.engine) as session:
                fresh, repeats = self._split(session, [item])
                store(session, [i.jobs for i in fresh])
        except Exception as err:
            item.result.set_exception(err)
            return
        earlier = repeats[0][1] if repeats else item.jobs
        item.result.set_result(Submitted(earlier, duplicate=bool(repeats)))
