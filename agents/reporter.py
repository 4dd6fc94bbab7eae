"""Sends the node's reports to the control plane: POST {server}/api/v1/agents/reports with
`Authorization: Bearer <node token>`, body a `ReportBatch` of the oldest reports waiting, up to
`batch_size` at a time, answer a `ReportAck` (agents/schema.py).

Reports wait in a bounded buffer (`buffer_size`): when it is full the oldest is dropped,
counted and logged. A batch leaves the buffer only once the server has answered for it:

- 2xx: delivered. The ack's interval_s, when it differs, becomes the agent's poll interval.
- connection error, timeout, 5xx, 429: the server is away or busy. The batch stays, and the
  next attempt waits retry_min_s, doubling up to retry_max_s, each with jitter (x0.5..1) so
  that many agents do not come back in step (429's Retry-After is honoured, up to
  retry_max_s). Once the server answers, everything waiting goes out, oldest first.
- 401, 403 (a wrong token, or a token of another node), 404 (no ingest endpoint: a wrong
  --server?) and any other 4xx not below: logged as an error saying what to check; the
  reports stay and the agent keeps trying every `refused_retry_s` (an operator may fix the
  server side without touching the agent).
- 422, 409: the server will never take this batch (bad reports; or reports of a run of the
  agent older than the latest it took, see web/services/telemetry.py): its message is
  logged, the batch dropped and counted (rejected), so that it never blocks the newer ones.
- 413: the batch was too big: batches are halved from then on and it is sent again; a
  single report still too big is dropped and counted (rejected).

A resend is safe: each report carries (boot, seq) and the server ignores a seq it already
holds. `run()` is the sender's thread; `stop()` ends it after one last attempt to deliver
what is waiting, within `final_timeout_s`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import httpx
from pydantic import ValidationError

from agents.schema import NodeReport, ReportAck, ReportBatch

log = logging.getLogger(__name__)

REPORTS_PATH = "/api/v1/agents/reports"
MIN_INTERVAL_S = 0.1
MAX_INTERVAL_S = 3600.0
Outcome = Literal["delivered", "rejected", "smaller", "retry", "refused"]


@dataclass
class ReporterStats:
    delivered: int = 0  # reports the server acknowledged (new or duplicates)
    duplicates: int = 0  # of which it already had
    dropped_full: int = 0  # oldest reports dropped because the buffer was full
    rejected: int = 0  # reports dropped: the server can never take them (422, 409, 413)
    failed_posts: int = 0  # POSTs that did not deliver (server away, busy or refusing)


class Reporter:
    def __init__(
        self,
        server: str,
        token: str,
        node: str,
        *,
        buffer_size: int = 720,
        batch_size: int = 100,
        timeout_s: float = 10.0,
        retry_min_s: float = 1.0,
        retry_max_s: float = 60.0,
        refused_retry_s: float = 60.0,
        final_timeout_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.node = node
        self.stats = ReporterStats()
        # The poll interval the server asked for in its latest ack (None: none yet).
        self.server_interval_s: float | None = None
        self._client = httpx.Client(
            base_url=server,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "gpupool-agent"},
            timeout=timeout_s,
        )
        self._buffer_size = buffer_size
        self._batch_size = batch_size
        self._timeout_s = timeout_s
        self._retry_min_s = retry_min_s
        self._retry_max_s = max(retry_max_s, retry_min_s)
        self._refused_retry_s = refused_retry_s
        self._final_timeout_s = final_timeout_s
        self._clock = clock
        self._jitter = jitter
        self._buffer: deque[NodeReport] = deque()
        self._changed = threading.Condition()
        self._stopping = False
        self._failures = 0  # failed POSTs in a row
        self._retry_at = 0.0  # no POST before this (clock)

    # --- the poller's side ---------------------------------------------------------------

    def add(self, report: NodeReport) -> None:
        """Queue a report (dropping the oldest when the buffer is full) and wake the sender."""
        with self._changed:
            self._buffer.append(report)
            self._trim()
            self._changed.notify()

    def pending(self) -> int:
        with self._changed:
            return len(self._buffer)

    # --- sending -------------------------------------------------------------------------

    def send_pending(self, timeout_s: float | None = None) -> bool:
        """Send what waits, batch after batch, until none is left or one fails. True if
        nothing is left waiting. Does not wait for a backoff to end: callers do."""
        while True:
            with self._changed:
                batch = [
                    self._buffer.popleft() for _ in range(min(self._batch_size, len(self._buffer)))
                ]
            if not batch:
                return True
            outcome = self._post(batch, timeout_s)
            if outcome in ("delivered", "rejected"):
                continue
            with self._changed:
                self._buffer.extendleft(reversed(batch))
                self._trim()
            if outcome != "smaller":
                return False

    def seconds_until_retry(self) -> float:
        return max(0.0, self._retry_at - self._clock())

    def run(self) -> None:
        """The sender's thread: send whenever reports wait and no backoff holds them; after
        stop(), one last attempt for what is left."""
        while True:
            with self._changed:
                while not self._stopping and not (self._buffer and self._clock() >= self._retry_at):
                    self._changed.wait(self.seconds_until_retry() if self._buffer else None)
                if self._stopping:
                    break
            self.send_pending()
        self.flush(self._final_timeout_s)

    def stop(self) -> None:
        """End run() (after its final flush)."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()

    def flush(self, timeout_s: float) -> bool:
        """One last try to deliver everything, within timeout_s, backoff or not."""
        deadline = self._clock() + timeout_s
        delivered = True
        while self.pending():
            left = deadline - self._clock()
            if left <= 0 or not self.send_pending(timeout_s=min(left, self._timeout_s)):
                delivered = False
                break
        if not delivered:
            log.error("%d report(s) could not be delivered before stopping", self.pending())
        return delivered

    def close(self) -> None:
        self._client.close()

    # --- one POST ------------------------------------------------------------------------

    def _post(self, batch: list[NodeReport], timeout_s: float | None) -> Outcome:
        body = ReportBatch(node=self.node, reports=batch).model_dump_json()
        seqs = f"seq {batch[0].seq}..{batch[-1].seq}"
        try:
            response = self._client.post(
                REPORTS_PATH,
                content=body,
                headers={"Content-Type": "application/json"},
                timeout=self._timeout_s if timeout_s is None else timeout_s,
            )
        except httpx.HTTPError as error:
            return self._away(f"cannot reach {self._client.base_url}: {describe(error)}", batch)
        status = response.status_code
        if 200 <= status < 300:
            self._delivered(batch, response)
            return "delivered"
        detail = server_detail(response)
        if status in (409, 422):
            self.stats.rejected += len(batch)
            log.error(
                "the server rejected %d report(s) (%s) and will never take them: %s; dropped",
                len(batch),
                seqs,
                detail,
            )
            return "rejected"
        if status == 413:
            if len(batch) > 1:
                self._batch_size = max(1, len(batch) // 2)
                log.warning(
                    "the server found %d reports too big for one request; sending %d at a time",
                    len(batch),
                    self._batch_size,
                )
                return "smaller"
            self.stats.rejected += 1
            log.error(
                "the server refused a single report as too big (%s): %s; dropped", seqs, detail
            )
            return "rejected"
        if status == 429 or status >= 500:
            wait = retry_after(response)
            return self._away(f"the server answered {status}: {detail}", batch, wait)
        return self._refused(status, detail, batch)

    def _delivered(self, batch: list[NodeReport], response: httpx.Response) -> None:
        if self._failures:
            log.info("the server is back after %d failed attempt(s)", self._failures)
        self._failures = 0
        self._retry_at = 0.0
        self.stats.delivered += len(batch)
        try:
            ack = ReportAck.model_validate_json(response.content)
        except ValidationError as error:
            log.warning(
                "the server took %d report(s) but its answer is not a ReportAck: %s",
                len(batch),
                error,
            )
            return
        self.stats.duplicates += ack.duplicates
        if ack.accepted + ack.duplicates != len(batch):
            log.warning(
                "sent %d report(s), the server acknowledged %d new and %d duplicate(s)",
                len(batch),
                ack.accepted,
                ack.duplicates,
            )
        wanted = min(MAX_INTERVAL_S, max(MIN_INTERVAL_S, ack.interval_s))
        if wanted != self.server_interval_s:
            log.info("the server asks for a report every %g s", wanted)
            self.server_interval_s = wanted

    def _away(self, why: str, batch: list[NodeReport], wait_s: float | None = None) -> Outcome:
        """The server is away or busy: back off."""
        self._failures += 1
        self.stats.failed_posts += 1
        if wait_s is None:
            base = min(self._retry_max_s, self._retry_min_s * 2 ** min(self._failures - 1, 32))
            wait_s = base * (0.5 + 0.5 * self._jitter())
        wait_s = min(wait_s, self._retry_max_s)
        self._retry_at = self._clock() + wait_s
        waiting = self.pending() + len(batch)
        log.warning("%s; %d report(s) waiting, next attempt in %.1f s", why, waiting, wait_s)
        return "retry"

    def _refused(self, status: int, detail: str, batch: list[NodeReport]) -> Outcome:
        """The server refuses us (token, node, address): say what to check, retry slowly."""
        self._failures += 1
        self.stats.failed_posts += 1
        if status in (401, 403):
            what = (
                f"the server refused this node's token (HTTP {status}: {detail}): check the "
                f"token (--token, GPUPOOL_AGENT_TOKEN) and that it is node {self.node!r}'s"
            )
        elif status == 404:
            what = (
                f"no report endpoint at {self._client.base_url}{REPORTS_PATH} (HTTP 404: "
                f"{detail}): check --server (GPUPOOL_AGENT_SERVER)"
            )
        else:
            what = f"the server refused the reports (HTTP {status}: {detail})"
        wait_s = self._refused_retry_s * (0.5 + 0.5 * self._jitter())
        self._retry_at = self._clock() + wait_s
        kept = self.pending() + len(batch)
        log.error("%s; %d report(s) kept, trying again in %.0f s", what, kept, wait_s)
        return "refused"

    def _trim(self) -> None:
        """Drop the oldest reports beyond the buffer's size (the lock is held)."""
        dropped = 0
        while len(self._buffer) > self._buffer_size:
            self._buffer.popleft()
            dropped += 1
        if dropped:
            self.stats.dropped_full += dropped
            total = self.stats.dropped_full
            if total == dropped or total % 100 < dropped:  # the first, then every 100th
                log.warning(
                    "report buffer full (%d): dropped the oldest; %d dropped so far",
                    self._buffer_size,
                    total,
                )


def server_detail(response: httpx.Response) -> str:
    """The server's own explanation: FastAPI's `detail`, else the start of the body."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    text = str(detail) if detail is not None else response.text
    return " ".join(text.split())[:500] or response.reason_phrase


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def describe(error: httpx.HTTPError) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}" if text != type(error).__name__ else text
