"""`gpupool db ...`: the database itself. `db upgrade` runs the schema's migrations, what
`serve` does when it starts, so that operators can migrate once before rolling out several
replicas of a new version."""

from __future__ import annotations

import typer
from rich.console import Console

from web.cli.serve import (
    DatabaseOption,
    DataDirOption,
    check_database_url,
    database_errors,
    settings_from,
)
from web.cli.simulate import fail

# The database layer loads inside the command: every other command starts quickly.

app = typer.Typer(help="The pool's database: its schema.", no_args_is_help=True)


@app.command("upgrade")
def upgrade_command(data_dir: DataDirOption = None, database_url: DatabaseOption = None) -> None:
    """Bring the database's schema to this version's newest revision. Safe to run again;
    on PostgreSQL, runs that overlap (replicas starting) wait for each other."""
    from sqlalchemy.engine import make_url

    from web.db import make_engine, migrate

    settings = settings_from(data_dir=data_dir, database_url=database_url)
    check_database_url(settings)
    where = make_url(settings.sqlalchemy_url).render_as_string(hide_password=True)
    try:
        engine = make_engine(settings)
    except OSError as err:  # SQLite's directory or file cannot be made
        raise fail(f"{where}: {err.strerror or err}") from None
    try:
        with database_errors(settings):
            before, after = migrate(engine)
    finally:
        engine.dispose()
    console = Console(soft_wrap=True)
    if before == after:
        console.print(f"{where}: schema at revision {after} already (the newest)")
    else:
        console.print(f"{where}: schema upgraded from revision {before or '(none)'} to {after}")
