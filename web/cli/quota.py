"""`gpupool quota`: GPUs guaranteed and allowed per project and flavor, and credits.

`gpupool quota [-p PROJECT]` lists; `set`, `credits` (administrators) change them and
`history` shows who changed what."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from web.cli.client import (
    JsonOption,
    ServerOption,
    TokenOption,
    add_row,
    connect,
    local_time,
    number,
    part,
    print_json,
    remember,
    say,
    show,
    table,
    usage_error,
)

app = typer.Typer(
    invoke_without_command=True,
    no_args_is_help=False,
    help="Quotas and credits per project: list them (no subcommand), or change them.",
)

ProjectArg = Annotated[str, typer.Argument(metavar="PROJECT", help="The project.")]
NoteOption = Annotated[str, typer.Option(help="Why: kept in the project's history.")]


@app.callback()
def quota_list(
    ctx: typer.Context,
    project: Annotated[
        str | None,
        typer.Option("--project", "-p", show_default=False, help="Only this project."),
    ] = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Per project and flavor: GPUs guaranteed, the borrowing limit, GPUs in use, the credit
    rate; and the credits each project has left."""
    remember(ctx, server, token)
    if ctx.invoked_subcommand is not None:
        return
    client = connect(server, token)
    projects: list[Any] = (
        [client.get(f"/projects/{part(project)}")] if project else client.get("/projects")
    )
    if as_json:
        print_json(projects)
        return
    rows = table(
        "PROJECT", "FLAVOR", "GUARANTEED>", "LIMIT>", "IN USE>", "CREDITS/GPU-H>", "CREDITS LEFT>"
    )
    for p in projects:
        label = p["name"] if p["state"] == "active" else f"{p['name']} ({p['state']})"
        quotas = p.get("quotas") or [None]
        for i, q in enumerate(quotas):
            first = i == 0
            add_row(
                rows,
                label if first else "",
                q["flavor"] if q else "-",
                q["guaranteed"] if q else "",
                q["limit"] if q else "",
                q["in_use"] if q else "",
                number(q["credit_rate"]) if q else "",
                credits_left(p) if first else "",
            )
    show(rows)


def credits_left(project: dict[str, Any]) -> str:
    if project.get("credits") is None:
        return "unlimited"
    return f"{number(project['credits_left'])} of {number(project['credits'])}"


@app.command("set")
def quota_set(
    ctx: typer.Context,
    project: ProjectArg,
    flavor: Annotated[str, typer.Argument(help="GPU flavor, e.g. H100-80GB.")],
    guaranteed: Annotated[
        int, typer.Option(min=0, help="GPUs always obtainable (reclaimed from borrowers).")
    ],
    limit: Annotated[
        int, typer.Option(min=0, help="Most GPUs the project may hold, borrowing included.")
    ],
    credit_rate: Annotated[
        float | None,
        typer.Option(
            min=0,
            show_default=False,
            help="Credits per GPU-hour for this project (default: the flavor's rate).",
        ),
    ] = None,
    note: NoteOption = "",
    as_json: JsonOption = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Set a project's quota on one flavor (administrators)."""
    client = connect(server, token, ctx)
    body = {"guaranteed": guaranteed, "limit": limit, "credit_rate": credit_rate, "note": note}
    answer = client.put(f"/projects/{part(project)}/quotas/{part(flavor)}", body)
    if as_json:
        print_json(answer)
        return
    quota = next((q for q in answer.get("quotas", []) if q["flavor"] == flavor), None)
    rate = f"; {number(quota['credit_rate'])} credits/GPU-hour" if quota else ""
    say(f"Quota of {project} on {flavor}: {guaranteed} GPUs guaranteed, limit {limit}{rate}")


@app.command("credits")
def quota_credits(
    ctx: typer.Context,
    project: ProjectArg,
    grant: Annotated[
        float | None,
        typer.Option(
            show_default=False, help="Add credits (negative: take them back).", metavar="X"
        ),
    ] = None,
    set_to: Annotated[
        float | None,
        typer.Option("--set", min=0, show_default=False, help="Set the budget to X.", metavar="X"),
    ] = None,
    unlimited: Annotated[bool, typer.Option("--unlimited", help="No budget at all.")] = False,
    note: NoteOption = "",
    as_json: JsonOption = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Grant credits, set the budget, or lift it (administrators). Give exactly one of
    --grant, --set, --unlimited."""
    given = [grant is not None, set_to is not None, unlimited]
    if sum(given) != 1:
        raise usage_error("give exactly one of --grant X, --set X or --unlimited")
    client = connect(server, token, ctx)
    body: dict[str, Any] = {"note": note}
    if grant is not None:
        body["amount"] = grant
    elif set_to is not None:
        body["set_to"] = set_to
    else:
        body["unlimited"] = True
    answer = client.post(f"/projects/{part(project)}/credits", body)
    if as_json:
        print_json(answer)
        return
    used = number(answer["credits_used"])
    if answer.get("credits") is None:
        say(f"Credits of {project}: unlimited ({used} used)")
    else:
        total, left = number(answer["credits"]), number(answer["credits_left"])
        say(f"Credits of {project}: {total} ({used} used, {left} left)")


@app.command("history")
def quota_history(
    ctx: typer.Context,
    project: ProjectArg,
    as_json: JsonOption = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Who changed the project's quotas, credits, state and members, and when."""
    client = connect(server, token, ctx)
    changes: list[Any] = client.get(f"/projects/{part(project)}/history")
    if as_json:
        print_json(changes)
        return
    rows = table("WHEN", "BY", "WHAT", "OLD", "NEW", "NOTE")
    for c in changes:
        add_row(rows, local_time(c["at"]), c["actor"], c["field"], c["old"], c["new"], c["note"])
    show(rows)
