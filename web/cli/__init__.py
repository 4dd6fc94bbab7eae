"""The `gpupool` command line: one Typer app, one module per group of commands."""

from __future__ import annotations

import contextlib
import os
import sys
import traceback

import typer

from web.cli import (
    accounts,
    agent,
    bench,
    client,
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
from web.cli.safe_text import printable

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
    # What a terminal or pipe cannot encode (a name in a script its locale lacks) shows as
    # escapes rather than ending the command.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    try:
        app()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # `gpupool queue | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except Exception as err:
        # Every failure the commands foresee is a line of their own; this is the last
        # resort (a bug, or a server answering what this CLI cannot read): one line too.
        print(f"error: {unexpected(err)}", file=sys.stderr)
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        sys.exit(1)


DEBUG_ENV = "GPUPOOL_DEBUG"


def unexpected(err: Exception) -> str:
    what = printable(f"{type(err).__name__}: {err}")
    hint = f"{DEBUG_ENV}=1 shows where"
    answered = client.last_answer()
    if answered is not None and isinstance(
        err, (KeyError, TypeError, ValueError, IndexError, AttributeError)
    ):
        return (
            f"the answer to {printable(answered)} is not what this gpupool expects ({what}); "
            f"is the server a gpupool of the same version? ({hint})"
        )
    return f"gpupool failed unexpectedly ({what}); please report it ({hint})"
