"""Group commit's two small pieces, shared by the submissions' and the agents' writers:
take every request waiting now (up to a limit) as one batch, and answer a request once."""

from __future__ import annotations

import queue
from concurrent.futures import Future, InvalidStateError
from typing import Any, TypeVar

T = TypeVar("T")


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
