"""`gpupool simulate`: replay a trace, or a generated workload, on a cluster file under one
policy."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from scheduler.core import ANY_FLAVOR, Policy
from scheduler.sim.cluster import Cluster, load_cluster
from scheduler.sim.engine import Simulation, check_trace
from scheduler.sim.errors import InputError
from scheduler.sim.forecasts import EstimateSource
from scheduler.sim.metrics import Report
from scheduler.sim.synthetic import (
    FAMILIES,
    LOAD_RANGE,
    REFERENCE_LOAD,
    SEED_RANGE,
    WorkloadError,
    check_load,
    check_seed,
    family,
    generate_workload,
)
from scheduler.sim.trace import TraceJob, load_trace
from web.cli.safe_text import printable


class PolicyName(StrEnum):
    gpupool = "gpupool"
    static = "static"
    fifo = "fifo"


def fail(message: str) -> typer.Exit:
    """`error: message` on stderr (as text, control characters escaped: it may quote a
    file); the Exit (2) to raise."""
    line = Text.assemble(("error: ", "bold red"), printable(message))
    Console(stderr=True, soft_wrap=True).print(line, highlight=False)
    return typer.Exit(code=2)


def simulate_command(
    trace: Annotated[
        Path | None, typer.Option(help="Trace CSV: the generic format or Philly's.")
    ] = None,
    workload: Annotated[
        str | None,
        typer.Option(help="Instead of a trace, a generated workload: " + ", ".join(FAMILIES) + "."),
    ] = None,
    load: Annotated[
        float,
        typer.Option(
            help="With --workload: GPU demand over the pool's capacity across the submission "
            f"window ({LOAD_RANGE[0]:g} to {LOAD_RANGE[1]:g})."
        ),
    ] = REFERENCE_LOAD,
    seed: Annotated[
        int,
        typer.Option(help=f"With --workload: its seed ({SEED_RANGE[0]} to {SEED_RANGE[1]})."),
    ] = 1,
    cluster: Annotated[
        Path | None,
        typer.Option(
            "--cluster",
            "--pool",
            help="Cluster TOML: nodes, sectors, projects, quotas. With --workload, default "
            "the workload's own pool in configs/.",
        ),
    ] = None,
    policy: Annotated[PolicyName, typer.Option(help="Scheduling policy.")] = PolicyName.gpupool,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout, nothing else.")
    ] = False,
    jobs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Replay only the first N jobs of a trace (by submit time); with --workload, "
            "generate N jobs (at the same load, over a shorter window).",
        ),
    ] = None,
    checkpoint_interval: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds of run time between a job's checkpoints; a preempted job resumes "
            "from its last one (0: it starts over).",
        ),
    ] = 1800.0,
    estimates: Annotated[
        bool,
        typer.Option(
            help="Estimate run times for backfill from each project's last two runs "
            "(EASY++); with --no-estimates every job is taken to run to its limit."
        ),
    ] = True,
    start_estimates: Annotated[
        EstimateSource,
        typer.Option(
            help="Where waiting jobs' start estimates come from: history (run times predicted "
            "from each user's or project's history), limits (every job runs to its limit, as "
            "Slurm assumes) or reservations (only what the cycle's reasons carry)."
        ),
    ] = EstimateSource.HISTORY,
) -> None:
    """Replay a trace, or a generated workload, on a virtual clock and report waits,
    utilization and fairness."""
    chosen = Policy.named(policy.value)
    if (trace is None) == (workload is None):
        raise fail("give either --trace PATH or --workload NAME (" + ", ".join(FAMILIES) + ")")
    try:
        if workload is not None:
            source = f"workload {workload}"
            pool, replayed = _workload(workload, load, seed, cluster, jobs)
            check_trace(pool, replayed, source, chosen)
        else:
            assert trace is not None
            if cluster is None:
                raise fail("--trace needs --cluster PATH (the pool to replay it on)")
            source = trace.name
            pool = load_cluster(cluster)
            flavors = pool.flavors
            replayed = load_trace(
                trace, default_flavor=flavors[0] if len(flavors) == 1 else ANY_FLAVOR
            )
            if jobs is not None:
                replayed = replayed[:jobs]
            check_trace(pool, replayed, str(trace), chosen)
    except (InputError, WorkloadError) as err:
        raise fail(str(err)) from None

    simulation = Simulation(
        pool,
        replayed,
        chosen,
        checkpoint_interval_s=checkpoint_interval,
        predict_runtimes=estimates,
        start_estimates=start_estimates,
    )
    if as_json or not sys.stderr.isatty():
        report = simulation.run()
    else:
        with Progress(
            TextColumn(f"replaying {source} ({policy.value})"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("jobs done"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        ) as progress:
            task = progress.add_task("replay", total=len(replayed))
            simulation.progress = lambda done, total: progress.update(task, completed=done)
            report = simulation.run()
    if as_json:
        print(json.dumps(report.as_dict()))
    else:
        Console().print(report_table(report))


def _workload(
    name: str, load: float, seed: int, cluster: Path | None, jobs: int | None
) -> tuple[Cluster, list[TraceJob]]:
    """A generated workload and its pool; bad input is an error naming the flag."""
    chosen = family(name)
    check_load(load, "--load")
    check_seed(seed, "--seed")
    pool = load_cluster(cluster or chosen.pool_path)
    return pool, generate_workload(name, pool, load, seed, jobs)


def report_table(report: Report) -> Table:
    table = Table(title=f"Replay under policy '{report.policy}'", show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    hours = 3600.0
    rows = [
        ("jobs", f"{report.jobs:,}"),
        ("completed", f"{report.completed:,}"),
        ("rejected (can never fit)", f"{report.rejected:,}"),
        ("preemptions", f"{report.preemptions:,}"),
        ("work lost to preemption", f"{report.lost_gpu_h:,.0f} GPU-h"),
        ("mean wait", f"{report.mean_wait_s:,.0f} s ({report.mean_wait_s / hours:.1f} h)"),
        ("p50 wait", f"{report.p50_wait_s:,.0f} s"),
        ("p99 wait", f"{report.p99_wait_s:,.0f} s"),
        ("mean job completion time", f"{report.mean_jct_s:,.0f} s"),
        ("utilization", f"{report.utilization:.1%}"),
        ("GPU-hours idle while a fitting job waited", f"{report.idle_while_waiting_gpu_h:,.0f}"),
        ("guarantee violation (blocked by borrowers)", f"{report.guarantee_violation_s:,.0f} s"),
        ("in-quota wait, no borrower to preempt", f"{report.guarantee_fragmentation_s:,.0f} s"),
        ("Jain fairness (projects)", f"{report.jain_fairness:.3f}"),
        ("simulated span", f"{report.makespan_s / 86400:.1f} days"),
        ("wall time", f"{report.wall_s:.1f} s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table
