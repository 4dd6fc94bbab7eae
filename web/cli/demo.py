"""`gpupool demo`: the allocation core compared with two baselines, in a minute.

A workload gpupool generates itself, replayed on the example pool under the three policies,
side by side. No trace data and no server are needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from scheduler.core import Policy
from scheduler.sim.cluster import load_cluster
from scheduler.sim.engine import Simulation
from scheduler.sim.errors import InputError
from scheduler.sim.synthetic import demo_workload
from web.cli.simulate import fail

EXAMPLE_POOL = Path(__file__).resolve().parents[2] / "configs" / "pool.example.toml"


def demo_command(
    cluster: Annotated[Path, typer.Option(help="Cluster TOML to run on.")] = EXAMPLE_POOL,
    jobs: Annotated[int, typer.Option(min=1, help="Jobs in the generated workload.")] = 5_000,
    seed: Annotated[int, typer.Option(help="Seed of the generated workload.")] = 7,
) -> None:
    """Run the demo: a generated workload on the example pool, under each policy."""
    console = Console()
    try:
        pool = load_cluster(cluster)
    except InputError as err:
        raise fail(str(err)) from None
    workload = demo_workload(pool, jobs, seed)
    console.print(
        f"[bold]gpupool[/] demo: {len(workload):,} generated jobs on {len(pool.nodes)} nodes "
        f"({pool.gpus} GPUs: {', '.join(pool.flavors)}), {len(pool.projects)} projects."
    )
    table = Table(title="Same workload, three policies")
    for column in ("policy", "mean wait", "p99 wait", "util.", "preempted", "guarantee", "Jain"):
        table.add_column(column, justify="right", no_wrap=True)
    for name in ("gpupool", "static", "fifo"):
        with console.status(f"replaying under {name} ..."):
            report = Simulation(pool, workload, Policy.named(name)).run()
        table.add_row(
            name,
            f"{report.mean_wait_s:,.0f} s",
            f"{report.p99_wait_s:,.0f} s",
            f"{report.utilization:.0%}",
            f"{report.preemptions:,}",
            "kept" if report.guarantee_violation_s == 0 else "violated",
            f"{report.jain_fairness:.2f}",
        )
    console.print(table)
    console.print(
        "guarantee: whether every in-quota job got its GPUs within the grace period.\n"
        "Replay a trace: gpupool simulate --trace PATH --cluster configs/philly.toml"
    )
