"""`gpupool submit`, `gpupool queue`, `gpupool cancel`, `gpupool logs`: jobs, as sbatch,
squeue, scancel and `tail [-f]` of a job's output."""

from __future__ import annotations

import codecs
import os
import re
import shlex
import sys
import time as clock
from typing import Annotated, Any

import typer
from rich.text import Text

from web.cli.client import (
    PAGE_SIZE,
    ApiError,
    Client,
    JsonOption,
    ServerOption,
    TokenOption,
    add_row,
    clock_time,
    connect,
    elapsed,
    local_time,
    note,
    now,
    parse_time,
    print_json,
    say,
    show,
    table,
    usage_error,
)
from web.cli.safe_text import printable
from web.enums import FINAL_JOB_STATE_VALUES, JobState

# After the first word of the command, every argument is the command's (as with sbatch's
# script arguments): `gpupool submit -p P -g 1 python train.py --lr 3e-4` works without `--`.
SUBMIT_CONTEXT = {"allow_interspersed_args": False}
WAITING = (JobState.QUEUED, JobState.ADMITTED, JobState.RUNNING)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def submit_command(
    project: Annotated[str, typer.Option("--project", "-p", help="Project to charge.")],
    command: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="-- COMMAND",
            show_default=False,
            help="What the job runs, after `--`: gpupool submit -p P -g 4 -- python train.py. "
            "One quoted argument is a shell command as written: -- 'cd src && python a.py'.",
        ),
    ] = None,
    gpus: Annotated[int, typer.Option("--gpus", "-g", min=1, help="GPUs in all.")] = 1,
    flavor: Annotated[
        str, typer.Option("--flavor", "-t", help="GPU type, e.g. H100-80GB; '*': any type.")
    ] = "*",
    time: Annotated[
        str | None,
        typer.Option(
            "--time",
            show_default=False,
            help="Run-time limit: 90s, 30m, 2h, 1d, 1:30:00, 2-12:00:00 (a bare number is "
            "minutes) (default: the project's).",
        ),
    ] = None,
    nodes: Annotated[
        int | None,
        typer.Option(
            "--nodes", "-N", min=1, show_default=False, help="Spread the GPUs evenly over N nodes."
        ),
    ] = None,
    name: Annotated[str, typer.Option("--name", "-J", help="A name for the job.")] = "",
    priority: Annotated[
        int, typer.Option(help="Priority within the project (-1000..1000; higher first).")
    ] = 0,
    array: Annotated[
        int | None,
        typer.Option(
            "--array", min=1, show_default=False, help="Submit N identical jobs (an array)."
        ),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option(
            "--env",
            metavar="KEY=VALUE",
            show_default=False,
            help="An environment variable for the job (repeat for more).",
        ),
    ] = None,
    workdir: Annotated[
        str | None,
        typer.Option(
            show_default=False,
            help="Working directory of the job: a path where the job runs, or a URI such as "
            "s3://bucket/code.zip (Ray's runtime_env working_dir).",
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            show_default=False,
            help="Resubmitting with the same key returns the first job instead of a new one.",
        ),
    ] = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Queue a job, as sbatch: prints `Submitted job ID` (or `Submitted array FIRST-LAST`)."""
    if not command:
        raise usage_error(
            "no command to run: put it after --, as in: "
            "gpupool submit -p PROJECT -g 1 -- python train.py"
        )
    runtime_env: dict[str, Any] = {}
    if env:
        runtime_env["env_vars"] = parse_env(env)
    if workdir:
        runtime_env["working_dir"] = workdir if "://" in workdir else os.path.abspath(workdir)
    body: dict[str, Any] = {
        "project": project,
        "entrypoint": entrypoint_of(command),
        "gpus": gpus,
        "flavor": flavor,
        "nodes": nodes,
        "time": time,
        "priority": priority,
        "name": name,
        "runtime_env": runtime_env,
        "count": array or 1,
        "idempotency_key": idempotency_key,
    }
    client = connect(server, token)
    answer = client.post("/jobs", {k: v for k, v in body.items() if v is not None})
    if as_json:
        print_json(answer)
        return
    ids = [int(job["id"]) for job in answer.get("jobs", [])]
    say(submitted_line(ids, array is not None))
    if answer.get("duplicate"):
        note(f"(submitted before with idempotency key {idempotency_key!r}; nothing new queued)")


def parse_env(pairs: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not ENV_NAME.match(key):
            raise usage_error(f"--env {pair!r}: give KEY=VALUE, KEY a variable name")
        found[key] = value
    return found


def submitted_line(ids: list[int], array: bool) -> str:
    if not array and len(ids) == 1:
        return f"Submitted job {ids[0]}"
    if ids and ids == list(range(ids[0], ids[0] + len(ids))):
        return f"Submitted array {ids[0]}-{ids[-1]}"
    return "Submitted array " + ",".join(str(i) for i in ids)


def queue_command(
    project: Annotated[
        str | None, typer.Option("--project", "-p", show_default=False, help="Only this project.")
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", "-u", show_default=False, help="Only this user's.")
    ] = None,
    state: Annotated[
        list[JobState] | None,
        typer.Option(
            "--state",
            "-s",
            show_default=False,
            help="Only jobs in this state (repeat for more) (default: queued, admitted, running).",
        ),
    ] = None,
    show_all: Annotated[
        bool, typer.Option("--all", "-a", help="Include jobs that have ended.")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, help="Show at most the newest N jobs.")] = 1000,
    as_json: JsonOption = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """The jobs waiting and running, as squeue, each waiting job with its reason."""
    states = state if state else ([] if show_all else list(WAITING))
    client = connect(server, token)
    params = {"project": project, "user": user, "state": [s.value for s in states]}
    jobs, total = fetch_jobs(client, params, limit)
    if as_json:
        print_json(jobs)
        return
    moment = now()
    rows = table("JOBID>", "NAME", "PROJECT", "USER", "GPUS", "STATE", "TIME>", "NODES", "REASON")
    for job in jobs:
        add_row(
            rows,
            job["id"],
            job.get("name", ""),
            job["project"],
            job["user"],
            gpus_of(job),
            Text(job["state"], style=STATE_STYLE.get(job["state"], "")),
            job_time(job, moment),
            nodes_of(job),
            reason_of(job),
        )
    show(rows)
    if total > len(jobs):
        note(f"(the newest {len(jobs)} of {total} jobs; --limit shows more)")


def fetch_jobs(client: Client, params: dict[str, Any], limit: int) -> tuple[list[Any], int]:
    """The newest `limit` jobs matching, oldest first, and how many match in all."""
    first = client.get("/jobs", {**params, "limit": min(limit, PAGE_SIZE), "offset": 0})
    total = int(first["total"])
    start = max(0, total - limit)
    jobs: list[Any] = list(first["items"]) if start == 0 else []
    offset = len(jobs) if start == 0 else start
    while offset < total and len(jobs) < limit:
        size = min(PAGE_SIZE, limit - len(jobs))
        page = client.get("/jobs", {**params, "limit": size, "offset": offset})
        if not page["items"]:
            break
        jobs += page["items"]
        offset += len(page["items"])
    return jobs, total


STATE_STYLE = {
    "queued": "yellow",
    "admitted": "cyan",
    "running": "green",
    "succeeded": "dim",
    "failed": "red",
    "cancelled": "dim",
    "timeout": "red",
    "lost": "red",
}


def gpus_of(job: dict[str, Any]) -> str:
    flavor = job.get("flavor_used") or job.get("flavor") or "*"
    return f"{job['gpus']}x{'any' if flavor == '*' else flavor}"


def nodes_of(job: dict[str, Any]) -> str:
    pieces = job.get("allocations") or []
    if pieces:
        return ",".join(f"{p['node']}:{p['gpus']}" for p in pieces)
    if job.get("nodes"):
        return f"({job['nodes']} nodes)"
    return ""


def job_time(job: dict[str, Any], moment: Any) -> str:
    """Elapsed for running jobs, waited for queued ones, the run time for ended ones."""
    submitted = parse_time(job.get("submitted_at"))
    started = parse_time(job.get("started_at")) or parse_time(job.get("admitted_at"))
    ended = parse_time(job.get("ended_at"))
    if job["state"] == JobState.QUEUED.value:
        since = submitted
        until = moment
    else:
        since = started or submitted
        until = ended or moment
    if since is None:
        return ""
    return elapsed((until - since).total_seconds())


def reason_of(job: dict[str, Any]) -> str:
    state = job["state"]
    if state == JobState.QUEUED.value:
        reason = str(job.get("reason") or "")
        start = parse_time(job.get("est_start"))
        if start is not None:
            at = clock_time(start)
            reason += f" (at {at})" if "est. start" in reason else f"; est. start {at}"
            sure = estimate_of(job)
            if sure:
                reason += f"; {sure}"
        return reason
    if state == JobState.ADMITTED.value:
        return "starting"
    if state == JobState.RUNNING.value:
        notes = []
        idle_since = parse_time(job.get("idle_since"))
        if idle_since is not None:
            notes.append(f"IDLE GPUs for {elapsed((now() - idle_since).total_seconds())}")
        if job.get("borrowed"):
            notes.append("borrowed GPUs: may be preempted")
        return "; ".join(notes)
    return str(job.get("outcome") or "")


def cancel_command(
    job_ids: Annotated[list[int], typer.Argument(metavar="JOBID", help="Jobs to cancel.")],
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Cancel jobs: a waiting job at once, a running one is stopped (SIGTERM, then a grace
    period). Exits 1 if any of them could not be cancelled."""
    client = connect(server, token)
    failed = 0
    for job_id in job_ids:
        try:
            job = client.request("POST", f"/jobs/{job_id}/cancel", body={})
        except ApiError as err:
            if err.status == 401:
                client.fail(err)
            client.report(err)  # the server names the job
            failed += 1
            continue
        if job["state"] == JobState.CANCELLED.value:
            say(f"Cancelled job {job_id}")
        else:
            say(f"Cancelling job {job_id}: it is {job['state']}; it is being stopped")
    if failed:
        raise typer.Exit(code=1)


