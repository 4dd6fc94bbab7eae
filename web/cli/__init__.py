"""The `gpupool` command line: one Typer app, one module per group of commands."""

from __future__ import annotations

import sys

import typer

from web.cli import (
    accounts,
    agent,
    bench,
    db,
    demo,
    jobs,
    nodes,
    projects,
    quota,
    serve,
    simulate,
    statements,
)

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
app.command("agent")(agent.agent_command)
app.add_typer(bench.app, name="bench")
app.add_typer(db.app, name="db")
app.command("submit", context_settings=jobs.SUBMIT_CONTEXT)(jobs.submit_command)
app.command("queue")(jobs.queue_command)
app.command("cancel")(jobs.cancel_command)
app.command("logs")(jobs.logs_command)
app.command("job")(jobs.job_command)
app.add_typer(quota.app, name="quota")
app.add_typer(projects.app, name="project")
app.add_typer(nodes.app, name="nodes")
app.add_typer(accounts.user_app, name="user")
app.add_typer(accounts.token_app, name="token")
app.command("statement")(statements.statement_command)
app.command("verify")(statements.verify_command)
app.command("usage")(statements.usage_command)
app.add_typer(statements.credits_app, name="credits")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
