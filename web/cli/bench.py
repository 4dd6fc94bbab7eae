"""`gpupool bench ...`: benchmarks. Figures are measured here, never asserted in tests."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from scheduler.sim.benchmarks import FAMILY_POLICIES, bench_cycle, bench_families, family_table
from scheduler.sim.synthetic import (
    BENCH_LOADS,
    FAMILIES,
    WorkloadError,
    check_load,
    check_seed,
    family,
)

app = typer.Typer(help="Benchmarks of gpupool's parts, on this machine.", no_args_is_help=True)


@app.command("cycle")
def cycle_command(
    nodes: Annotated[int, typer.Option(min=1, help="8-GPU nodes in the synthetic pool.")] = 10_000,
    pending: Annotated[int, typer.Option(min=0, help="Jobs waiting.")] = 100_000,
    projects: Annotated[int, typer.Option(min=1, help="Projects sharing the pool.")] = 1_000,
    repeats: Annotated[int, typer.Option(min=1, help="Incremental cycles to time.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Time one scheduling cycle on a busy synthetic pool, full and incremental."""
    result = bench_cycle(nodes, pending, projects, repeats)
    show(result, "cycle", as_json)


@app.command("families")
def families_command(
    workload: Annotated[
        list[str] | None,
        typer.Option(help="A workload family (repeat for several; default all of them)."),
    ] = None,
    load: Annotated[
        list[float] | None, typer.Option(help="A load (repeat; default 0.7, 0.9 and 1.1).")
    ] = None,
    seed: Annotated[int, typer.Option(help="The workloads' seed.")] = 1,
    jobs: Annotated[
        int | None, typer.Option(min=2, help="Jobs per workload (default each family's own).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Every workload family x load x policy (gpupool, fifo, static), each family on its own
    pool: one table of mean and p99 wait, guarantee violation and lost GPU-hours."""
    from web.cli.simulate import fail

    try:
        families = [family(name).name for name in workload or FAMILIES]
        check_seed(seed, "--seed")
        loads = tuple(load or BENCH_LOADS)
        for value in loads:
            check_load(value, "--load")
        console = Console(stderr=True)
        with console.status("replaying ...") as status:
            result = bench_families(
                families, loads, FAMILY_POLICIES, seed, jobs, progress=status.update
            )
    except WorkloadError as err:
        raise fail(str(err)) from None
    if as_json:
        print(json.dumps(result))
        return
    header, body = family_table(result)
    table = Table(
        title=f"gpupool bench families: seed {seed}, calib_s {result['calib_s']}, "
        f"wall {result['wall_s']} s"
    )
    for column in header:
        # "gpupool mean wait s" -> two lines, so that the table fits a wide terminal
        policy, _, figure = column.partition(" ")
        title = f"{policy}\n{figure}" if policy in FAMILY_POLICIES else column
        table.add_column(title, justify="left" if column == "workload" else "right", no_wrap=True)
    for cells in body:
        table.add_row(*cells)
    Console().print(table)


@app.command("api")
def api_command(
    seconds: Annotated[float, typer.Option(min=1, help="How long to submit for.")] = 10,
    clients: Annotated[int, typer.Option(min=1, help="Concurrent HTTP clients.")] = 16,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="A PostgreSQL server (postgresql://user@host:port/db): the bench makes and "
            "drops a scratch database on it. Default: SQLite in a temporary directory."
        ),
    ] = None,
    nodes: Annotated[int, typer.Option(min=1, help="8-GPU nodes in the bench pool.")] = 1000,
    run_s: Annotated[float, typer.Option(min=0.1, help="Simulated run time of each job.")] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Submissions per second through a real server, with latency, admissions and losses."""
    from web.bench import bench_api

    result = bench_api(seconds, clients, database_url, nodes, run_s)
    show(result, "api", as_json)


@app.command("dispatch")
def dispatch_command(
    jobs: Annotated[int, typer.Option(min=1, help="Jobs to run (1 GPU each).")] = 50,
    nodes: Annotated[int, typer.Option(min=1, help="8-GPU nodes (simulated) in Ray.")] = 8,
    run_s: Annotated[float, typer.Option(min=0.1, help="How long each job runs.")] = 2.0,
    rate: Annotated[
        float, typer.Option(min=0, help="Submissions per second (0: all at once).")
    ] = 0.0,
    restart: Annotated[
        bool, typer.Option(help="SIGKILL the server half-way through and start it again.")
    ] = False,
    compare_ray: Annotated[
        bool, typer.Option(help="Then the same jobs straight to Ray, for comparison.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Short jobs through the whole path on a local Ray (a head of its own, a real server):
    admission to RUNNING, throughput, and nothing lost or run twice."""
    from web.bench_dispatch import bench_dispatch

    result = bench_dispatch(jobs, nodes, run_s, rate, restart, compare_ray)
    show(result, "dispatch", as_json)


@app.command("ingest")
def ingest_command(
    seconds: Annotated[float, typer.Option(min=1, help="How long the agents report for.")] = 15,
    nodes: Annotated[
        int, typer.Option(min=1, help="Nodes (8 GPUs and one job each), each with its agent.")
    ] = 10_000,
    clients: Annotated[int, typer.Option(min=1, help="Concurrent HTTP connections.")] = 32,
    database_url: Annotated[
        str | None,
        typer.Option(help="A PostgreSQL server to make a scratch database on (default SQLite)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Node agents' reports per second through a real server, with latency and losses."""
    from web.bench_ingest import bench_ingest

    result = bench_ingest(seconds, nodes, clients, database_url)
    show(result, "ingest", as_json)


@app.command("portal")
def portal_command(
    nodes: Annotated[
        int, typer.Option(min=1, help="8-GPU nodes, each with its latest report.")
    ] = 10_000,
    jobs: Annotated[int, typer.Option(min=1, help="Jobs in the database, most ended.")] = 100_000,
    requests: Annotated[int, typer.Option(min=1, help="Timed requests per page.")] = 50,
    projects: Annotated[int, typer.Option(min=10, help="Projects sharing the pool.")] = 300,
    database_url: Annotated[
        str | None,
        typer.Option(help="A PostgreSQL server to make a scratch database on (default SQLite)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Every main page of the portal through a real server on a pool of this size, built
    with bulk inserts: p50/p95/max per page (server-side and over loopback) and the pages
    over 200 ms at p95."""
    from web.bench_portal import TARGET_MS, bench_portal

    result = bench_portal(nodes, jobs, requests, database_url, projects)
    if as_json:
        print(json.dumps(result))
        return
    console = Console()
    table = Table(
        title=f"gpupool bench portal: {result['database']}, {nodes:,} nodes, {jobs:,} jobs "
        f"(built in {result['build_s']} s); server-side ms"
    )
    for column in ("page", "p50", "p95", "max", "client p95", "status"):
        table.add_column(column, justify="left" if column == "page" else "right")
    for page, figures in result["pages"].items():
        p95 = figures.get("p95_ms")
        mark = "[red]" if p95 is not None and p95 > TARGET_MS else ""
        table.add_row(
            page,
            str(figures.get("p50_ms", "")),
            f"{mark}{p95 if p95 is not None else ''}",
            str(figures.get("max_ms", "")),
            str(figures.get("client_p95_ms", "")),
            "missing" if figures["status"] == 404 else str(figures["status"]),
        )
    console.print(table)
    console.print(
        f"over {TARGET_MS:.0f} ms at p95: {', '.join(result['over_200ms_p95']) or 'none'}"
    )


def show(result: dict[str, Any], bench: str, as_json: bool) -> None:
    """One JSON object, or a table of the figures for people."""
    if as_json:
        print(json.dumps(result))
        return
    table = Table(title=f"gpupool bench {bench}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    Console().print(table)


@app.command("agent")
def agent_command(
    polls: Annotated[int, typer.Option(min=1, help="Polls to time.")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """The node agent's own CPU time per poll of 8 GPUs (real pynvml on the tests' fake NVML,
    real processes attributed, reports POSTed to a loopback server)."""
    from agents.bench import BenchUnavailable, bench_agent
    from web.cli.simulate import fail

    try:
        result = bench_agent(polls)
    except BenchUnavailable as problem:
        raise fail(str(problem)) from None
    show(result, "agent", as_json)


@app.command("ledger")
def ledger_command(
    entries: Annotated[int, typer.Option(min=1, help="Ledger entries (one job each).")] = 100_000,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """The ledger on a scratch SQLite database: appends per second (in the metering's
    batches), chain verification per second, and a statement over all the jobs."""
    from web.bench_ledger import bench_ledger

    show(bench_ledger(entries), "ledger", as_json)
