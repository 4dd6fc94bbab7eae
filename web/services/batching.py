"""Group commit, shared by the submissions' and the agents' writers: one thread takes every
request waiting at that moment (up to a limit) as one batch, stores it in one transaction
and answers each request once, after the commit."""

from __future__ import annotations

import logging
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

T = TypeVar("T")
log = logging.getLogger("gpupool.batching")


class Request(Protocol):
    @property
    def result(self) -> Future[Any]: ...


R = TypeVar("R", bound=Request)


class GroupCommitWriter(ABC, Generic[R]):
    """The writer thread and its queue. A subclass stores a batch (`store`, which answers
    each request), may do more between batches (`between_batches`), and names what it
    stores (`what`, for the log) and its thread (`thread_name`). A failed store answers
    every request of the batch with the error; the writer goes on."""

    what = "requests"
    thread_name = "gpupool-writer"

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self._queue: queue.Queue[R | None] = queue.Queue()
        self._writer: threading.Thread | None = None

    def start(self) -> None:
        if self._writer is None:
            self._writer = threading.Thread(target=self._write, name=self.thread_name, daemon=True)
            self._writer.start()

    def stop(self) -> None:
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout=30)
            self._writer = None

    def enqueue(self, request: R) -> None:
        """Hand a request to the writer (started if it is not yet)."""
        if self._writer is None:
            self.start()
        self._queue.put(request)

    @abstractmethod
    def store(self, batch: list[R]) -> None:
        """Store the batch and answer each of its requests."""

    def between_batches(self) -> None:
        """After each batch but the last."""

    def _write(self) -> None:
        while True:
            batch, stop = take_batch(self._queue, self.max_batch)
            # A request that went away before its turn (its future cancelled) is not
            # stored: it got no answer, so it may come again. From here on, none can be.
            batch = [item for item in batch if item.result.set_running_or_notify_cancel()]
            try:
                if batch:
                    self.store(batch)
            except Exception as err:  # answered to every waiting request; the writer goes on
                log.exception("storing %d %s failed", len(batch), self.what)
                for item in batch:
                    settle(item.result, err)
            if stop:
                return
            self.between_batches()


def take_batch(waiting: queue.Queue[T | None], max_batch: int) -> tuple[list[T], bool]:
    """Block for the first request, then take what else waits, up to `max_batch`; and
    whether the writer was asked to stop (None in the queue) after this batch."""
    first = waiting.get()
    if first is None:
        return [], True
    batch = [first]
    while len(batch) < max_batch:
        try:
            item = waiting.get_nowait()
        except queue.Empty:
            break
        if item is None:
            return batch, True
        batch.append(item)
    return batch, False


def settle(result: Future[Any], answer: object) -> None:
    """Answer a request, unless it was answered (or gave up) already."""
    if result.done():
        return
    try:
        if isinstance(answer, BaseException):
            result.set_exception(answer)
        else:
            result.set_result(answer)
    except InvalidStateError:
        pass


class CommitFailed(Exception):
    """The COMMIT itself failed: whether the batch is stored is not known, so it is not
    stored again (a resend finds out)."""


def worth_retrying(err: BaseException) -> bool:
    """Whether storing in parts may succeed where the whole failed: not when the commit
    itself failed (it may have stored the whole) nor when the database is out of reach
    (each part would wait for it in turn)."""
    if isinstance(err, CommitFailed | OperationalError | InterfaceError):
        return False
    return not (isinstance(err, DBAPIError) and err.connection_invalidated)


def cause(err: BaseException) -> BaseException:
    """What to answer for `err`: a failed commit's own error."""
    return err.__cause__ if isinstance(err, CommitFailed) and err.__cause__ else err


def store_one_by_one_on_failure(
    batch: Sequence[R],
    store: Callable[[list[R]], Sequence[tuple[R, object]]],
    what: str,
    who: Callable[[R], str],
) -> list[tuple[R, object]]:
    """`store(batch)` (one transaction: each request's answer); if it fails, and storing
    in parts may succeed, each request stored on its own, so that only a bad one fails
    (answered with its error, logged) and the others are stored."""
    try:
        return list(store(list(batch)))
    except Exception as err:
        if len(batch) == 1 or not worth_retrying(err):
            log.error("storing %d %s failed: %s", len(batch), what, err)
            return [(item, cause(err)) for item in batch]
        log.warning(
            "storing %d %s together failed (%s); storing them one by one",
            len(batch),
            what,
            type(err).__name__,
        )
    answers: list[tuple[R, object]] = []
    for item in batch:
        try:
            answers += store([item])
        except Exception as one:
            log.exception("storing %s of %s failed", what, who(item))
            answers.append((item, cause(one)))
    return answers
