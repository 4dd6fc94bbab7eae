"""The client commands (submit, queue, cancel, quota, project, nodes, user, token) as a user
runs them: real `gpupool` processes against a real server started with `gpupool up` (one
per module; the example pool; nothing runs the jobs), with the client config in a tmp dir."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]
CLI = [sys.executable, "-c", "from web.cli import main; main()"]
ROUTE_ORDER_BUG = (
    "server: POST /projects/{name}/credits and /members are caught by the earlier "
    "/projects/{name}/{action} route (web/api/routes/projects.py) and answered 422"
)
REQUEST_BUG = (
    "server: POST /projects answers 500: the membership row is inserted before its project "
    "(FOREIGN KEY constraint failed, web/services/projects.request_project)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Pool:
    url: str
    data: Path
    config: Path
    env: dict[str, str]
    admin: str  # the admin token `gpupool up` printed

    def run(
        self, *args: str, token: str | None = None, input_text: str | None = None, **env: str
    ) -> Done:
        full = dict(self.env)
        if token is not None:
            full["GPUPOOL_TOKEN"] = token
        full.update(env)
        done = subprocess.run(
            [*CLI, *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            env=full,
            input=input_text,
        )
        assert "Traceback" not in done.stderr, done.stderr
        return Done(done.returncode, done.stdout, done.stderr)

    def ok(
        self, *args: str, token: str | None = None, input_text: str | None = None, **env: str
    ) -> Done:
        done = self.run(*args, token=token, input_text=input_text, **env)
        assert done.code == 0, f"gpupool {' '.join(args)}: {done.err}"
        return done

    def job(self, job_id: int) -> dict[str, Any]:
        answer = httpx.get(
            f"{self.url}/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {self.admin}"}
        )
        answer.raise_for_status()
        job: dict[str, Any] = answer.json()
        return job

    def wait_state(self, job_id: int, state: str, timeout: float = 20) -> dict[str, Any]:
        deadline = time.time() + timeout
        while True:
            job = self.job(job_id)
            if job["state"] == state:
                return job
            assert time.time() < deadline, f"job {job_id} stays {job['state']}: {job['reason']}"
            time.sleep(0.1)


@dataclass
class Done:
    code: int
    out: str
    err: str

    @property
    def err_line(self) -> str:
        return " ".join(self.err.split())  # as one line, whatever the wrapping


def client_env(root: Path) -> dict[str, str]:
    """The caller's environment without anything that would steer the CLI or its output."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GPUPOOL_") and k not in ("COLUMNS", "LINES", "FORCE_COLOR")
    }
    env["XDG_CONFIG_HOME"] = str(root / "xdg")
    env["GPUPOOL_CONFIG"] = str(root / "client" / "config.toml")
    env["NO_COLOR"] = "1"
    return env


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    yield from running_up(tmp_path_factory.mktemp("cli"), "none")


def running_up(root: Path, dispatcher: str) -> Iterator[Pool]:
    """`gpupool up --dispatcher DISPATCHER` on a data directory under `root`, until closed."""
    env = client_env(root)
    port = free_port()
    data = root / "data"
    args = ["up", "--dispatcher", dispatcher, "--port", str(port), "--data-dir", str(data)]
    for url in started(args, env, port, root / "server.log"):
        admin = (data / "admin.token").read_text().strip()
        yield Pool(url, data, Path(env["GPUPOOL_CONFIG"]), env, admin)


