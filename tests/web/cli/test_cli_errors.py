"""No traceback reaches a CLI user, whatever the server answers: real `gpupool` processes
against a stand-in server that answers what a broken, hostile or foreign server might (a
500 page with escape sequences, a refusal quoting them, JSON of the wrong shape or nested
past reading, lone surrogates, no answer at all). Each is one line on stderr and exit 1, or
the output with what a terminal would act on escaped."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.web.cli.test_client_commands import CLI, REPO, client_env

Answer = tuple[int, str, bytes]  # status, content type, body
RAW = ("\x1b", "\x07", "\x9b", "\u202e")


class StandIn:
    """A server answering each path (query left out) as told; anything else 404."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer | None] = {}  # None: close without answering
        answers = self.answers

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                answer = answers.get(self.path.split("?")[0], (404, "application/json", b"{}"))
                if answer is None:
                    self.close_connection = True
                    return
                status, kind, body = answer
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, path: str, status: int, body: object, kind: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.answers["/api/v1" + path] = (status, kind, data)


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    server = StandIn()
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


def gpupool(stand_in: StandIn, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = client_env(tmp_path) | {"GPUPOOL_SERVER": stand_in.url, "GPUPOOL_TOKEN": "gpp_test"}
    done = subprocess.run(
        [*CLI, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stderr
    assert not any(char in done.stderr + done.stdout for char in RAW), repr(done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


JOB = {
    "id": 1,
    "name": "x\x1b]0;pwned\x07\ud800",
    "project": "p\u202eq",
    "user": "u\x9b2J",
    "state": "queued",
    "attempt": 0,
    "outcome": None,
    "gpus": 1,
    "flavor": "*",
    "entrypoint": "python a.py",
    "reason": "waiting\x1b[5m",
    "submitted_at": "2026-05-01T00:00:00",
    "started_at": None,
    "ended_at": None,
}


def test_lone_surrogates_and_escapes_in_an_answer_are_printed_escaped(
    stand_in: StandIn, tmp_path: Path
) -> None:
    stand_in.answer("/jobs/1", 200, JOB)
    stand_in.answer("/jobs/1/usage", 200, [])
    done = gpupool(stand_in, tmp_path, "job", "1")
    assert done.returncode == 0, done.stderr
    assert "x\\x1b]0;pwned\\x07\\ud800" in done.stdout and "u\\x9b2J" in done.stdout
    assert not any(char in done.stdout for char in RAW)
    as_json = gpupool(stand_in, tmp_path, "job", "1", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["name"] == JOB["name"]
    stand_in.answer("/jobs", 200, {"total": 1, "items": [JOB]})
    queue = gpupool(stand_in, tmp_path, "queue")
    assert queue.returncode == 0, queue.stderr
    assert "waiting\\x1b[5m" in queue.stdout and not any(c in queue.stdout for c in RAW)


def test_a_500_page_with_escapes_is_one_escaped_line(stand_in: StandIn, tmp_path: Path) -> None:
    page = "<h1>\x1b[2Jboom\x9b</h1>".encode()  # ESC and (in UTF-8) a C1 CSI
    stand_in.answer("/jobs", 500, page, "text/html; charset=utf-8")
    line = one_error_line(gpupool(stand_in, tmp_path, "queue"))
    assert line == "error: HTTP 500 Internal Server Error: <h1>\\x1b[2Jboom\\x9b</h1>"


def test_a_refusal_quoting_escapes_is_shown_escaped(stand_in: StandIn, tmp_path: Path) -> None:
    stand_in.answer("/projects/p", 404, {"detail": "no project 'p\x1b]0;x\x07\u202e'"})
    line = one_error_line(gpupool(stand_in, tmp_path, "project", "show", "p"))
    assert line == "error: no project 'p\\x1b]0;x\\x07\\u202e'"


@pytest.mark.parametrize(
    "body",
    [
        b"<html>not a gpupool</html>",
        b"[" * 100_000 + b"]" * 100_000,  # nested past what Python's parser reads
        b'{"total": 1, "items": [\xff]}',  # not UTF-8
    ],
    ids=["html", "deep", "not-utf8"],
)
def test_an_answer_that_is_not_json_is_one_line(
    stand_in: StandIn, tmp_path: Path, body: bytes
) -> None:
    stand_in.answer("/jobs", 200, body)
    line = one_error_line(gpupool(stand_in, tmp_path, "queue"))
    assert "with something that is not JSON; is it a gpupool server?" in line


@pytest.mark.parametrize("body", [[], {"items": []}, {"total": "many", "items": []}])
def test_json_of_the_wrong_shape_is_one_line(
    stand_in: StandIn, tmp_path: Path, body: object
) -> None:
    stand_in.answer("/jobs", 200, body)
    line = one_error_line(gpupool(stand_in, tmp_path, "queue"))
    assert f"the answer to GET {stand_in.url}/api/v1/jobs" in line
    assert "is not what this gpupool expects" in line


def test_a_log_answer_without_its_headers_is_one_line(stand_in: StandIn, tmp_path: Path) -> None:
    stand_in.answer("/jobs/1/logs", 200, b"output", "text/plain")
    line = one_error_line(gpupool(stand_in, tmp_path, "logs", "1"))
    assert "is not what this gpupool expects" in line


def test_a_server_that_closes_without_answering_is_one_line(
    stand_in: StandIn, tmp_path: Path
) -> None:
    stand_in.answers["/api/v1/jobs"] = None
    line = one_error_line(gpupool(stand_in, tmp_path, "queue"))
    assert f"talking to the gpupool server at {stand_in.url} failed" in line


def on_a_terminal(stand_in: StandIn, tmp_path: Path, *args: str) -> str:
    """What the command writes to stdout when stdout is a terminal (a pseudo-terminal)."""
    env = client_env(tmp_path) | {"GPUPOOL_SERVER": stand_in.url, "GPUPOOL_TOKEN": "gpp_test"}
    leader, follower = pty.openpty()
    with subprocess.Popen(
        [*CLI, *args], cwd=REPO, env=env, stdout=follower, stderr=subprocess.PIPE
    ) as process:
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the command has closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        _, err = process.communicate(timeout=60)
    os.close(leader)
    assert process.returncode == 0 and b"Traceback" not in err, err
    return shown.decode().replace("\r\n", "\n")  # the terminal's own line ends


def test_a_statement_is_escaped_on_a_terminal_and_exact_when_piped(
    stand_in: StandIn, tmp_path: Path
) -> None:
    csv = "project,user\np\x1b]0;pwned\x07,u\u202ex\n".encode()
    stand_in.answer("/projects/p/statements/2026-05", 200, csv, "text/csv")
    args = ("statement", "-p", "p", "--period", "2026-05", "--format", "csv")
    assert on_a_terminal(stand_in, tmp_path, *args) == (
        "project,user\np\\x1b]0;pwned\\x07,u\\u202ex\n\n"
    )
    env = client_env(tmp_path) | {"GPUPOOL_SERVER": stand_in.url, "GPUPOOL_TOKEN": "gpp_test"}
    piped = subprocess.run([*CLI, *args], cwd=REPO, env=env, capture_output=True, timeout=60)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == csv + b"\n"  # the bytes as signed, for a file or a program
