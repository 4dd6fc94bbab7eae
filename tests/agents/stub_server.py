"""A stand-in for the control plane's report endpoint (POST /api/v1/agents/reports), for the
agent's tests: a real HTTP server on loopback, in a thread, that records what it gets and
answers as the test scripts it (the real endpoint lives in web/, tested there).

It takes a report once per (boot, seq), like the server must, and answers a ReportAck.
`answers` holds statuses to give to the next POSTs (then 200 again); `fixed_status`, when
set, is given to every POST; `lose_acks` POSTs are taken but answered 503 as if the answer
was lost on the way. `listen()` can start it on a port reserved before (the agent finding
nothing there until then: connection refused).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPORTS_PATH = "/api/v1/agents/reports"


@dataclass
class Post:
    status: int
    authorization: str
    body: dict[str, Any]


@dataclass
class StubServer:
    port: int
    interval_s: float = 5.0
    answers: deque[int] = field(default_factory=deque)
    fixed_status: int | None = None
    lose_acks: int = 0
    retry_after: str | None = None  # sent with 429 and 503
    posts: list[Post] = field(default_factory=list)
    taken: list[dict[str, Any]] = field(default_factory=list)  # reports, in the order taken
    last_seq: dict[str, int] = field(default_factory=dict)  # per boot
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def listen(self) -> StubServer:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, answer = stub.answer(self.path, body)
                with stub.lock:
                    auth = self.headers.get("Authorization", "")
                    stub.posts.append(Post(status, auth, body))
                data = json.dumps(answer).encode()
                self.send_response(status)
                if status in (429, 503) and stub.retry_after is not None:
                    self.send_header("Retry-After", stub.retry_after)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the tests look at `posts`

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        serve = partial(self._server.serve_forever, poll_interval=0.02)
        threading.Thread(target=serve, daemon=True).start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            if path != REPORTS_PATH:
                return 404, {"detail": "Not Found"}
            if self.fixed_status is not None:
                status = self.fixed_status
            else:
                status = self.answers.popleft() if self.answers else 200
            if status != 200:
                return status, {"detail": f"scripted {status}"}
            accepted = duplicates = 0
            for report in body["reports"]:
                boot, seq = report["boot"], report["seq"]
                if seq <= self.last_seq.get(boot, 0):
                    duplicates += 1
                    continue
                self.last_seq[boot] = seq
                self.taken.append(report)
                accepted += 1
            if self.lose_acks:
                self.lose_acks -= 1
                return 503, {"detail": "the answer was lost"}
            last = max((self.last_seq.get(r["boot"], 0) for r in body["reports"]), default=0)
            ack = {
                "accepted": accepted,
                "duplicates": duplicates,
                "last_seq": last,
                "interval_s": self.interval_s,
            }
            return 200, ack

    def seqs(self) -> list[int]:
        with self.lock:
            return [report["seq"] for report in self.taken]


def free_port() -> socket.socket:
    """A socket bound to a free loopback port and not listening: connecting to it is refused
    until it is closed and a server listens there (`StubServer(port).listen()`)."""
    reserved = socket.socket()
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reserved.bind(("127.0.0.1", 0))
    return reserved


def wait_until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """Wait for condition() (a deadline against hangs, not a measurement)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout_s} s")
        time.sleep(0.01)
