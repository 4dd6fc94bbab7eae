"""The client side of `gpupool`: where the server and the token come from, the one HTTP helper
every client command goes through, and the output helpers they share.

Server and token: the --server/--token flags, then GPUPOOL_SERVER/GPUPOOL_TOKEN, then the
config file (GPUPOOL_CONFIG, or $XDG_CONFIG_HOME/gpupool/config.toml, or
~/.config/gpupool/config.toml; TOML keys `server` and `token`), then http://127.0.0.1:8000.

Errors never end in a traceback: an unreachable server, a refused token or a request the
server turns down prints one line on stderr (the server's own `detail`) and exits 1.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import quote

import httpx
import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from web.cli.safe_text import printable, printable_json

DEFAULT_SERVER = "http://127.0.0.1:8000"
API_PREFIX = "/api/v1"
SERVER_ENV = "GPUPOOL_SERVER"
TOKEN_ENV = "GPUPOOL_TOKEN"
CONFIG_ENV = "GPUPOOL_CONFIG"
TIMEOUT_S = 30.0
PAGE_SIZE = 1000  # the most /jobs returns in one page

ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        metavar="URL",
        show_default=False,
        help=f"The gpupool server (env {SERVER_ENV}; else the config file; else {DEFAULT_SERVER}).",
        rich_help_panel="Connection",
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        metavar="TOKEN",
        show_default=False,
        help=f"API token (env {TOKEN_ENV}; else the config file written by `gpupool up`).",
        rich_help_panel="Connection",
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the server's answer as JSON, for scripts.")
]


# --- failing cleanly -----------------------------------------------------------------------


def stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def error(message: str, hint: str = "", code: int = 1) -> typer.Exit:
    """Print `error: message` (and a hint) on stderr; return the Exit to raise."""
    console = stderr()
    console.print(Text.assemble(("error: ", "bold red"), (printable(message), "red")))
    if hint:
        console.print(Text(printable(hint), style="yellow"))
    return typer.Exit(code=code)


def usage_error(message: str) -> typer.Exit:
    """A command line that cannot work as given (exit 2, as click's own usage errors)."""
    return error(message, code=2)


# --- configuration -------------------------------------------------------------------------


def config_path() -> Path:
    """GPUPOOL_CONFIG, else $XDG_CONFIG_HOME/gpupool/config.toml, else ~/.config/..."""
    given = os.environ.get(CONFIG_ENV, "")
    if given:
        return Path(given).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg).expanduser() if xdg else None
    if base is None or not base.is_absolute():  # the XDG spec: ignore relative paths
        base = Path.home() / ".config"
    return base / "gpupool" / "config.toml"


