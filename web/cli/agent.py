"""`gpupool agent`: the node agent (agents/), run on every GPU node, usually by systemd
(configs/gpupool-agent.service). Flags override GPUPOOL_AGENT_* variables, which override the
config file (/etc/gpupool/agent.toml); see agents/settings.py.

--once reads the GPUs one time and prints the report as JSON on stdout, sending nothing: to
check a node (NVML, attribution) without a server. Errors are one line on stderr, exit 1.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from web.cli.client import error
from web.cli.safe_text import printable_json

SETTINGS_PANEL = "Settings (flags > GPUPOOL_AGENT_* env > config file)"


def agent_command(
    server: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            show_default=False,
            help="The control plane, http(s)://HOST:PORT (env GPUPOOL_AGENT_SERVER).",
            rich_help_panel=SETTINGS_PANEL,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            metavar="TOKEN",
            show_default=False,
            help="This node's own token (env GPUPOOL_AGENT_TOKEN: better there, a flag shows "
            "in ps).",
            rich_help_panel=SETTINGS_PANEL,
        ),
    ] = None,
    node: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            show_default=False,
            help="The node's name in the pool (default: the host's short name) "
            "(env GPUPOOL_AGENT_NODE).",
            rich_help_panel=SETTINGS_PANEL,
        ),
    ] = None,
    interval: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            show_default=False,
            help="Seconds between polls, until the server asks otherwise (default 5) "
            "(env GPUPOOL_AGENT_INTERVAL_S).",
            rich_help_panel=SETTINGS_PANEL,
        ),
    ] = None,
    simulated_gpus: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            show_default=False,
            help="Report N simulated GPUs instead of reading NVML: a demo without GPUs "
            "(env GPUPOOL_AGENT_SIMULATED_GPUS).",
            rich_help_panel=SETTINGS_PANEL,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            show_default=False,
            help="TOML config file (default /etc/gpupool/agent.toml, if present) "
            "(env GPUPOOL_AGENT_CONFIG).",
            rich_help_panel=SETTINGS_PANEL,
        ),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Poll once, print the report as JSON, send nothing.")
    ] = False,
) -> None:
    """Report this node's GPUs (NVML) and their jobs' processes to the control plane."""
    from agents.main import Agent, make_reader, run_agent, wait_for_stop_signal
    from agents.reader import ReaderUnavailable
    from agents.settings import AgentConfigError, load_settings

    try:
        settings = load_settings(
            server=server,
            token=token,
            node=node,
            interval_s=interval,
            simulated_gpus=simulated_gpus,
            config=config,
        )
    except AgentConfigError as problem:
        raise error(str(problem)) from None
    except ValidationError as problem:
        raise error(invalid_settings(problem)) from None
    if not once:
        if not settings.server:
            raise error(
                "no server to report to: give --server, GPUPOOL_AGENT_SERVER or `server` in "
                f"{settings.config}"
            )
        if not settings.token.get_secret_value():
            raise error(
                "no token: give this node's token with --token, GPUPOOL_AGENT_TOKEN or `token` "
                f"in {settings.config}"
            )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per POST
    try:
        reader = make_reader(settings)
    except ReaderUnavailable as problem:
        raise error(str(problem)) from None
    if once:
        from agents.attribution import Attributor

        try:
            report = Agent(reader, Attributor()).poll()
        finally:
            reader.close()
        # Process names on a node are anyone's to choose: shown escaped, the same JSON.
        print(printable_json(report.model_dump(mode="json")))
        return
    run_agent(settings, reader, wait_for_stop_signal())


def invalid_settings(problem: ValidationError, what: str = "agent settings") -> str:
    """One line: each wrong setting and why."""
    parts = []
    for item in problem.errors():
        name = ".".join(str(part) for part in item["loc"]) or "settings"
        parts.append(f"{name}: {item['msg']}")
    return f"invalid {what}: " + "; ".join(parts)
