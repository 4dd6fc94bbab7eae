"""GET /api/v1/jobs/{id}/logs: a job's output, read by the API from where its dispatcher keeps
it (here the local dispatcher's files, data_dir/logs/JOB-ATTEMPT.log), scoped as the job is;
the headers that let a follower go on from where it is, attempt after attempt."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.scheduler.runtime.ray_cluster import free_port
from tests.web.conftest import Api


def log_file(api: Api, job_id: int, attempt: int) -> Path:
    logs = api.pool.settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return logs / f"{job_id}-{attempt}.log"


def running(api: Api, user: str = "alice", attempt: int = 1, output: str = "") -> int:
    job_id = int(api.submit(user)["id"])
    api.set_job(job_id, state="running", attempt=attempt)
    log_file(api, job_id, attempt).write_text(output)
    return job_id


def logs(api: Api, user: str, job_id: int, **params: int) -> httpx.Response:
    return api.get(user, f"/jobs/{job_id}/logs", params=params)


def heads(response: httpx.Response) -> dict[str, str]:
    names = ("Attempt", "Job-Attempt", "Job-State", "Log-End", "Log-Size", "Log-Done")
    return {name: response.headers[f"X-Gpupool-{name}"] for name in names}


def test_a_running_jobs_output_so_far_and_what_follows_it(api: Api) -> None:
    job_id = running(api, output="epoch 1\n")
    first = logs(api, "alice", job_id)
    assert first.status_code == 200, first.text
    assert first.text == "epoch 1\n"
    assert first.headers["content-type"] == "text/plain; charset=utf-8"
    assert heads(first) == {
        "Attempt": "1",
        "Job-Attempt": "1",
        "Job-State": "running",
        "Log-End": "8",
        "Log-Size": "8",
        "Log-Done": "0",
    }
    with log_file(api, job_id, 1).open("a") as out:
        out.write("epoch 2 ✓\n")
    more = logs(api, "alice", job_id, offset=8)
    assert more.text == "epoch 2 ✓\n"
    assert heads(more)["Log-End"] == heads(more)["Log-Size"] == str(8 + len("epoch 2 ✓\n".encode()))
    api.set_job(job_id, state="succeeded")
    ended = logs(api, "alice", job_id, offset=int(heads(more)["Log-End"]))
    assert ended.content == b""
    assert heads(ended)["Log-Done"] == "1"
    assert heads(ended)["Job-State"] == "succeeded"


def test_bytes_as_the_job_wrote_them(api: Api) -> None:
    job_id = running(api)
    log_file(api, job_id, 1).write_bytes(b"\xff\xfe not utf-8 \x00 \xe2\x9c")
    answer = logs(api, "alice", job_id)
    assert answer.content == b"\xff\xfe not utf-8 \x00 \xe2\x9c"
    assert logs(api, "alice", job_id, offset=10**9).content == b""


def test_members_operators_and_admins_read_it_and_no_one_else(api: Api) -> None:
    job_id = running(api, user="bob", output="p1's output\n")
    for user in ("alice", "bob", "dave", "ops", "admin"):
        assert logs(api, user, job_id).text == "p1's output\n", user
    hidden, missing = logs(api, "carol", job_id), logs(api, "carol", 987654)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["detail"] == missing.json()["detail"].replace("987654", str(job_id))
    assert "output" not in hidden.text
    assert logs(api, "<bad>", job_id).status_code == 401


def test_a_job_not_admitted_yet_has_no_output_and_more_may_come(api: Api) -> None:
    job_id = int(api.submit("alice")["id"])
    answer = logs(api, "alice", job_id)
    assert answer.status_code == 200
    assert answer.content == b""
    assert heads(answer)["Attempt"] == "0"
    assert heads(answer)["Log-Done"] == "0"
    api.set_job(job_id, state="admitted", attempt=1)  # its process has not started
    assert logs(api, "alice", job_id).content == b""
    assert heads(logs(api, "alice", job_id))["Log-Done"] == "0"


def test_earlier_attempts_are_kept_and_over(api: Api) -> None:
    job_id = running(api, output="first try\n")
    api.set_job(job_id, state="queued")  # preempted: requeued
    requeued = logs(api, "alice", job_id)
    assert requeued.text == "first try\n"
    assert heads(requeued)["Log-Done"] == "1"
    api.set_job(job_id, state="running", attempt=2)
    log_file(api, job_id, 2).write_text("second try\n")
    assert logs(api, "alice", job_id).text == "second try\n"
    earlier = logs(api, "alice", job_id, attempt=1)
    assert earlier.text == "first try\n"
    assert heads(earlier)["Attempt"] == "1"
    assert heads(earlier)["Log-Done"] == "1"
    assert heads(earlier)["Job-Attempt"] == "2"
    absent = logs(api, "alice", job_id, attempt=3)
    assert absent.status_code == 404
    assert absent.json()["field"] == "attempt"
    assert "it has had 2" in absent.json()["detail"]
    assert logs(api, "alice", job_id, attempt=0).status_code == 422


def test_dispatchers_that_run_nothing_have_no_logs(api: Api) -> None:
    job_id = running(api, output="x")
    api.pool.settings = api.pool.settings.model_copy(update={"dispatcher": "none"})
    answer = logs(api, "alice", job_id)
    assert answer.status_code == 404
    assert "the 'none' dispatcher runs nothing" in answer.json()["detail"]


def test_logs_in_a_ray_that_cannot_be_reached_are_a_503_not_a_crash(api: Api) -> None:
    job_id = running(api)
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    api.pool.settings = api.pool.settings.model_copy(
        update={"dispatcher": "ray", "ray_address": address}
    )
    answer = logs(api, "alice", job_id)
    assert answer.status_code == 503, answer.text
    assert f"Ray at {address} is unreachable" in answer.json()["detail"]
    bad = api.pool.settings.model_copy(update={"ray_address": "ray://head:10001"})
    api.pool.settings = bad
    assert "not the Ray dashboard's URL" in logs(api, "alice", job_id).json()["detail"]
