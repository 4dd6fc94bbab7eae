"""Nothing another user stored reaches a terminal raw: `gpupool queue` and `gpupool job`
show control characters, line separators and bidirectional overrides as visible escapes;
--json stays the same JSON (the server's error messages: test_cli_errors.py). Real
`gpupool` processes against `gpupool up` (nothing runs the jobs); the hostile values are
written straight into its database, as a row stored before the intake refused them would
be."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

import pytest

from tests.web.cli.test_client_commands import Pool, running_up, submitted_id, token_for

# Retitles the window, clears the screen, a C1 CSI, a right-to-left override, a line
# separator: each would act on the terminal if printed raw. (Lone surrogates, which SQLite
# cannot store, come in JSON answers: test_cli_errors.py.)
HOSTILE_NAME = "train\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eevil\u2028x"
SHOWN_NAME = "train\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\u202eevil\\u2028x"
HOSTILE_ENTRYPOINT = "python a.py\r\x1b[1Arm -rf ~\x1b[K"
SHOWN_ENTRYPOINT = "python a.py\\r\\x1b[1Arm -rf ~\\x1b[K"
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\u2028", "\r")


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    yield from running_up(tmp_path_factory.mktemp("escaping"), "none")


@pytest.fixture(scope="module")
def jiwoo(pool: Pool) -> str:
    return token_for(pool, "jiwoo")  # PI of kaist-llm


@pytest.fixture(scope="module")
def hostile_job(pool: Pool, jiwoo: str) -> int:
    done = pool.ok("submit", "-p", "kaist-llm", "-g", "1", "--", "true", token=jiwoo)
    job = submitted_id(done.out)
    with sqlite3.connect(pool.data / "gpupool.db") as db:
        db.execute(
            "UPDATE jobs SET name = ?, entrypoint = ? WHERE id = ?",
            (HOSTILE_NAME, HOSTILE_ENTRYPOINT, job),
        )
    return job


def nothing_raw(text: str) -> bool:
    return not any(char in text for char in RAW)


def test_queue_and_job_show_another_users_job_name_escaped(pool: Pool, hostile_job: int) -> None:
    queue = pool.run("queue", "--all")  # the admin: sees everyone's jobs
    assert queue.code == 0, queue.err
    assert nothing_raw(queue.out) and nothing_raw(queue.err)
    assert SHOWN_NAME in queue.out
    job = pool.run("job", str(hostile_job))
    assert job.code == 0, job.err
    assert nothing_raw(job.out) and nothing_raw(job.err)
    assert SHOWN_NAME in job.out and SHOWN_ENTRYPOINT in job.out


def test_json_output_is_the_same_json_with_nothing_raw(pool: Pool, hostile_job: int) -> None:
    done = pool.run("job", str(hostile_job), "--json")
    assert done.code == 0, done.err
    assert nothing_raw(done.out)
    job = json.loads(done.out)
    assert job["entrypoint"] == HOSTILE_ENTRYPOINT
