"""`gpupool user` and `gpupool token`: people, their roles, and their API tokens."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from web.cli.client import (
    TOKEN_ENV,
    JsonOption,
    ServerOption,
    TokenOption,
    add_row,
    connect,
    local_time,
    note,
    now,
    parse_time,
    part,
    print_json,
    say,
    show,
    table,
)
from web.enums import Role

user_app = typer.Typer(no_args_is_help=True, help="Users and their roles (administrators).")
token_app = typer.Typer(no_args_is_help=True, help="API tokens: create, list, revoke.")

UserArg = Annotated[str, typer.Argument(metavar="NAME", help="The user.")]


def user_rows(users: list[Any]) -> None:
    rows = table("NAME", "ROLE", "ACTIVE", "FULL NAME", "EMAIL", "CREATED")
    for u in users:
        add_row(
            rows,
            u["name"],
            u["role"],
            "yes" if u["active"] else "no",
            u["full_name"],
            u["email"],
            local_time(u["created_at"]),
        )
    show(rows)


@user_app.command("list")
def user_list(
    as_json: JsonOption = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Every user (administrators and operators)."""
    users: list[Any] = connect(server, token).get("/users")
    if as_json:
        print_json(users)
        return
    user_rows(users)


@user_app.command("show")
def user_show(
    name: UserArg,
    as_json: JsonOption = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """One user."""
    user = connect(server, token).get(f"/users/{part(name)}")
    if as_json:
        print_json(user)
        return
    user_rows([user])


@user_app.command("whoami")
def user_whoami(
    as_json: JsonOption = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Who the token is: name, role, projects; and which server and token are used."""
    client = connect(server, token)
    me = client.me()
    if as_json:
        print_json(me)
        return
    projects: list[Any] = client.get("/projects")
    mine = [
        f"{p['name']} ({m['role']})"
        for p in projects
        for m in p.get("members", [])
        if m["user"] == me["name"]
    ]
    full = f" ({me['full_name']})" if me.get("full_name") else ""
    say(f"{me['name']}{full}: {me['role']}" + ("" if me["active"] else ", deactivated"))
    say(f"projects: {', '.join(mine) or 'none'}")
    target = client.target
    say(f"server: {target.server} (from {target.server_source})")
    say(f"token: from {target.token_source}")


@user_app.command("create")
def user_create(
    name: UserArg,
    role: Annotated[Role, typer.Option(help="researcher, admin or operator.")],
    full_name: Annotated[str, typer.Option(help="Their full name.")] = "",
    email: Annotated[str, typer.Option(help="Their e-mail address.")] = "",
    as_json: JsonOption = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Create a user (administrators). Give them a token with `gpupool token create --user`."""
    body = {"name": name, "role": role.value, "full_name": full_name, "email": email}
    user = connect(server, token).post("/users", body)
    if as_json:
        print_json(user)
        return
    say(f"Created user {user['name']} ({user['role']})")
    note(f"(a token for them: gpupool token create --user {user['name']})")


def _update(name: str, change: dict[str, Any], server: str | None, token: str | None) -> Any:
    return connect(server, token).patch(f"/users/{part(name)}", change)


@user_app.command("set-role")
def user_set_role(
    name: UserArg,
    role: Annotated[Role, typer.Argument(help="researcher, admin or operator.")],
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Change a user's role (administrators)."""
    user = _update(name, {"role": role.value}, server, token)
    say(f"{user['name']} is now {user['role']}")


@user_app.command("deactivate")
def user_deactivate(
    name: UserArg,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Deactivate a user: their tokens stop working (administrators)."""
    user = _update(name, {"active": False}, server, token)
    say(f"{user['name']} is deactivated")


@user_app.command("activate")
def user_activate(
    name: UserArg,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Reactivate a deactivated user (administrators)."""
    user = _update(name, {"active": True}, server, token)
    say(f"{user['name']} is active")


@user_app.command("passwd")
def user_passwd(
    name: UserArg,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the new password from the first line of standard input and, for "
            "your own, the current one from the second.",
        ),
    ] = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Set a user's password for the web portal (administrators for anyone, everyone for
    themselves) and sign the user out of the portal everywhere. Asks for it twice unless
    --password-stdin; your own also needs your current one (if you have one yet)."""
    client = connect(server, token)
    own = client.get("/users/me")["name"] == name
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
        current = sys.stdin.readline().rstrip("\n") if own else ""
    else:
        current = ""
        if own:
            current = typer.prompt(
                "Current password (Enter if you have none yet)",
                hide_input=True,
                default="",
                show_default=False,
            )
        password = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
    body = {"password": password} | ({"current_password": current} if current else {})
    client.put(f"/users/{part(name)}/password", body)
    say(f"password set for {name}: sign in to the portal with it")


# --- tokens --------------------------------------------------------------------------------


@token_app.command("create")
def token_create(
    user: Annotated[
        str | None,
        typer.Option(show_default=False, help="For this user (administrators) (default: you)."),
    ] = None,
    label: Annotated[str, typer.Option(help="What it is for, to tell tokens apart.")] = "",
    expires_days: Annotated[
        int | None,
        typer.Option(min=1, show_default=False, help="Expires after N days (default: never)."),
    ] = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Make an API token. It is printed once, alone on stdout; the pool keeps only a digest."""
    client = connect(server, token)
    owner = user or client.me()["name"]
    body = {"label": label, "expires_in_days": expires_days}
    created = client.post(f"/users/{part(owner)}/tokens", body)
    if as_json:
        print_json(created)
    else:
        print(created["token"], flush=True)
    expires = local_time(created.get("expires_at"))
    note(
        f"token {created['id']} for {created['user']}"
        + (f" (expires {expires})" if expires else "")
        + ": shown only this once, keep it secret; use it with --token or "
        + f"{TOKEN_ENV}"
    )


@token_app.command("list")
def token_list(
    user: Annotated[
        str | None,
        typer.Option(show_default=False, help="This user's (administrators; default: yours)."),
    ] = None,
    as_json: JsonOption = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Your tokens (administrators: everyone's, or one user's with --user)."""
    tokens: list[Any] = connect(server, token).get("/tokens", {"owner": user})
    if as_json:
        print_json(tokens)
        return
    moment = now()
    rows = table("ID>", "USER", "LABEL", "PREFIX", "CREATED", "EXPIRES", "STATUS")
    for t in tokens:
        expires = parse_time(t.get("expires_at"))
        if t.get("revoked_at"):
            status = f"revoked {local_time(t['revoked_at'])}"
        elif expires is not None and expires <= moment:
            status = "expired"
        else:
            status = "active"
        add_row(
            rows,
            t["id"],
            t["user"],
            t["label"],
            t["prefix"] + "...",
            local_time(t["created_at"]),
            local_time(t.get("expires_at")) or "never",
            status,
        )
    show(rows)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(metavar="ID", help="The token's id (token list).")],
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Revoke a token: it stops working at once."""
    revoked = connect(server, token).delete(f"/tokens/{token_id}")
    say(f"Revoked token {revoked['id']} of {revoked['user']} ({revoked['prefix']}...)")
