"""`gpupool bench ...`: benchmarks. Figures are measured here, never asserted in tests."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from scheduler.sim.benchmarks import bench_cycle

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
    if as_json:
        print(json.dumps(result))
        return
    table = Table(title="gpupool bench cycle")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    Console().print(table)
