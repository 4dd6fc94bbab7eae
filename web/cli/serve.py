"""`gpupool serve` (the control plane: API and scheduling loop) and `gpupool up` (the same on
the embedded defaults, seeded with the example pool)."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from web.cli.safe_text import printable
from web.cli.simulate import fail
from web.settings import DISPATCHERS, Settings

if TYPE_CHECKING:
    from web.ray_head import LocalRayHead

# The database layer and the server load inside the commands that need them, so that every
# other command starts quickly.


EXAMPLE_POOL = Path(__file__).resolve().parents[2] / "configs" / "pool.example.toml"

HostOption = Annotated[str | None, typer.Option(help="Address to listen on [env GPUPOOL_HOST].")]
PortOption = Annotated[int | None, typer.Option(help="Port [env GPUPOOL_PORT].")]
DataDirOption = Annotated[
    Path | None, typer.Option(help="Where the embedded database lives [env GPUPOOL_DATA_DIR].")
]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        help="postgresql://... for production; default SQLite [env GPUPOOL_DATABASE_URL]."
    ),
]
DispatcherOption = Annotated[
    str | None,
    typer.Option(
        show_default=False,
        help="What runs admitted jobs: 'ray' (Ray jobs on the Ray cluster at --ray-address; "
        "the default of `up`), 'local' (processes on this machine as this OS user; the default "
        "of `serve`), 'simulated' (nothing runs; each job "
        "'ends' after GPUPOOL_SIMULATED_RUN_S seconds) or 'none' (admit only) "
        "[env GPUPOOL_DISPATCHER].",
    ),
]
RayAddressOption = Annotated[
    str | None,
    typer.Option(
        metavar="URL",
        show_default=False,
        help="The Ray dashboard's address, for --dispatcher ray (default http://127.0.0.1:8265) "
        "[env GPUPOOL_RAY_ADDRESS]. Ray's token: GPUPOOL_RAY_TOKEN, else RAY_AUTH_TOKEN, "
        "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token.",
    ),
]


def settings_from(**given: Any) -> Settings:
    """Settings from the environment, with the flags that were given on top."""
    from pydantic import ValidationError

    from web.cli.agent import invalid_settings

    try:
        return Settings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as problem:
        raise fail(invalid_settings(problem, "settings (flags and GPUPOOL_* variables)")) from None


def check_database_url(settings: Settings) -> None:
    """A database URL gpupool can use: SQLite or PostgreSQL, one that parses."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        backend = make_url(settings.sqlalchemy_url).get_backend_name()
    except (ArgumentError, ValueError) as err:
        raise fail(f"the database URL (GPUPOOL_DATABASE_URL) does not parse: {err}") from None
    if backend not in ("sqlite", "postgresql"):
        raise fail(
            f"the database URL (GPUPOOL_DATABASE_URL) is for {backend}: give "
            "postgresql://USER:PASSWORD@HOST/DATABASE, or none for SQLite in the data directory"
        )