FOLLOW_POLL_S = 1.0  # `logs -f` asks for more this often


def logs_command(
    job_id: Annotated[int, typer.Argument(metavar="JOBID", help="The job.")],
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Keep printing what the job writes until it ends (a requeued job: attempt "
            "after attempt).",
        ),
    ] = False,
    attempt: Annotated[
        int | None,
        typer.Option(
            "--attempt", min=1, show_default=False, help="This attempt (default: the latest)."
        ),
    ] = None,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw",
            help="The bytes as the job wrote them, escape sequences included (default: "
            "control characters shown as \\x1b and the like, a carriage return as a new line).",
        ),
    ] = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """A job's output (stdout and stderr together) as it ran: from its log file (the local
    dispatcher) or from Ray. With -f, waits for the job to start and follows it to its end,
    then says how it ended (on stderr). Whatever the job wrote that a terminal would act on
    (escape sequences, other control characters, bytes that are not UTF-8) is shown escaped
    unless --raw is given."""
    client = connect(server, token)
    out = LogWriter(escaped=not raw)
    number, offset, waiting_said = attempt, 0, False
    while True:
        try:
            answer = client.send(
                "GET", f"/jobs/{job_id}/logs", params={"attempt": number, "offset": offset}
            )
        except ApiError as err:
            if not (follow and err.status == 503):
                client.fail(err)
            if not waiting_said:  # Ray cannot answer now: a follower waits for it
                client.report(err)
                waiting_said = True
            clock.sleep(FOLLOW_POLL_S)
            continue
        waiting_said = False
        header = answer.headers
        got, end, size = (int(header[f"X-Gpupool-{n}"]) for n in ("Attempt", "Log-End", "Log-Size"))
        out.write(answer.content)
        offset = end
        if end < size:
            continue  # more is there already
        if not follow:
            out.end()
            return
        state, done = header["X-Gpupool-Job-State"], header["X-Gpupool-Log-Done"] == "1"
        if got == 0 and state not in FINAL_JOB_STATE_VALUES:  # not admitted yet
            clock.sleep(FOLLOW_POLL_S)
            continue
        number = got
        if done and attempt is None and int(header["X-Gpupool-Job-Attempt"]) > got:
            number, offset = got + 1, 0  # requeued and admitted again: its next attempt
            out.end()
            note(f"--- job {job_id}, attempt {number} ---")
            continue
        if (done and attempt is not None) or state in FINAL_JOB_STATE_VALUES:
            out.end()
            ended = client.get(f"/jobs/{job_id}")
            how = f" ({ended['outcome']})" if ended.get("outcome") else ""
            note(
                f"job {job_id} {ended['state']}{how}" if attempt is None else f"attempt {got} ended"
            )
            return
        clock.sleep(FOLLOW_POLL_S)