def load_config(path: Path) -> dict[str, str]:
    """The config file's `server` and `token` (those present); {} if there is no file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise error(f"cannot read the config file {path}: {err.strerror or err}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise error(f"config file {path} is not valid TOML: {err}") from None
    found: dict[str, str] = {}
    for key in ("server", "token"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise error(f"config file {path}: '{key}' must be a string, got {value!r}")
        found[key] = value
    return found


def save_config(server: str, token: str) -> Path:
    """Write `server` and `token` to the config file, owner-only (0600), creating its
    directory; return its path. Used by `gpupool up`."""
    path = config_path()
    text = (
        "# gpupool client settings (written by `gpupool up`; keep this file private)\n"
        f"server = {toml_string(server)}\n"
        f"token = {toml_string(token)}\n"
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # mkstemp creates the file 0600; the rename makes the new file appear whole.
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as err:
        raise error(f"cannot write the client config {path}: {err.strerror or err}") from None
    return path


def toml_string(value: str) -> str:
    """A TOML basic string holding `value`."""
    escapes = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n"}
    escapes |= {"\f": "\\f", "\r": "\\r"}
    out = []
    for char in value:
        if char in escapes:
            out.append(escapes[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


@dataclass(frozen=True, slots=True)
class Target:
    """Which server to talk to, with which token, and where each came from (for hints)."""

    server: str  # base URL, no trailing slash
    server_source: str
    token: str | None
    token_source: str  # "" when there is no token
    config: Path


def resolve(server: str | None, token: str | None) -> Target:
    """Flags, then environment, then the config file (read only if still needed)."""
    path = config_path()
    config: dict[str, str] | None = None

    def from_config() -> dict[str, str]:
        nonlocal config
        if config is None:
            config = load_config(path)
        return config

    server_source = "--server"
    if not server:
        server, server_source = os.environ.get(SERVER_ENV, ""), SERVER_ENV
    if not server:
        server, server_source = from_config().get("server", ""), f"the config file {path}"
    if not server:
        server, server_source = DEFAULT_SERVER, "the default"
    token_source = "--token"
    if not token:
        token, token_source = os.environ.get(TOKEN_ENV, ""), TOKEN_ENV
    if not token:
        token, token_source = from_config().get("token", ""), f"the config file {path}"
    if not token:
        token, token_source = None, ""
    return Target(normal_url(server, server_source), server_source, token, token_source, path)


def normal_url(server: str, source: str) -> str:
    text = server.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise error(
            f"server {server!r} (from {source}) is not a URL; give one such as {DEFAULT_SERVER}"
        )
    return text.rstrip("/")


# --- talking to the server -----------------------------------------------------------------


class ApiError(Exception):
    """The server turned a request down: its status and its `detail`."""

    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.field = status, detail, field


class Client:
    """One HTTP helper for every command: JSON in and out under /api/v1, bearer token,
    connection problems and refusals turned into clear messages."""

    def __init__(self, target: Target) -> None:
        self.target = target
        headers = {"Accept": "application/json", "User-Agent": "gpupool-cli"}
        if target.token:
            if not target.token.isascii() or not target.token.isprintable():
                raise error(f"the token from {target.token_source} is not a gpupool token")
            headers["Authorization"] = f"Bearer {target.token}"
        self._http = httpx.Client(
            base_url=target.server + API_PREFIX, headers=headers, timeout=TIMEOUT_S
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        """The decoded JSON answer; ApiError if the server refuses. A server that cannot be
        reached or answers nonsense ends the command here (exit 1)."""
        response = self.send(method, path, params=params, body=body)
        try:
            return response.json()
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past reading
            raise error(
                f"{self.target.server} answered {method} {path} with something that is not "
                "JSON; is it a gpupool server?"
            ) from None

    def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        raw_json: bytes | None = None,
    ) -> httpx.Response:
        """The server's answer as it came (for answers that are not JSON); ApiError if the
        server refuses. A server that cannot be reached ends the command here (exit 1).
        `raw_json`: a JSON body sent as these exact bytes (a signed statement), not `body`."""
        server = self.target.server
        clean = {k: v for k, v in (params or {}).items() if v is not None and v != []}
        try:
            if raw_json is None:
                response = self._http.request(method, path, params=clean, json=body)
            else:
                response = self._http.request(
                    method,
                    path,
                    params=clean,
                    content=raw_json,
                    headers={"Content-Type": "application/json"},
                )
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise error(
                f"cannot reach the gpupool server at {server} "
                "(is it running? gpupool up / gpupool serve)",
                hint=f"the server address came from {self.target.server_source}"
                if self.target.server_source != "the default"
                else f"no server given; use --server or {SERVER_ENV}",
            ) from None
        except httpx.TimeoutException:
            raise error(
                f"the gpupool server at {server} did not answer in {TIMEOUT_S:g} s"
            ) from None
        except httpx.HTTPError as err:
            raise error(f"talking to the gpupool server at {server} failed: {err}") from None
        if response.is_success:
            global _last_answer
            _last_answer = f"{method} {response.url}"
            return response
        raise _api_error(response)

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        """As request(), but a refusal ends the command with the server's message."""
        try:
            return self.request(method, path, params=params, body=body)
        except ApiError as err:
            self.fail(err)

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.call("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, body={} if body is None else body)

    def put(self, path: str, body: Any) -> Any:
        return self.call("PUT", path, body=body)

    def patch(self, path: str, body: Any) -> Any:
        return self.call("PATCH", path, body=body)

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)

    def report(self, err: ApiError, subject: str = "") -> None:
        """Print a refusal (and, for 401, where the token came from) without exiting."""
        stderr().print(
            Text.assemble(
                ("error: ", "bold red"),
                (printable(f"{subject}: ") if subject else "", "red"),
                (printable(err.detail), "red"),
            )
        )
        if err.status == 401:
            stderr().print(Text(printable(self.token_hint()), style="yellow"))

    def fail(self, err: ApiError) -> NoReturn:
        self.report(err)
        raise typer.Exit(code=1)

    def token_hint(self) -> str:
        target = self.target
        if not target.token:
            return (
                f'no token: pass --token, set {TOKEN_ENV}, or put token = "..." in '
                f"{target.config} (gpupool up writes it; gpupool token create makes tokens)"
            )
        return (
            f"the token from {target.token_source} was refused by {target.server}; "
            f"tokens come from --token, else {TOKEN_ENV}, else {target.config}"
        )

    def me(self) -> dict[str, Any]:
        me: dict[str, Any] = self.get("/users/me")
        return me