@contextmanager
def database_errors(settings: Settings) -> Iterator[None]:
    """A database that cannot be reached or used at start-up: one line naming it (password
    hidden) and the database's own first line, not a traceback."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except SQLAlchemyError as err:
        where = make_url(settings.sqlalchemy_url).render_as_string(hide_password=True)
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()
        raise fail(f"the database {where}: {reason[0] if reason else type(err).__name__}") from None


def check_dispatcher(settings: Settings) -> None:
    if settings.dispatcher not in DISPATCHERS:
        raise fail(
            f"--dispatcher: unknown {settings.dispatcher!r}; one of: {', '.join(DISPATCHERS)}"
        )


def prepare(settings: Settings, console: Console) -> None:
    """What `up` and `serve` check before they print an address or start anything: the
    dispatcher's name, that the port is free, and the data directory (made, whatever the
    database: it holds the signing key and the tokens; owner-only, saying what was not)."""
    from web.data_dir import secure_data_dir

    check_dispatcher(settings)
    check_database_url(settings)
    check_port(settings.host, settings.port)
    try:
        found = secure_data_dir(settings)
    except OSError as err:
        raise fail(
            f"cannot use the data directory {settings.data_dir}: {err.strerror or err} "
            "(--data-dir or GPUPOOL_DATA_DIR)"
        ) from None
    for warning in found.warnings():  # unwrapped: a path cut across lines cannot be copied
        console.print(Text.assemble(("warning: ", "yellow"), printable(warning)), soft_wrap=True)


def check_port(host: str, port: int) -> None:
    """Fail in one line if the API could not listen on host:port. A test bind, made as
    uvicorn makes its own (SO_REUSEADDR: a port that only has connections closing on it is
    free); the port is let go at once, for the server to take."""
    if not 0 <= port <= 65535:
        raise fail(f"--port {port}: a port is 0 to 65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except socket.gaierror:
        raise fail(f"--host {host}: no such address") from None
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise fail(f"port {port} on {host} is in use; choose another with --port") from None
        if err.errno == errno.EACCES:
            raise fail(
                f"port {port} on {host}: not allowed for this user (ports below 1024 need "
                "privileges); choose another with --port"
            ) from None
        if err.errno == errno.EADDRNOTAVAIL:
            raise fail(f"--host {host}: not an address of this machine") from None
        raise fail(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def run_server(settings: Settings, console: Console) -> None:

    from web.api.app import create_app
    from web.db import migrate
    from web.pool import build_pool
    from web.scheduler_process import SchedulerProcess, settle_garbage_collector

    check_dispatcher(settings)
    dispatcher_name = settings.dispatcher
    pool = build_pool(settings, dispatcher=None)  # the API's part; the loop runs beside it
    migrate(pool.engine)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    scheduler = SchedulerProcess(settings, dispatcher_name)
    pool.waker, pool.leader_probe = scheduler.wake, scheduler.leading
    scheduler.start()
    console.print(f"gpupool API on http://{settings.host}:{settings.port} (docs at /docs)")
    if dispatcher_name == "local":
        console.print(
            "[yellow]dispatcher 'local':[/] jobs run as processes of this OS user on this "
            "machine, so they can read what this user can, the pool's database included. "
            "Use it for a single trusted user; a shared pool runs its jobs on Ray."
        )
    elif dispatcher_name == "ray":
        from scheduler.runtime.ray_dispatcher import address_problem, dashboard_url

        url = dashboard_url(settings.ray_address)
        console.print(f"dispatcher 'ray': jobs run on the Ray cluster at {url}")
        problem = address_problem(url)
        if problem is not None:
            console.print(f"[yellow]warning:[/] {problem}; jobs wait until it is fixed")
    settle_garbage_collector()
    try:
        signum = serve_until_signal(create_app(pool), settings)
    finally:
        scheduler.stop()
    if signum is not None:
        console.print(f"gpupool stopped ({signal.Signals(signum).name})")


def serve_until_signal(app: Any, settings: Settings) -> int | None:
    """Serve `app` until SIGINT or SIGTERM; the signal that ended it, if one did. Uvicorn
    shuts down gracefully on either and then raises it again for the handler it found;
    with Python's own, that is a KeyboardInterrupt inside the event loop, and a traceback
    for the user. The handler installed here takes it instead."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_level="warning",
        )
    )
    received: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        if not server.started:  # before uvicorn took over its signals: just leave
            raise SystemExit(128 + signum)
        received.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return received[0] if received else None


def serve_command(
    host: HostOption = None,
    port: PortOption = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    dispatcher: DispatcherOption = None,
    ray_address: RayAddressOption = None,
) -> None:
    """Run the control plane: the REST API and the scheduling loop (one leader per database;
    a second `serve` on the same database stands by and takes over when the first stops).
    With --dispatcher ray, a Ray that cannot be reached keeps no one from submitting: the
    loop warns, and jobs wait until Ray answers."""
    settings = settings_from(
        host=host,
        port=port,
        data_dir=data_dir,
        database_url=database_url,
        dispatcher=dispatcher,
        ray_address=ray_address,
    )
    console = Console(stderr=True)
    prepare(settings, console)
    with database_errors(settings):
        run_server(settings, console)