class LogWriter:
    """A job's log to stdout, piece by piece as it is fetched. Escaped (the default): read as
    UTF-8 (a character split between two pieces joins up again; bytes that are not UTF-8
    show as \\xNN), a carriage return shown as a new line (so a progress bar's every state
    shows, and nothing is written over), every other control character escaped, as for
    everything else the CLI prints; newlines and tabs kept. Raw: the bytes as they came."""

    def __init__(self, escaped: bool) -> None:
        self.decoder = (
            codecs.getincrementaldecoder("utf-8")("backslashreplace") if escaped else None
        )
        self.after_cr = False  # the last piece ended in \r: a \n first in the next is its pair

    def write(self, data: bytes, final: bool = False) -> None:
        if self.decoder is not None:
            text = self.decoder.decode(data, final)
            if self.after_cr and text.startswith("\n"):
                text = text[1:]
            if text:
                self.after_cr = text.endswith("\r")
            text = printable(text.replace("\r\n", "\n").replace("\r", "\n"), keep="\n\t")
            data = text.encode("utf-8")
        if not data:
            return
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except BrokenPipeError:  # `gpupool logs 5 | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(code=0) from None

    def end(self) -> None:
        """The log (or this attempt's) is over: a character left incomplete shows escaped."""
        self.write(b"", final=True)
        if self.decoder is not None:
            self.decoder.reset()
        self.after_cr = False


