"""The `gpupool` command line: one Typer app, one module per group of commands."""

from __future__ import annotations

import sys

import typer

from web.cli import bench, demo, serve, simulate

app = typer.Typer(
    name="gpupool",
    help="gpupool: quota-aware admission, metering and usage statements for a shared GPU pool.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("up")(serve.up_command)
app.command("serve")(serve.serve_command)
app.command("demo")(demo.demo_command)
app.command("simulate")(simulate.simulate_command)
app.add_typer(bench.app, name="bench")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
