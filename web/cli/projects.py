"""`gpupool project`: requests, decisions and members (requested -> approved -> active ->
expired | closed)."""

from __future__ import annotations

from collections.abc import Callable
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
    say,
    show,
    stdout,
    table,
)
from web.cli.quota import credits_left
from web.enums import ProjectState

app = typer.Typer(no_args_is_help=True, help="Projects: request, decide, members.")

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The project.")]
NoteOption = Annotated[str, typer.Option(help="A note kept with the decision.")]


@app.command("list")
def project_list(
    state: Annotated[
        ProjectState | None,
        typer.Option("--state", show_default=False, help="Only projects in this state."),
    ] = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """The projects you may see (administrators and operators: all)."""
    client = connect(server, token)
    projects: list[Any] = client.get("/projects", {"state": state.value if state else None})
    if as_json:
        print_json(projects)
        return
    rows = table("NAME", "STATE", "SECTOR", "PI", "MEMBERS>", "CREDITS LEFT>", "TITLE")
    for p in projects:
        add_row(
            rows,
            p["name"],
            p["state"],
            p["sector"],
            p["pi"],
            len(p.get("members", [])),
            credits_left(p),
            p["title"],
        )
    show(rows)


@app.command("show")
def project_show(
    name: NameArg,
    as_json: JsonOption = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """One project: its state, request, decision, credits, members and quotas."""
    client = connect(server, token)
    p = client.get(f"/projects/{part(name)}")
    if as_json:
        print_json(p)
        return
    facts = table("FIELD", "VALUE")
    decided = ""
    if p.get("decided_by"):
        decided = f"{p['decided_by']} at {local_time(p['decided_at'])}"
        if p.get("decision_note"):
            decided += f": {p['decision_note']}"
    for label, value in (
        ("name", p["name"]),
        ("title", p["title"]),
        ("state", p["state"]),
        ("sector", p["sector"]),
        ("PI", p["pi"]),
        ("requested", f"{p['requested_gpus']} GPUs, {number(p['requested_gpu_hours'])} GPU-h"),
        ("justification", p.get("justification", "")),
        ("credits", f"{credits_left(p)} left; {number(p['credits_used'])} used"),
        ("created", local_time(p["created_at"])),
        ("expires", local_time(p.get("expires_at")) or "never"),
        ("decided", decided),
    ):
        add_row(facts, label, value)
    show(facts)
    members = table("MEMBER", "ROLE")
    for m in p.get("members", []):
        add_row(members, m["user"], m["role"])
    show(members)
    quotas = table("FLAVOR", "GUARANTEED>", "LIMIT>", "IN USE>", "CREDITS/GPU-H>")
    for q in p.get("quotas", []):
        add_row(
            quotas, q["flavor"], q["guaranteed"], q["limit"], q["in_use"], number(q["credit_rate"])
        )
    if p.get("quotas"):
        show(quotas)
    else:
        stdout().print("no quotas yet (gpupool quota set NAME FLAVOR ...)")


@app.command("request")
def project_request(
    name: NameArg,
    title: Annotated[str, typer.Option(help="What the project is.")],
    sector: Annotated[str, typer.Option(help="industry, academia, research, ...")],
    pi: Annotated[
        str | None,
        typer.Option(show_default=False, help="Its PI (default: you; others: administrators)."),
    ] = None,
    gpus: Annotated[int, typer.Option(min=0, help="GPUs asked for.")] = 0,
    gpu_hours: Annotated[float, typer.Option(min=0, help="GPU-hours asked for.")] = 0.0,
    justification: Annotated[str, typer.Option(help="Why, for the reviewers.")] = "",
    as_json: JsonOption = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Ask for a new project; an administrator approves and activates it."""
    client = connect(server, token)
    body = {
        "name": name,
        "title": title,
        "sector": sector,
        "pi": pi,
        "requested_gpus": gpus,
        "requested_gpu_hours": gpu_hours,
        "justification": justification,
    }
    answer = client.post("/projects", {k: v for k, v in body.items() if v is not None})
    if as_json:
        print_json(answer)
        return
    say(f"Requested project {answer['name']} ({answer['state']}, PI {answer['pi']})")


DECISIONS = {
    "approve": "Approve a requested project (administrators).",
    "activate": "Activate an approved (or expired) project: its members may submit jobs.",
    "deny": "Deny a requested project (it is closed).",
    "close": "Close a project: no more jobs.",
}


def _decision(action: str, doc: str) -> Callable[..., None]:
    def decide(
        name: NameArg,
        note: NoteOption = "",
        as_json: JsonOption = False,
        server: ServerOption = None,
        token: TokenOption = None,
    ) -> None:
        client = connect(server, token)
        answer = client.post(f"/projects/{part(name)}/{action}", {"note": note})
        if as_json:
            print_json(answer)
            return
        say(f"Project {answer['name']} is {answer['state']}")

    decide.__doc__ = doc
    decide.__name__ = f"project_{action}"
    return decide


for _action, _doc in DECISIONS.items():
    app.command(_action)(_decision(_action, _doc))


@app.command("add-member")
def project_add_member(
    name: NameArg,
    user: Annotated[str, typer.Argument(help="The user to add.")],
    pi: Annotated[bool, typer.Option("--pi", help="As a PI (may manage members).")] = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Add a member (or change their role), as an administrator or the project's PI."""
    client = connect(server, token)
    role = "pi" if pi else "member"
    client.post(f"/projects/{part(name)}/members", {"user": user, "role": role})
    say(f"{user} is a {role} of {name}")


@app.command("remove-member")
def project_remove_member(
    name: NameArg,
    user: Annotated[str, typer.Argument(help="The user to remove.")],
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Remove a member, as an administrator or the project's PI."""
    client = connect(server, token)
    client.delete(f"/projects/{part(name)}/members/{part(user)}")
    say(f"{user} is no longer a member of {name}")