def entrypoint_of(command: list[str]) -> str:
    """One argument is a shell command as written (`-- 'python a.py && python b.py'`);
    several are words, quoted so that each reaches the program as given."""
    return command[0] if len(command) == 1 else shlex.join(command)


def estimate_of(job: dict[str, Any]) -> str:
    """How sure a waiting job's start estimate is, in words: "likely between 14:10 and
    15:40", or "rough: between 14:10 and 2026-12-20 09:00; depends on 3 jobs running past
    what their history knows" ('' without one)."""
    confidence = str(job.get("est_confidence") or "")
    earliest = parse_time(job.get("est_start_earliest"))
    latest = parse_time(job.get("est_start_latest"))
    if job.get("state") != JobState.QUEUED.value or not confidence or not earliest or not latest:
        return ""
    between = f"between {clock_time(earliest)} and {clock_time(latest)}"
    if confidence != "rough":
        return f"{confidence} {between}"
    why = str(job.get("est_note") or "").removeprefix("rough:").strip()
    return f"rough: {between}; {why}" if why else f"rough: {between}"


def job_command(
    job_id: Annotated[int, typer.Argument(metavar="JOBID", help="The job.")],
    as_json: JsonOption = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """One job in full (as scontrol show job), with what the node agents saw each attempt
    use: GPU-seconds, mean utilization, energy, peak memory on one GPU."""
    client = connect(server, token)
    job: dict[str, Any] = client.get(f"/jobs/{job_id}")
    usage: list[Any] = client.get(f"/jobs/{job_id}/usage")
    if as_json:
        print_json(job | {"usage": usage})
        return
    fields = [
        ("job", f"{job['id']} {job['name']}".strip()),
        ("project / user", f"{job['project']} / {job['user']}"),
        ("state", f"{job['state']} (attempt {job['attempt']})"),
        ("reason", reason_of(job)),
        ("outcome", job["outcome"]),
        ("gpus", gpus_of(job)),
        ("nodes", nodes_of(job)),
        ("entrypoint", job["entrypoint"]),
        (
            "submitted / started / ended",
            " / ".join(
                local_time(job[key]) or "-" for key in ("submitted_at", "started_at", "ended_at")
            ),
        ),
    ]
    for label, value in fields:
        if value:
            say(f"{label:>28}: {value}")
    if not usage:
        note("no usage seen by node agents (none report for its nodes, or it has not run)")
        return
    rows = table("ATTEMPT>", "GPU-HOURS>", "MEAN UTIL%>", "ENERGY kWh>", "PEAK MEM GiB>")
    for u in usage:
        util = "-" if u["mean_util_pct"] is None else f"{u['mean_util_pct']:.0f}"
        add_row(
            rows,
            u["attempt"],
            f"{u['gpu_s'] / 3600:.3f}",
            util,
            f"{u['energy_kwh']:.4f}",
            f"{u['peak_mem_bytes'] / 2**30:.1f}",
        )
    show(rows)