# The last request the server answered (for the message of an answer that could not be read).
_last_answer: str | None = None


def last_answer() -> str | None:
    return _last_answer


def _api_error(response: httpx.Response) -> ApiError:
    detail: str = ""
    field: str | None = None
    try:
        body = response.json()
    except (ValueError, RecursionError):
        body = None
    if isinstance(body, dict):
        raw = body.get("detail")
        if isinstance(raw, str):
            detail = raw
        elif isinstance(raw, list):  # FastAPI's own validation format
            detail = "; ".join(str(e.get("msg", e)) if isinstance(e, dict) else str(e) for e in raw)
        field = body.get("field") if isinstance(body.get("field"), str) else None
    if not detail:
        text = response.text.strip()[:300]
        detail = f"HTTP {response.status_code} {response.reason_phrase}" + (
            f": {text}" if text else ""
        )
    elif response.status_code >= 500:
        detail = f"the server failed (HTTP {response.status_code}): {detail}"
    return ApiError(response.status_code, detail, field)


def connect(server: str | None, token: str | None, ctx: typer.Context | None = None) -> Client:
    """A client for this command. Given the command's context, --server/--token given to its
    group (`gpupool quota --server X set ...`) count too (see remember)."""
    inherited = ctx.obj if ctx is not None and isinstance(ctx.obj, dict) else {}
    return Client(resolve(server or inherited.get("server"), token or inherited.get("token")))


def remember(ctx: typer.Context, server: str | None, token: str | None) -> None:
    """Keep a group's --server/--token for its subcommands (see connect)."""
    obj = ctx.ensure_object(dict)
    obj.update({k: v for k, v in (("server", server), ("token", token)) if v})


# --- output --------------------------------------------------------------------------------


def stdout() -> Console:
    """Tables on a terminal fit it; piped, they are never wrapped (one line per row)."""
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(highlight=False, width=1000 if wide else None)


def print_json(data: Any) -> None:
    sys.stdout.write(printable_json(data) + "\n")
    sys.stdout.flush()


def say(message: str, style: str = "") -> None:
    stdout().print(Text(printable(message), style=style))


def note(message: str) -> None:
    """A remark for people, on stderr, so stdout stays parseable."""
    stderr().print(Text(printable(message), style="yellow"))


def table(*columns: str) -> Table:
    """A plain table; a column name ending in '>' is right-aligned (numbers)."""
    result = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for column in columns:
        right = column.endswith(">")
        result.add_column(column.rstrip(">"), justify="right" if right else "left")
    return result


def add_row(to: Table, *cells: object) -> None:
    """Cells as plain text (no markup, control characters escaped), None as empty."""
    to.add_row(*(cell_text(c) for c in cells))


def cell_text(cell: object) -> Text:
    if isinstance(cell, Text):
        return Text(printable(cell.plain), style=cell.style)
    return Text("" if cell is None else printable(str(cell)))


def show(rendered: Table) -> None:
    stdout().print(rendered)


def parse_time(value: object) -> datetime | None:
    """An ISO time from the API, timezone-aware (the API speaks UTC)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def now() -> datetime:
    return datetime.now(UTC)


def clock_time(moment: datetime | None) -> str:
    """HH:MM in local time; with the date when it is not today."""
    if moment is None:
        return ""
    local = moment.astimezone()
    if local.date() == datetime.now().astimezone().date():
        return local.strftime("%H:%M")
    return local.strftime("%Y-%m-%d %H:%M")


def local_time(value: object) -> str:
    """An API time as YYYY-MM-DD HH:MM local time ('' for none)."""
    moment = parse_time(value)
    return "" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M")


def elapsed(seconds: float) -> str:
    """As squeue: M:SS, H:MM:SS, D-HH:MM:SS."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def number(value: float | None) -> str:
    """1,234.5 style: whole numbers without decimals."""
    if value is None:
        return ""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def part(value: str) -> str:
    """A name as one URL path segment ('/' and the like escaped)."""
    return quote(value, safe="")
