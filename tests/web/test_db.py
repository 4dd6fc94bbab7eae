"""The schema: what the migrations build, on SQLite and on PostgreSQL (the `engine` fixture)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, select
from sqlmodel import Session, SQLModel

import web.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from web.db import MIGRATIONS, migrate
from web.models import User


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def test_migrate_creates_every_table_and_stamps_head(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert set(SQLModel.metadata.tables) <= tables
    assert "alembic_version" in tables
    assert head_revision() is not None
    assert current_revision(engine) == head_revision()


def test_migrate_twice_is_harmless(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(User(name="ada", full_name="Ada Lovelace"))
        session.commit()
    tables = set(inspect(engine).get_table_names())

    migrate(engine)

    assert set(inspect(engine).get_table_names()) == tables
    assert current_revision(engine) == head_revision()
    with Session(engine) as session:
        assert session.get(User, "ada") is not None


def test_migrations_build_the_schema_the_models_declare(engine: Engine) -> None:
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    # A difference means a model changed without a migration (or the other way round).
    assert differences == [], "\n".join(map(repr, differences))


def test_sql_in_text_is_stored_as_text(engine: Engine) -> None:
    text = "'); DROP TABLE jobs; --"
    with Session(engine) as session:
        session.add(User(name="bobby", full_name=text))
        session.commit()
    with Session(engine) as session:
        assert session.exec(select(User.full_name).where(User.name == "bobby")).one() == (text,)
        assert session.get(User, "bobby") is not None
    assert "jobs" in inspect(engine).get_table_names()