def up_command(
    host: HostOption = None,
    port: PortOption = None,
    data_dir: DataDirOption = None,
    pool_file: Annotated[
        Path, typer.Option("--pool", help="Pool to seed an empty database with.")
    ] = EXAMPLE_POOL,
    dispatcher: DispatcherOption = None,
    ray_address: RayAddressOption = None,
) -> None:
    """Run gpupool on its embedded defaults: SQLite under the data directory, seeded from the
    example pool (sectors, projects, quotas, users), API and scheduling loop on 127.0.0.1.
    Prints the URL and an admin token, and saves both for the CLI. Jobs run on Ray (unless
    --dispatcher or GPUPOOL_DISPATCHER says otherwise): without --ray-address, the Ray
    running on this machine, or a Ray head started for as long as `up` runs (this
    machine's GPUs, or simulated ones for the pool's nodes)."""
    console = Console()
    if dispatcher is None and not os.environ.get("GPUPOOL_DISPATCHER"):
        dispatcher = "ray"
    settings = settings_from(
        host=host, port=port, data_dir=data_dir, dispatcher=dispatcher, ray_address=ray_address
    )
    prepare(settings, Console(stderr=True))
    with database_errors(settings):
        token = seed_and_token(settings, pool_file)
        admin, password = portal_password(settings, token)
    config = save_client_config(settings, token)
    console.print(f"[bold]gpupool[/] is starting at http://{settings.host}:{settings.port}")
    console.print(f"admin token: {token}")
    portal = f"portal: http://{settings.host}:{settings.port}/"
    if password is None:
        console.print(f"{portal} (sign in as {admin} with your password or the token above)")
    else:
        console.print(
            f"{portal} (sign in as {admin}, password {password}; kept in "
            f"{settings.data_dir / 'admin.password'})"
        )
    console.print(f"(saved for the CLI in {config}; try: gpupool queue, gpupool nodes)")
    head = None
    try:
        with database_errors(settings):
            if settings.dispatcher == "ray":
                settings, head = local_ray(settings, console)
            run_server(settings, Console(stderr=True))
    finally:
        if head is not None:
            Console(stderr=True).print("stopping the Ray head gpupool started")
            head.stop()


def local_ray(settings: Settings, console: Console) -> tuple[Settings, LocalRayHead | None]:
    """For `up --dispatcher ray`: the Ray given (--ray-address), else the one answering on
    this machine, else a head started here (its token in the settings). Never fails: a Ray
    that cannot be had is the loop's warning, and jobs wait."""
    import threading

    from pydantic import SecretStr

    from scheduler.runtime.clock import SystemClock
    from scheduler.runtime.ray_dispatcher import DEFAULT_ADDRESS, auth_token
    from web.db import make_engine
    from web.ray_head import LocalRayHead, gpus_here, head_token, plan_head, probe

    if settings.ray_address:
        return settings, None  # the operator's Ray: nothing to start
    found = probe(DEFAULT_ADDRESS, auth_token(settings.ray_token.get_secret_value()))
    if found == "ray":
        console.print(f"using the Ray running at {DEFAULT_ADDRESS}")
        return settings, None
    if found is not None:
        why = (
            "refuses gpupool's token (set GPUPOOL_RAY_TOKEN: ray get-auth-token)"
            if found == "refused"
            else "is not a Ray dashboard"
        )
        console.print(f"[yellow]warning:[/] {DEFAULT_ADDRESS} {why}; jobs wait until Ray answers")
        return settings, None
    engine = make_engine(settings)
    try:
        plan = plan_head(engine, gpus_here(), SystemClock().now())
    finally:
        engine.dispose()
    token = head_token(settings.data_dir)
    head = LocalRayHead(plan, token, settings.data_dir / "ray-head.log")
    what = (
        f"{plan.gpus} simulated GPUs for the pool's {len(plan.nodes)} nodes"
        if plan.simulated
        else f"this machine's {plan.gpus} GPUs as node {next(iter(plan.nodes))}"
        + (" (added to the pool)" if plan.seeded else "")
    )
    console.print(f"starting a Ray head on this machine: {what} (log: {head.log})")
    if not plan.simulated:
        console.print(
            "[yellow]note:[/] the pool's other nodes are down (not in the Ray cluster) until "
            "they join Ray (ray start --address=THIS:6379 "
            "--resources='{\"gpupool_node:NAME\": 1}'); nothing is placed on them until then"
        )
    try:
        head.start()
    except OSError as err:
        console.print(f"[yellow]warning:[/] could not start Ray: {err}; jobs wait for a Ray")
        return settings, None
    started = time.monotonic()

    def report() -> None:
        problem = head.wait_ready()
        if problem is None:
            took = time.monotonic() - started
            console.print(f"Ray head ready at {head.address} in {took:.1f} s")
        else:
            console.print(f"[yellow]warning:[/] the Ray head did not start: {problem}")

    threading.Thread(target=report, name="ray-head-ready", daemon=True).start()
    return settings.model_copy(update={"ray_token": SecretStr(token)}), head