def started(args: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[str]:
    """`gpupool ARGS` serving on `port` until the test ends (its address); its output in
    `log`. Under the common umask (files 0644 unless made otherwise), whatever ours is."""
    with log.open("wb") as out:
        server = subprocess.Popen(
            [*CLI, *args], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, umask=0o022
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            if server.poll() is not None:
                pytest.fail(f"{args} exited with {server.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).is_success:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                pytest.fail(f"{args} did not answer /healthz in 60 s:\n{log.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def token_for(pool: Pool, user: str) -> str:
    done = pool.ok("token", "create", "--user", user, "--label", "tests")
    token = done.out.strip()
    assert re.fullmatch(r"gpp_\S+", token), done.out
    return token


@pytest.fixture(scope="module")
def jiwoo(pool: Pool) -> str:
    """A researcher: PI of kaist-llm, member of snu-vision."""
    return token_for(pool, "jiwoo")


@pytest.fixture(scope="module")
def sora(pool: Pool) -> str:
    """A researcher: PI of startup-speech (H100 limit 48) and bio-pharma."""
    return token_for(pool, "sora")


def submitted_id(out: str) -> int:
    match = re.fullmatch(r"Submitted job (\d+)\n", out)
    assert match, out
    return int(match.group(1))


def line_of(out: str, first: str) -> str:
    """The table row whose first cell is `first`."""
    rows = [line for line in out.splitlines() if line.split()[:1] == [first]]
    assert len(rows) == 1, out
    return rows[0]


# --- gpupool up and the client config ------------------------------------------------------


def test_up_saves_the_server_and_admin_token_owner_only(pool: Pool) -> None:
    config = tomllib.loads(pool.config.read_text())
    assert config == {"server": pool.url, "token": pool.admin}
    assert stat.S_IMODE(pool.config.stat().st_mode) == 0o600
    assert not (Path(pool.env["XDG_CONFIG_HOME"]) / "gpupool").exists()  # GPUPOOL_CONFIG wins
    me = pool.ok("user", "whoami")
    assert me.out.startswith("admin (Pool Administrator): admin")
    assert f"server: {pool.url} (from the config file {pool.config})" in me.out


# --- submit --------------------------------------------------------------------------------


def test_submit_prints_the_job_id_and_queues_the_command(pool: Pool, jiwoo: str) -> None:
    command = ["python", "train.py", "--lr", "3e-4", "--note", "two words"]
    args = shlex.split("submit -p kaist-llm -g 4 -t H100-80GB --time 2h --name train --")
    done = pool.ok(*args, *command, token=jiwoo)
    job = pool.job(submitted_id(done.out))
    assert job["entrypoint"] == shlex.join(command)
    assert shlex.split(job["entrypoint"]) == command
    assert (job["gpus"], job["flavor"], job["max_runtime_s"]) == (4, "H100-80GB", 7200)
    assert (job["user"], job["name"]) == ("jiwoo", "train")


def test_submit_takes_one_quoted_argument_as_a_shell_command(pool: Pool, jiwoo: str) -> None:
    script = "cd /tmp && echo $CUDA_VISIBLE_DEVICES; python a.py"
    done = pool.ok("submit", "-p", "kaist-llm", "--", script, token=jiwoo)
    assert pool.job(submitted_id(done.out))["entrypoint"] == script


def test_submit_takes_the_command_without_dashes_too(pool: Pool, jiwoo: str) -> None:
    done = pool.ok("submit", "-p", "kaist-llm", "python", "eval.py", "-p", "3", token=jiwoo)
    assert pool.job(submitted_id(done.out))["entrypoint"] == "python eval.py -p 3"


def test_submit_array_with_env_and_workdir_as_json(pool: Pool, jiwoo: str) -> None:
    args = "submit -p snu-vision -g 1 -t A100-40GB --array 3 --idempotency-key array-1"
    args += " --env SEED=7 --env MODE=a=b --workdir code --priority 5 --json -- python sweep.py"
    done = pool.ok(*args.split(), token=jiwoo)
    answer = json.loads(done.out)
    jobs = answer["jobs"]
    assert len(jobs) == 3 and answer["duplicate"] is False
    assert [j["array_index"] for j in jobs] == [0, 1, 2]
    assert {j["array_id"] for j in jobs} == {jobs[0]["id"]}
    env = jobs[0]["runtime_env"]
    assert env["env_vars"] == {"SEED": "7", "MODE": "a=b"}
    assert env["working_dir"] == str(REPO / "code")  # made absolute where the CLI runs
    assert jobs[0]["priority"] == 5
    args = (
        "submit -p snu-vision -t A100-40GB --array 3 --idempotency-key array-1 -- python sweep.py"
    )
    again = pool.ok(*args.split(), token=jiwoo)
    first, last = jobs[0]["id"], jobs[-1]["id"]
    assert again.out == f"Submitted array {first}-{last}\n"
    assert "submitted before with idempotency key 'array-1'" in again.err_line


def test_submit_without_a_command_is_a_clear_error(pool: Pool, jiwoo: str) -> None:
    done = pool.run("submit", "-p", "kaist-llm", "-g", "1", "--", token=jiwoo)
    assert done.code == 2 and done.out == ""
    assert "no command to run: put it after --" in done.err_line


def test_submit_bad_env_is_a_clear_error(pool: Pool, jiwoo: str) -> None:
    done = pool.run("submit", "-p", "kaist-llm", "--env", "NOVALUE", "--", "x", token=jiwoo)
    assert done.code == 2
    assert "--env 'NOVALUE': give KEY=VALUE" in done.err_line


def test_submit_bad_time_shows_the_servers_message(pool: Pool, jiwoo: str) -> None:
    done = pool.run("submit", "-p", "kaist-llm", "--time", "2x", "--", "true", token=jiwoo)
    assert done.code == 1 and done.out == ""
    assert "error: time: '2x' is not a duration; give a duration such as 90s" in done.err_line


def test_submit_to_a_project_of_others_is_refused(pool: Pool, jiwoo: str) -> None:
    done = pool.run("submit", "-p", "bio-pharma", "--", "true", token=jiwoo)
    assert done.code == 1
    assert "no project 'bio-pharma' of yours (yours: kaist-llm, snu-vision)" in done.err_line


# --- queue and cancel ----------------------------------------------------------------------


def test_queue_shows_nodes_and_reasons_and_cancel_ends_jobs(pool: Pool, sora: str) -> None:
    submit = shlex.split("submit -p startup-speech -t H100-80GB -g")
    big = submitted_id(pool.ok(*submit, "40", "--", "train", token=sora).out)
    waiting = submitted_id(pool.ok(*submit, "16", "--", "eval", token=sora).out)
    pool.wait_state(big, "running")
    deadline = time.time() + 20
    while "over limit" not in pool.job(waiting)["reason"]:
        assert time.time() < deadline, pool.job(waiting)
        time.sleep(0.1)

    done = pool.ok("queue", "-p", "startup-speech", token=sora)
    header = done.out.splitlines()[0].split()
    assert header == shlex.split("JOBID NAME PROJECT USER GPUS STATE TIME NODES REASON")
    running = line_of(done.out, str(big))
    assert "40xH100-80GB" in running and " running " in running
    assert sum(int(n) for n in re.findall(r"h100-\d+:(\d+)", running)) == 40
    queued = line_of(done.out, str(waiting))
    assert "16xH100-80GB" in queued and " queued " in queued
    assert "over limit: project startup-speech holds 40 of its limit of 48" in queued

    as_json = json.loads(pool.ok("queue", "-u", "sora", "--json", token=sora).out)
    assert [j["id"] for j in as_json] == [big, waiting]

    cancelled = pool.run("cancel", str(waiting), "999999", token=sora)
    assert cancelled.code == 1
    assert cancelled.out == f"Cancelled job {waiting}\n"
    assert "no job 999999" in cancelled.err_line
    again = pool.run("cancel", str(waiting), token=sora)
    assert again.code == 1 and f"job {waiting} has already ended (cancelled)" in again.err_line
    stopping = pool.ok("cancel", str(big), token=sora)
    assert stopping.out.startswith(f"Cancelling job {big}: it is running")

    default = pool.ok("queue", "-p", "startup-speech", token=sora)
    assert str(waiting) not in [line.split()[0] for line in default.out.splitlines()]
    everything = pool.ok("queue", "-p", "startup-speech", "--all", token=sora)
    assert "cancelled by sora while queued" in line_of(everything.out, str(waiting))
    only = pool.ok("queue", "-p", "startup-speech", "--state", "cancelled", "--json", token=sora)
    assert waiting in [j["id"] for j in json.loads(only.out)]


def test_queue_limit_keeps_the_newest(pool: Pool, jiwoo: str) -> None:
    done = pool.ok("queue", "--all", "--limit", "1", "--json", token=jiwoo)
    jobs = json.loads(done.out)
    everything = json.loads(pool.ok("queue", "--all", "--json", token=jiwoo).out)
    assert len(everything) > 1 and [j["id"] for j in jobs] == [everything[-1]["id"]]
    table = pool.ok("queue", "--all", "--limit", "1", token=jiwoo)
    assert f"the newest 1 of {len(everything)} jobs" in table.err_line


# --- quota ---------------------------------------------------------------------------------


def test_quota_lists_own_projects_per_flavor(pool: Pool, jiwoo: str) -> None:
    done = pool.ok("quota", token=jiwoo)
    lines = done.out.splitlines()
    header = "PROJECT FLAVOR GUARANTEED LIMIT IN USE CREDITS/GPU-H CREDITS LEFT"
    assert lines[0].split() == header.split()
    first = line_of(done.out, "kaist-llm").split()
    # Jobs of earlier tests ran and were charged: what is left is a little under the budget.
    assert first[:2] == ["kaist-llm", "A100-40GB"] and first[-2:] == ["of", "20,000"]
    assert "bio-pharma" not in done.out  # not jiwoo's
    (project,) = json.loads(pool.ok("quota", "-p", "kaist-llm", "--json", token=jiwoo).out)
    h100 = next(q for q in project["quotas"] if q["flavor"] == "H100-80GB")
    assert (h100["guaranteed"], h100["limit"], h100["credit_rate"]) == (40, 96, 2.0)


def test_quota_set_and_history(pool: Pool, jiwoo: str) -> None:
    args = shlex.split("quota set kist-materials A100-40GB --guaranteed 30 --limit 70 --note")
    done = pool.ok(*args, "review 2026")
    assert done.out == (
        "Quota of kist-materials on A100-40GB: 30 GPUs guaranteed, limit 70; 1 credits/GPU-hour\n"
    )
    (project,) = json.loads(pool.ok("quota", "-p", "kist-materials", "--json").out)
    a100 = next(q for q in project["quotas"] if q["flavor"] == "A100-40GB")
    assert (a100["guaranteed"], a100["limit"]) == (30, 70)
    history = pool.ok("quota", "history", "kist-materials")
    assert re.search(r"guaranteed\[A100-40GB\]\s+24\s+30\s+review 2026", history.out)
    assert re.search(r"limit\[A100-40GB\]\s+64\s+70\s+review 2026", history.out)
    args = shlex.split("quota set kaist-llm H100-80GB --guaranteed 90 --limit 96")
    refused = pool.run(*args, token=jiwoo)
    assert refused.code == 1
    assert "this needs the admin role; jiwoo is a researcher" in refused.err_line
    bad = pool.run("quota", "set", "kaist-llm", "H100-80GB", "--guaranteed", "9", "--limit", "8")
    assert bad.code == 1 and "limit: must be at least the guarantee (9), got 8" in bad.err_line


def test_quota_credits_needs_exactly_one_change(pool: Pool) -> None:
    done = pool.run("quota", "credits", "kaist-llm", "--grant", "5", "--unlimited")
    assert done.code == 2 and "give exactly one of --grant X, --set X or --unlimited" in done.err
    assert pool.run("quota", "credits", "kaist-llm").code == 2


def test_quota_credits_grant_set_unlimited(pool: Pool) -> None:
    # (Earlier tests' jobs may have moved a little: used and left are checked roughly.)
    done = pool.ok("quota", "credits", "kari-climate", "--grant", "500", "--note", "bonus")
    assert re.fullmatch(
        r"Credits of kari-climate: 15,500 \([\d.,]+ used, 15,[45]\d\d[.\d]* left\)\n", done.out
    ), done.out
    done = pool.ok("quota", "credits", "kari-climate", "--set", "1000")
    assert re.fullmatch(
        r"Credits of kari-climate: 1,000 \([\d.,]+ used, [\d.,]+ left\)\n", done.out
    ), done.out
    done = pool.ok("quota", "credits", "kari-climate", "--unlimited")
    assert re.fullmatch(r"Credits of kari-climate: unlimited \([\d.,]+ used\)\n", done.out), (
        done.out
    )
    assert "unlimited" in line_of(pool.ok("quota", "-p", "kari-climate").out, "kari-climate")
    history = pool.ok("quota", "history", "kari-climate").out
    assert re.search(r"credits\s+15000\.0\s+15500\.0\s+bonus", history), history


# --- projects ------------------------------------------------------------------------------


def test_project_list_show_and_decisions(pool: Pool, jiwoo: str) -> None:
    listed = pool.ok("project", "list", token=jiwoo)
    assert [line.split()[0] for line in listed.out.splitlines()[2:]] == [
        "kaist-llm",
        "snu-vision",
    ]
    shown = pool.ok("project", "show", "kaist-llm", token=jiwoo)
    assert re.search(r"jiwoo\s+pi", shown.out) and re.search(r"minseo\s+member", shown.out)
    assert re.search(r"H100-80GB\s+40\s+96", shown.out)
    as_json = json.loads(pool.ok("project", "show", "kaist-llm", "--json", token=jiwoo).out)
    assert as_json["pi"] == "jiwoo" and as_json["state"] == "active"

    closed = pool.ok("project", "close", "bio-pharma", "--note", "ended")
    assert closed.out == "Project bio-pharma is closed\n"
    again = pool.run("project", "activate", "bio-pharma")
    assert again.code == 1
    assert "cannot activate project 'bio-pharma': it is closed" in again.err_line
    not_admin = pool.run("project", "approve", "kaist-llm", token=jiwoo)
    assert not_admin.code == 1 and "needs the admin role" in not_admin.err_line
    active = pool.ok("project", "list", "--state", "closed")
    assert [line.split()[0] for line in active.out.splitlines()[2:]] == ["bio-pharma"]


def test_project_request_approve_activate(pool: Pool, jiwoo: str) -> None:
    args = shlex.split("project request jiwoo-rl --sector academia --gpus 16 --gpu-hours 5000")
    done = pool.ok(*args, "--title", "RL at scale", "--justification", "why", token=jiwoo)
    assert done.out == "Requested project jiwoo-rl (requested, PI jiwoo)\n"
    assert pool.ok("project", "approve", "jiwoo-rl", "--note", "ok").out == (
        "Project jiwoo-rl is approved\n"
    )
    assert pool.ok("project", "activate", "jiwoo-rl").out == "Project jiwoo-rl is active\n"
    assert "jiwoo-rl" in pool.ok("project", "list", "--state", "active").out
    denied = pool.ok(
        "project", "request", "jiwoo-x", "--title", "X", "--sector", "academia", token=jiwoo
    )
    assert denied.code == 0
    assert pool.ok("project", "deny", "jiwoo-x").out == "Project jiwoo-x is closed\n"


def test_project_members(pool: Pool, jiwoo: str) -> None:
    done = pool.ok("project", "add-member", "kaist-llm", "hyun", token=jiwoo)
    assert done.out == "hyun is a member of kaist-llm\n"
    assert re.search(r"hyun\s+member", pool.ok("project", "show", "kaist-llm").out)
    done = pool.ok("project", "remove-member", "kaist-llm", "hyun", token=jiwoo)
    assert done.out == "hyun is no longer a member of kaist-llm\n"


def test_project_request_errors_are_the_servers(pool: Pool, jiwoo: str) -> None:
    done = pool.run("project", "request", "newp", "--title", "t", "--sector", "space", token=jiwoo)
    assert done.code == 1
    assert "unknown sector 'space'; one of: academia, industry, research" in done.err_line


# --- nodes ---------------------------------------------------------------------------------


def test_nodes_list_drain_undrain_register(pool: Pool, jiwoo: str) -> None:
    done = pool.ok("nodes")
    assert done.out.splitlines()[0].split() == shlex.split(
        "NAME FLAVOR GPUS ALLOCATED GROUP STATE REASON"
    )
    assert line_of(done.out, "a100-15").split() == shlex.split("a100-15 A100-40GB 8 0 a100-g1 up")
    drained = pool.ok("nodes", "drain", "a100-15", "--reason", "ECC errors on GPU 3")
    assert drained.out.startswith("Node a100-15 is draining")
    row = line_of(pool.ok("nodes").out, "a100-15").rstrip()
    assert row.endswith("draining   ECC errors on GPU 3"), row
    assert pool.ok("nodes", "undrain", "a100-15").out == "Node a100-15 is up\n"
    assert line_of(pool.ok("nodes").out, "a100-15").split()[-1] == "up"

    registered = pool.ok("nodes", "register", "l40s-00", "--flavor", "L40S", "--gpus", "4")
    assert registered.out == "Registered node l40s-00: 4 x L40S\n"
    nodes = {n["name"]: n for n in json.loads(pool.ok("nodes", "--json").out)}
    assert (nodes["l40s-00"]["flavor"], nodes["l40s-00"]["gpus"]) == ("L40S", 4)

    refused = pool.run("nodes", "drain", "a100-14", "--reason", "x", token=jiwoo)
    assert refused.code == 1 and "needs the operator or admin role" in refused.err_line
    missing = pool.run("nodes", "undrain", "nope-00")
    assert missing.code == 1 and "no node 'nope-00'" in missing.err_line


def test_group_connection_flags_reach_subcommands(pool: Pool, jiwoo: str) -> None:
    done = pool.run("nodes", "--token", jiwoo, "drain", "a100-14", "--reason", "x")
    assert done.code == 1 and "jiwoo is a researcher" in done.err_line


# --- users and tokens ----------------------------------------------------------------------


def test_user_create_show_whoami_role_deactivate(pool: Pool, jiwoo: str) -> None:
    args = shlex.split("user create yuna --role researcher --email yuna@example.kr --full-name")
    done = pool.ok(*args, "Han Yuna")
    assert done.out == "Created user yuna (researcher)\n"
    row = line_of(pool.ok("user", "show", "yuna").out, "yuna")
    assert "researcher" in row and "Han Yuna" in row and "yuna@example.kr" in row
    assert "yuna" in [line.split()[0] for line in pool.ok("user", "list").out.splitlines()[2:]]
    dup = pool.run("user", "create", "yuna", "--role", "researcher")
    assert dup.code == 1 and "user 'yuna' exists already" in dup.err_line

    me = pool.ok("user", "whoami", token=jiwoo)
    name, projects = me.out.splitlines()[:2]
    assert name == "jiwoo (Kim Jiwoo): researcher"
    # Other tests of this module may have made jiwoo PI of more projects.
    assert projects.startswith("projects: ")
    assert {"kaist-llm (pi)", "snu-vision (member)"} <= set(projects[10:].split(", "))
    assert "token: from GPUPOOL_TOKEN" in me.out
    assert json.loads(pool.ok("user", "whoami", "--json", token=jiwoo).out)["name"] == "jiwoo"

    yuna = token_for(pool, "yuna")
    assert pool.ok("user", "set-role", "yuna", "operator").out == "yuna is now operator\n"
    assert json.loads(pool.ok("user", "whoami", "--json", token=yuna).out)["role"] == "operator"
    assert pool.ok("user", "deactivate", "yuna").out == "yuna is deactivated\n"
    refused = pool.run("queue", token=yuna)
    assert refused.code == 1 and "user yuna is deactivated" in refused.err_line
    assert pool.ok("user", "activate", "yuna").out == "yuna is active\n"
    assert pool.run("queue", token=yuna).code == 0


def test_token_create_list_revoke(pool: Pool, jiwoo: str) -> None:
    created = pool.ok("token", "create", "--label", "laptop", "--expires-days", "30", token=jiwoo)
    secret = created.out.strip()
    assert created.out == secret + "\n" and secret.startswith("gpp_")
    assert "shown only this once" in created.err_line and "for jiwoo" in created.err_line
    assert pool.ok("user", "whoami", "--json", token=secret).out
    listed = pool.ok("token", "list", token=jiwoo)
    row = next(line for line in listed.out.splitlines() if " laptop " in line)
    token_id = row.split()[0]
    assert row.split()[-1] == "active" and secret[:12] + "..." in row

    others = pool.run("token", "list", "--user", "sora", token=jiwoo)
    assert others.code == 1 and "needs the admin role" in others.err_line
    assert " laptop " in pool.ok("token", "list", "--user", "jiwoo").out

    revoked = pool.ok("token", "revoke", token_id, token=jiwoo)
    assert revoked.out.startswith(f"Revoked token {token_id} of jiwoo")
    refused = pool.run("queue", token=secret)
    assert refused.code == 1
    assert "this token was revoked" in refused.err_line
    assert "the token from GPUPOOL_TOKEN was refused by" in refused.err_line
    rows = json.loads(pool.ok("token", "list", "--json", token=jiwoo).out)
    assert next(t for t in rows if str(t["id"]) == token_id)["revoked_at"] is not None


# --- connection problems -------------------------------------------------------------------


def test_server_down_is_a_clear_message(pool: Pool) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    done = pool.run("queue", "--server", dead)
    assert done.code == 1 and done.out == ""
    assert (
        f"cannot reach the gpupool server at {dead} (is it running? gpupool up / gpupool serve)"
        in done.err_line
    )
    env_dead = pool.run("nodes", GPUPOOL_SERVER=dead)
    assert env_dead.code == 1 and "from GPUPOOL_SERVER" in env_dead.err_line


def test_no_token_is_a_401_with_a_hint(pool: Pool, tmp_path: Path) -> None:
    missing = tmp_path / "none.toml"
    done = pool.run("queue", GPUPOOL_SERVER=pool.url, GPUPOOL_CONFIG=str(missing))
    assert done.code == 1
    assert "missing token" in done.err_line
    assert "no token: pass --token, set GPUPOOL_TOKEN, or put token" in done.err_line
    assert str(missing) in done.err_line


def test_flag_beats_env_beats_config(pool: Pool, jiwoo: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    done = pool.run("user", "whoami", "--server", pool.url, GPUPOOL_SERVER=dead)
    assert done.code == 0 and "admin" in done.out  # --server over env, token from config
    refused = pool.run("user", "whoami", "--token", "gpp_nonsense", token=jiwoo)
    assert refused.code == 1
    assert "the token from --token was refused" in refused.err_line
    env_token = pool.ok("user", "whoami", "--json", token=jiwoo)  # env over config
    assert json.loads(env_token.out)["name"] == "jiwoo"


def test_bad_config_file_is_a_clear_error(pool: Pool, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("server = [\n")
    done = pool.run("queue", GPUPOOL_CONFIG=str(bad))
    assert done.code == 1 and f"config file {bad} is not valid TOML" in done.err_line
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("token = 42\n")
    done = pool.run("queue", GPUPOOL_CONFIG=str(wrong))
    assert done.code == 1 and "'token' must be a string" in done.err_line
    not_url = pool.run("queue", "--server", "http://")
    assert not_url.code == 1 and "is not a URL" in not_url.err_line


def portal_signs_in(pool: Pool, user: str, password: str) -> bool:
    """Whether the portal takes this user name and password (a real form post)."""
    with httpx.Client(base_url=pool.url, follow_redirects=False) as browser:
        page = browser.get("/signin")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf, page.text
        answer = browser.post(
            "/signin", data={"csrf_token": csrf.group(1), "user": user, "password": password}
        )
        return answer.status_code == 303


def test_up_prints_the_portal_and_a_password_that_signs_the_admin_in(pool: Pool) -> None:
    log = (pool.data.parent / "server.log").read_text()
    found = re.search(r"portal: (\S+) \(sign in as (\w+), password (\S+);", log)
    assert found, log
    assert found.group(1) == pool.url + "/"
    assert portal_signs_in(pool, found.group(2), found.group(3))
    assert (pool.data / "admin.password").stat().st_mode & 0o077 == 0


def test_user_passwd_sets_a_portal_password(pool: Pool, jiwoo: str) -> None:
    done = pool.ok(
        "user", "passwd", "jiwoo", "--password-stdin", token=jiwoo, input_text="a-portal-pass-77\n"
    )
    assert "password set for jiwoo" in done.out
    assert portal_signs_in(pool, "jiwoo", "a-portal-pass-77")
    # Her own, once she has one, needs the current one (the second line).
    without = pool.run(
        "user", "passwd", "jiwoo", "--password-stdin", token=jiwoo, input_text="another-pass-88\n"
    )
    assert without.code != 0 and "current_password" in without.err_line
    again = pool.ok(
        "user",
        "passwd",
        "jiwoo",
        "--password-stdin",
        token=jiwoo,
        input_text="another-pass-88\na-portal-pass-77\n",
    )
    assert "password set for jiwoo" in again.out
    assert portal_signs_in(pool, "jiwoo", "another-pass-88")
    short = pool.run("user", "passwd", "jiwoo", "--password-stdin", token=jiwoo, input_text="x\n")
    assert short.code != 0 and "password" in short.err_line
    common = pool.run(
        "user",
        "passwd",
        "jiwoo",
        "--password-stdin",
        token=jiwoo,
        input_text="password123\nanother-pass-88\n",
    )
    assert common.code != 0 and "common" in common.err_line
    other = pool.run(
        "user", "passwd", "sora", "--password-stdin", token=jiwoo, input_text="long-enough-pw\n"
    )
    assert other.code != 0 and "admin" in other.err_line
