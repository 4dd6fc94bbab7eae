"""`gpupool nodes`: the pool's GPU nodes; drain, undrain, register (operators, admins)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.text import Text

from web.cli.client import (
    JsonOption,
    ServerOption,
    TokenOption,
    add_row,
    connect,
    note,
    part,
    print_json,
    remember,
    say,
    show,
    table,
)

app = typer.Typer(
    invoke_without_command=True,
    no_args_is_help=False,
    help="GPU nodes: list them (no subcommand), drain, undrain or register one.",
)

NodeArg = Annotated[str, typer.Argument(metavar="NAME", help="The node.")]
STATE_STYLE = {"up": "green", "draining": "yellow", "down": "red"}


@app.callback()
def nodes_list(
    ctx: typer.Context,
    as_json: JsonOption = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Every node: flavor, GPUs, GPUs allocated, topology group, state and why."""
    remember(ctx, server, token)
    if ctx.invoked_subcommand is not None:
        return
    client = connect(server, token)
    nodes: list[Any] = client.get("/nodes")
    if as_json:
        print_json(nodes)
        return
    rows = table("NAME", "FLAVOR", "GPUS>", "ALLOCATED>", "GROUP", "STATE", "REASON")
    for n in nodes:
        state = Text(n["state"], style=STATE_STYLE.get(n["state"], ""))
        add_row(
            rows,
            n["name"],
            n["flavor"],
            n["gpus"],
            n["allocated"],
            n["group"],
            state,
            n["state_reason"],
        )
    show(rows)


@app.command("drain")
def nodes_drain(
    ctx: typer.Context,
    name: NodeArg,
    reason: Annotated[str, typer.Option(help="Why: shown with the node.")],
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Start no new jobs on a node; the running ones finish."""
    client = connect(server, token, ctx)
    node = client.post(f"/nodes/{part(name)}/drain", {"reason": reason})
    say(f"Node {node['name']} is {node['state']}: no new jobs start there; the running ones finish")


@app.command("undrain")
def nodes_undrain(
    ctx: typer.Context,
    name: NodeArg,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Return a drained node to service."""
    client = connect(server, token, ctx)
    node = client.post(f"/nodes/{part(name)}/undrain")
    say(f"Node {node['name']} is {node['state']}")


@app.command("register")
def nodes_register(
    ctx: typer.Context,
    name: NodeArg,
    flavor: Annotated[str, typer.Option(help="Its GPU flavor, e.g. H100-80GB.")],
    gpus: Annotated[int, typer.Option(min=1, help="Its GPU count.")],
    group: Annotated[str, typer.Option(help="Topology group (rack or switch).")] = "",
    as_json: JsonOption = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Add a node to the pool (or update one registered before)."""
    client = connect(server, token, ctx)
    body = {"name": name, "flavor": flavor, "gpus": gpus, "group": group}
    node = client.post("/nodes", body)
    if as_json:
        print_json(node)
        return
    where = f" in group {node['group']}" if node["group"] else ""
    say(f"Registered node {node['name']}: {node['gpus']} x {node['flavor']}{where}")


@app.command("token")
def nodes_token(
    ctx: typer.Context,
    name: NodeArg,
    label: Annotated[str, typer.Option(help="What it is for (shown in listings).")] = "",
    as_json: JsonOption = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """A token for the node's agent (`gpupool agent --token ...`): it reports for this node
    and can do nothing else. Shown once."""
    client = connect(server, token, ctx)
    made = client.post(f"/nodes/{part(name)}/tokens", {"label": label})
    if as_json:
        print_json(made)
        return
    typer.echo(made["token"])
    note(
        f"agent token {made['id']} for node {made['node']}: shown only this once; give it to "
        "the node's agent (GPUPOOL_AGENT_TOKEN, or token = ... in its config file)"
    )


@app.command("gpus")
def nodes_gpus(
    ctx: typer.Context,
    name: NodeArg,
    as_json: JsonOption = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """The node's GPUs as its agent last reported them, and the jobs on each."""
    client = connect(server, token, ctx)
    status: dict[str, Any] = client.get(f"/nodes/{part(name)}/gpus")
    if as_json:
        print_json(status)
        return
    if status["received_at"] is None:
        say(f"node {status['node']} ({status['state']}): its agent has not reported yet")
        return
    simulated = " (simulated GPUs)" if status["reader"] == "simulated" else ""
    say(f"node {status['node']} ({status['state']}){simulated}, reported {status['received_at']}")
    rows = table("GPU>", "NAME", "UTIL%>", "MEM GiB>", "POWER W>", "TEMP C>", "ECC", "XID", "JOBS")
    for g in status["gpus"]:
        used, total = g.get("mem_used_bytes"), g.get("mem_total_bytes")
        memory = "-" if used is None else f"{used / 2**30:.1f}/{(total or 0) / 2**30:.0f}"
        jobs = ", ".join(f"{job}.{attempt}" for job, attempt in g["jobs"])
        outsiders = sum(1 for p in g["processes"] if not p.get("job_id"))
        if outsiders:
            jobs = (jobs + ", " if jobs else "") + f"{outsiders} not the pool's"
        add_row(
            rows,
            g["index"],
            g["name"],
            _or_dash(g.get("util_gpu_pct"), "{:.0f}"),
            memory,
            _or_dash(g.get("power_w"), "{:.0f}"),
            _or_dash(g.get("temp_c"), "{:.0f}"),
            _or_dash(g.get("ecc_uncorrected"), "{}"),
            _or_dash(g.get("last_xid"), "{}"),
            jobs,
        )
    show(rows)


def _or_dash(value: Any, form: str) -> str:
    """A reading, or "-" where the GPU did not report one (absent is not zero)."""
    return "-" if value is None else form.format(value)