def seed_and_token(settings: Settings, pool_file: Path) -> str:
    """Migrate, seed what is missing, and return a working admin token (kept in the data
    directory, owner-only, so the next `up` prints the same one)."""
    from scheduler.runtime.clock import SystemClock
    from scheduler.sim.errors import InputError
    from web.data_dir import write_private
    from web.db import make_engine, migrate, write_session
    from web.models import Role
    from web.services.auth import Principal, authenticate, issue_token
    from web.services.errors import Unauthenticated
    from web.services.seed import seed_pool

    engine = make_engine(settings)
    migrate(engine)
    clock = SystemClock()
    token_file = settings.data_dir / "admin.token"
    try:
        with write_session(engine) as session:
            seeded = seed_pool(session, pool_file, clock.now())
            if token_file.exists():
                token = token_file.read_text().strip()
                try:
                    authenticate(session, token, clock.now())
                    return token
                except Unauthenticated:
                    pass  # revoked or from another database: make a new one
            admin = seeded.admins[0] if seeded.admins else None
            if admin is None:
                raise fail(f'{pool_file}: [[users]] needs one user with role = "admin"')
            token = issue_token(
                session, Principal(admin, Role.ADMIN), admin, clock.now(), "gpupool up"
            ).token
    except InputError as err:
        raise fail(str(err)) from None
    finally:
        engine.dispose()
    write_private(token_file, token + "\n")
    return token


def portal_password(settings: Settings, token: str) -> tuple[str, str | None]:
    """The admin's name and portal password: the one `up` made before (kept owner-only in
    the data directory) while it still signs in; a new one if the admin has none; None if
    the admin has set a password of their own since."""
    import secrets

    from scheduler.runtime.clock import SystemClock
    from web.data_dir import write_private
    from web.db import make_engine, write_session
    from web.models import User
    from web.services.auth import authenticate, set_password, sign_in
    from web.services.errors import Unauthenticated

    engine = make_engine(settings)
    password_file = settings.data_dir / "admin.password"
    now = SystemClock().now()
    try:
        with write_session(engine) as session:
            admin = authenticate(session, token, now)
            if password_file.exists():
                password = password_file.read_text().strip()
                try:
                    sign_in(session, admin.name, password)
                    return admin.name, password
                except Unauthenticated:
                    pass  # changed since, or another database
            if session.get(User, admin.name).password_hash:  # type: ignore[union-attr]
                return admin.name, None  # their own: leave it
            password = secrets.token_urlsafe(12)
            set_password(session, admin, admin.name, password, now)
    finally:
        engine.dispose()
    write_private(password_file, password + "\n")
    return admin.name, password


def save_client_config(settings: Settings, token: str) -> Path:
    from web.cli.client import save_config

    return save_config(f"http://{settings.host}:{settings.port}", token)
