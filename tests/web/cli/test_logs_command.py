"""`gpupool logs JOB [-f] [--attempt N]` as a user runs it, against `gpupool up` with the local
dispatcher (jobs run as processes here, their output in the data directory's logs)."""

from __future__ import annotations

import stat
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.web.cli.test_client_commands import (
    CLI,
    REPO,
    Pool,
    running_up,
    submitted_id,
    token_for,
)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    yield from running_up(tmp_path_factory.mktemp("logs"), "local")


@pytest.fixture(scope="module")
def jiwoo(pool: Pool) -> str:
    return token_for(pool, "jiwoo")  # PI of kaist-llm


def submit(pool: Pool, token: str, command: str, *extra: str) -> int:
    done = pool.ok(
        "submit", "-p", "kaist-llm", "-g", "2", "-t", "H100-80GB", *extra, "--", command,
        token=token,
    )  # fmt: skip
    return submitted_id(done.out)


def test_follow_waits_for_the_job_prints_as_it_runs_and_says_how_it_ended(
    pool: Pool, jiwoo: str
) -> None:
    job = submit(pool, jiwoo, "echo gpus=$CUDA_VISIBLE_DEVICES; sleep 1.5; echo done; exit 3")
    started = time.monotonic()
    followed = pool.run("logs", "-f", str(job), token=jiwoo)
    assert followed.code == 0, followed.err
    assert followed.out == "gpus=0,1\ndone\n"
    assert f"job {job} failed (exit code 3)" in followed.err
    assert time.monotonic() - started >= 1.5  # it followed the job to its end
    again = pool.ok("logs", str(job), token=jiwoo)  # the whole log, at once
    assert again.out == followed.out
    assert pool.ok("logs", "--attempt", "1", str(job), token=jiwoo).out == followed.out


def test_without_follow_it_prints_what_is_there_and_follow_ends_with_a_cancel(
    pool: Pool, jiwoo: str
) -> None:
    job = submit(pool, jiwoo, "echo up; sleep 60")
    pool.wait_state(job, "running")
    deadline = time.time() + 10
    while (done := pool.ok("logs", str(job), token=jiwoo)).out != "up\n":  # returns at once
        assert time.time() < deadline, done.out
        time.sleep(0.1)
    env = dict(pool.env, GPUPOOL_TOKEN=jiwoo)
    follower = subprocess.Popen(
        [*CLI, "logs", "-f", str(job)], cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(1.0)
    assert follower.poll() is None  # still following
    pool.ok("cancel", str(job), token=jiwoo)
    out, err = follower.communicate(timeout=30)
    assert follower.returncode == 0, err
    assert out == "up\n"
    assert f"job {job} cancelled" in err


def test_the_logs_of_another_projects_job_are_not_found(pool: Pool, jiwoo: str) -> None:
    sora = token_for(pool, "sora")
    job = int(
        pool.ok(
            "submit", "-p", "startup-speech", "-g", "1", "-t", "H100-80GB", "--", "echo s",
            token=sora,
        ).out.split()[-1]
    )  # fmt: skip
    refused = pool.run("logs", str(job), token=jiwoo)
    assert refused.code == 1
    assert f"no job {job}" in refused.err


def test_what_a_terminal_would_act_on_is_escaped_unless_raw(pool: Pool, jiwoo: str) -> None:
    # A window-title OSC, a CRLF, a lone CR (a progress bar's), UTF-8 (alpha), a byte that is
    # not UTF-8, a right-to-left override.
    job = submit(pool, jiwoo, r"printf 'a\033]0;title\007b\r\nc\rd\n\316\261\377\342\200\256e\n'")
    pool.wait_state(job, "succeeded")
    shown = pool.ok("logs", str(job), token=jiwoo)
    assert shown.out == "a\\x1b]0;title\\x07b\nc\nd\n\u03b1\\xff\\u202ee\n"
    followed = pool.ok("logs", "-f", str(job), token=jiwoo)
    assert followed.out == shown.out
    env = dict(pool.env, GPUPOOL_TOKEN=jiwoo)
    raw = subprocess.run(
        [*CLI, "logs", "--raw", str(job)], cwd=REPO, env=env, capture_output=True, timeout=60
    )
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout == b"a\x1b]0;title\x07b\r\nc\rd\n\xce\xb1\xff\xe2\x80\xaee\n"


def test_the_data_directory_and_the_job_logs_are_owner_only(pool: Pool, jiwoo: str) -> None:
    job = submit(pool, jiwoo, "echo private")
    pool.wait_state(job, "succeeded")
    found = {".": stat.S_IMODE(pool.data.stat().st_mode)}
    for entry in pool.data.rglob("*"):
        found[str(entry.relative_to(pool.data))] = stat.S_IMODE(entry.lstat().st_mode)
    assert {"gpupool.db", "gpupool.db-wal", "gpupool.db-shm", "logs", f"logs/{job}-1.log"} <= (
        found.keys()
    )
    directories = {".", "logs"}
    assert found == {name: 0o700 if name in directories else 0o600 for name in found}
