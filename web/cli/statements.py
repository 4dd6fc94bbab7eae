"""`gpupool statement`, `gpupool verify`, `gpupool usage` and `gpupool credits`: what the
ledger says a project used and was charged, as signed statements anyone can check, as
sreport-like tables, and as credit balances and histories."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from web.cli.client import (
    ApiError,
    Client,
    JsonOption,
    ServerOption,
    TokenOption,
    add_row,
    connect,
    error,
    local_time,
    number,
    part,
    print_json,
    say,
    show,
    stderr,
    table,
)
from web.cli.safe_text import printable
from web.services.errors import Invalid
from web.services.statements import FORMATS, parse_period, verify_statement
from web.services.usage import GROUPINGS

ProjectOption = Annotated[
    str, typer.Option("--project", "-p", metavar="PROJECT", help="The project.")
]
PeriodHelp = "A month (2026-03), a quarter (2026-Q4) or a year (2026)."


def checked_period(period: str | None) -> None:
    """Refuse a malformed --period here, as the server would (exit 2 naming the option)."""
    if period is None:
        return
    try:
        parse_period(period)
    except Invalid as err:
        raise error(f"--period: {err.message}", code=2) from None


def statement_command(
    project: ProjectOption,
    period: Annotated[str, typer.Option(metavar="PERIOD", help=PeriodHelp)],
    form: Annotated[
        str,
        typer.Option(
            "--format",
            metavar="|".join(FORMATS),
            help="json: the signed form to keep and verify; csv and html carry the "
            "signature but only the JSON verifies.",
        ),
    ] = "json",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write it here (default: stdout)."),
    ] = None,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """A project's signed usage statement for a period, from the pool's ledger."""
    if form not in FORMATS:
        raise error(f"--format: {form!r} is not one of {', '.join(FORMATS)}", code=2)
    checked_period(period)
    client = connect(server, token)
    try:
        response = client.send(
            "GET",
            f"/projects/{part(project)}/statements/{part(period)}",
            params={"format": form},
        )
    except ApiError as err:
        client.fail(err)
    if output is None:
        write_document(response.content, newline=form != "json")
        return
    try:
        output.write_bytes(response.content)
    except OSError as err:
        raise error(f"cannot write {output}: {err.strerror or err}") from None
    say(f"Statement of {project} for {period} ({form}, {len(response.content):,} bytes): {output}")


def write_document(content: bytes, newline: bool) -> None:
    """A statement on stdout. To a terminal: as text with anything a terminal would act on
    escaped (its names and notes come from the pool's users). Redirected or piped: the exact
    bytes the server sent, so that a JSON statement saved so still verifies."""
    if sys.stdout.isatty():
        text = printable(content.decode("utf-8", "backslashreplace"), keep="\n\t")
        content = text.encode("utf-8")
    sys.stdout.buffer.write(content + (b"\n" if newline else b""))
    sys.stdout.buffer.flush()


def verify_command(
    statement: Annotated[
        Path, typer.Argument(metavar="STATEMENT", help="A statement in its JSON form.")
    ],
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key",
            metavar="FILE",
            help="The pool's public key (PEM): check offline, without asking any server.",
        ),
    ] = None,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Check a statement: its signature, its figures against its entries, their hashes
    and order. With --public-key, offline; else the key comes from the server, which also
    checks the entries against its ledger (unchanged, none left out, the chain). Exit 1 if
    anything fails, naming it."""
    try:
        text = statement.read_bytes()
    except OSError as err:
        raise error(f"cannot read {statement}: {err.strerror or err}") from None
    if public_key is not None:
        try:
            pem = public_key.read_bytes()
        except OSError as err:
            raise error(f"cannot read {public_key}: {err.strerror or err}") from None
        found = verify_statement(text, pem)
        problems = found.problems
        where = f"offline, with {public_key}"
    else:
        client = connect(server, token)
        try:
            pem = client.send("GET", "/statements/public-key").content
        except ApiError as err:
            client.fail(err)
        found = verify_statement(text, pem)
        problems = found.problems
        where = f"with the key of {client.target.server} and its ledger"
        if not problems:  # the server's check adds the ledger's; it says the same of the rest
            problems = [p for p in _server_problems(client, text) if p not in problems]
    if problems:
        console = stderr()
        console.print(
            Text.assemble(("NOT VALID", "bold red"), printable(f" ({where}): {statement}"))
        )
        for problem in problems:
            console.print(Text(printable(f"  - {problem}")))
        raise typer.Exit(code=1)
    content = found.statement or {}
    head = content["ledger_head"]
    say(
        f"VALID ({where}): statement of {content['project']} for {content['period']}, "
        f"{content['totals']['entries']} ledger entries to entry {head['id']}, "
        f"signed by {content['public_key']}",
        "green",
    )


def _server_problems(client: Client, document: bytes) -> list[str]:
    """What the server's verification finds in the statement, sent as its exact bytes (the
    signature covers them; a re-encoding would not be the signed document)."""
    try:
        answer = client.send("POST", "/statements/verify", raw_json=document)
    except ApiError as err:
        client.fail(err)
    try:
        problems = answer.json()["problems"]
    except (ValueError, KeyError, TypeError):
        raise error(
            f"{client.target.server} answered the verification with something else"
        ) from None
    return [str(p) for p in problems]


def usage_command(
    project: Annotated[
        str | None, typer.Option("--project", "-p", metavar="PROJECT", help="Only this project.")
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", "-u", metavar="USER", help="Only this user's jobs.")
    ] = None,
    flavor: Annotated[
        str | None, typer.Option(metavar="FLAVOR", help="Only this GPU flavor.")
    ] = None,
    period: Annotated[
        str | None, typer.Option(metavar="PERIOD", help=PeriodHelp + " Default: all time.")
    ] = None,
    by: Annotated[
        str, typer.Option(metavar="|".join(GROUPINGS), help="What to group the usage by.")
    ] = "project",
    as_json: JsonOption = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Usage from the ledger (as sreport): GPU-hours, borrowed GPU-hours, credits, energy,
    utilization and idle GPU-hours, grouped; your projects' (admins and operators: all)."""
    if by not in GROUPINGS:
        raise error(f"--by: {by!r} is not one of {', '.join(GROUPINGS)}", code=2)
    checked_period(period)
    client = connect(server, token)
    params = {"project": project, "user": user, "flavor": flavor, "period": period, "by": by}
    rows: list[dict[str, Any]] = client.get("/usage", params)
    if as_json:
        print_json(rows)
        return
    out = table(
        by.upper(),
        "JOBS>",
        "GPU-HOURS>",
        "BORROWED>",
        "CREDITS>",
        "ENERGY kWh>",
        "UTIL %>",
        "IDLE GPU-H>",
    )
    for r in rows:
        add_row(
            out,
            r["key"],
            r["jobs"],
            number(r["gpu_hours"]),
            number(r["borrowed_gpu_hours"]),
            number(r["credits"]),
            number(r["energy_kwh"]),
            number(r["mean_util_pct"]),
            number(r["idle_gpu_hours"]),
        )
    show(out)


credits_app = typer.Typer(
    no_args_is_help=True, help="Credits: a project's balance, its ledger, grants."
)


@credits_app.command("balance")
def credits_balance(
    project: ProjectOption,
    as_json: JsonOption = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Granted, used, earned and left, and the same summed from the ledger."""
    client = connect(server, token)
    b: dict[str, Any] = client.get(f"/projects/{part(project)}/credits")
    if as_json:
        print_json(b)
        return
    out = table("", "PROJECT>", "LEDGER>")
    add_row(
        out,
        "granted",
        "unlimited" if not b["budgeted"] else number(b["granted"]),
        number(b["ledger_granted"]),
    )
    add_row(out, "used", number(b["used"]), number(b["ledger_used"]))
    add_row(out, "earned", number(b["earned"]), number(b["ledger_earned"]))
    add_row(out, "left", "-" if b["left"] is None else number(b["left"]), number(b["ledger_sum"]))
    show(out)
    if b["agrees"]:
        say(f"{project}: the project's totals agree with its {b['entries']} ledger entries")
    else:
        raise error(f"{project}: the project's totals differ from its ledger entries")


@credits_app.command("history")
def credits_history(
    project: ProjectOption,
    period: Annotated[str | None, typer.Option(metavar="PERIOD", help=PeriodHelp)] = None,
    kind: Annotated[
        str | None, typer.Option(metavar="KIND", help="grant, charge, refund or reward.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 1000,
    as_json: JsonOption = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """The project's ledger entries, oldest first."""
    checked_period(period)
    client = connect(server, token)
    params = {"project": project, "period": period, "kind": kind, "limit": limit}
    entries: list[dict[str, Any]] = client.get("/ledger", params)
    if as_json:
        print_json(entries)
        return
    out = table(
        "ID>", "WHEN", "KIND", "CREDITS>", "PERIOD", "JOB", "USER", "FLAVOR", "GPU-H>", "BY", "NOTE"
    )
    for e in entries:
        job = "" if e["job_id"] is None else f"{e['job_id']}.{e['attempt']}"
        add_row(
            out,
            e["id"],
            local_time(e["at"]),
            e["kind"],
            number(e["amount"]),
            e["period"],
            job,
            e["user"],
            e["flavor"],
            number(e["gpu_s"] / 3600.0),
            e["actor"],
            e["note"],
        )
    show(out)


@credits_app.command("grant")
def credits_grant(
    project: ProjectOption,
    amount: Annotated[
        float, typer.Argument(metavar="CREDITS", help="Credits to add (negative: take back).")
    ],
    note: Annotated[str, typer.Option(help="Kept with the grant in the ledger.")] = "",
    as_json: JsonOption = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Grant a project credits (administrators); recorded in the ledger."""
    client = connect(server, token)
    answer = client.post(f"/projects/{part(project)}/credits", {"amount": amount, "note": note})
    if as_json:
        print_json(answer)
        return
    left = answer.get("credits_left")
    say(
        f"Granted {number(amount)} credits to {project}: "
        f"{number(answer['credits'])} granted, {number(left) if left is not None else '-'} left"
    )
