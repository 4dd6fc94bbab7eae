"""Builders for the control plane's tests: a small seeded pool behind the HTTP API.

`api` is function-scoped (a fresh database per test, over the shared `engine` fixture);
`module_api` is the same pool with one fresh database per test module (and per backend), for
tests that keep out of each other's way by using names of their own (see `unique`).
Both are parametrized over SQLite and PostgreSQL through the database fixtures.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlmodel import select

from tests.conftest import (
    CLOCK_START,
    PG_SKIP_REASON,
    PG_URL_VARIABLE,
    ManualClock,
    _fresh_pg_database,
)
from web.api.app import create_app
from web.db import make_engine, migrate, read_session, write_session
from web.models import (
    Job,
    MemberRole,
    Membership,
    Node,
    Project,
    ProjectState,
    Quota,
    Role,
    TokenCreated,
    User,
)
from web.pool import Pool, build_pool
from web.services.auth import Principal, issue_token
from web.services.seed import seed_pool
from web.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

START = CLOCK_START  # the pool's clock starts here

POOL_TOML = """
[simulation]
default_max_runtime_s = 3600

[[flavors]]
name = "H100"
credit_rate = 2.0

[[flavors]]
name = "A100"
credit_rate = 1.0

[[node_groups]]
flavor = "H100"
count = 2
gpus = 8
prefix = "h"

[[node_groups]]
flavor = "A100"
count = 2
gpus = 4
prefix = "a"

[[sectors]]
name = "academia"
weight = 1.5

[[sectors]]
name = "industry"
weight = 1.0

[[projects]]
name = "p1"
sector = "academia"
credits = 1000
quotas = { H100 = { guaranteed = 8, limit = 16 }, A100 = { guaranteed = 4, limit = 8 } }

[[projects]]
name = "p2"
sector = "industry"
quotas = { H100 = { guaranteed = 8, limit = 16 } }

[[projects]]
name = "p3"
sector = "academia"
quotas = { A100 = { guaranteed = 4, limit = 8 } }

[[users]]
name = "admin"
role = "admin"

[[users]]
name = "ops"
role = "operator"

[[users]]
name = "alice"
role = "researcher"
projects = { p1 = "pi" }

[[users]]
name = "bob"
role = "researcher"
projects = { p1 = "member" }

[[users]]
name = "dave"
role = "researcher"
projects = { p1 = "member" }

[[users]]
name = "carol"
role = "researcher"
projects = { p2 = "pi" }

[[users]]
name = "erin"
role = "researcher"
projects = { p3 = "pi" }
"""

USERS = ("admin", "ops", "alice", "bob", "dave", "carol", "erin")
ANONYMOUS = None  # as a `user`: send no Authorization header
BAD_TOKEN = "gpp_this-token-was-never-issued-by-this-pool-000000000"

_names = itertools.count(1)


def unique(prefix: str) -> str:
    """A name no other test uses (tests sharing `module_api` keep apart by these)."""
    return f"{prefix}-{next(_names)}"


@dataclass
class Api:
    """A seeded pool behind a TestClient; requests go as one of its users."""

    client: TestClient
    pool: Pool
    clock: ManualClock
    tokens: dict[str, str] = field(default_factory=dict)  # user -> secret

    @property
    def engine(self) -> Engine:
        return self.pool.engine

    def headers(self, user: str | None) -> dict[str, str]:
        """As `user`; None sends no token, "<bad>" one the pool never issued."""
        if user is None:
            return {}
        token = BAD_TOKEN if user == "<bad>" else self.tokens[user]
        return {"Authorization": f"Bearer {token}"}

    def request(self, user: str | None, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = self.headers(user) | kwargs.pop("headers", {})
        response: httpx.Response = self.client.request(
            method, "/api/v1" + path, headers=headers, **kwargs
        )
        return response

    def get(self, user: str | None, path: str, **kwargs: Any) -> httpx.Response:
        return self.request(user, "GET", path, **kwargs)

    def post(self, user: str | None, path: str, **kwargs: Any) -> httpx.Response:
        return self.request(user, "POST", path, **kwargs)

    def put(self, user: str | None, path: str, **kwargs: Any) -> httpx.Response:
        return self.request(user, "PUT", path, **kwargs)

    def patch(self, user: str | None, path: str, **kwargs: Any) -> httpx.Response:
        return self.request(user, "PATCH", path, **kwargs)

    def delete(self, user: str | None, path: str, **kwargs: Any) -> httpx.Response:
        return self.request(user, "DELETE", path, **kwargs)

    # --- builders (straight to the database, where the API is not what is tested) ---------

    def changed(self) -> None:
        """Tell the pool its rows changed behind its back (it caches callers and projects)."""
        self.pool.identities_changed()
        self.pool.pool_changed()

    def submit(self, user: str, project: str = "p1", **spec: Any) -> dict[str, Any]:
        """Submit one job through the API; its public record."""
        body = {"project": project, "entrypoint": "python train.py", "gpus": 1} | spec
        response = self.post(user, "/jobs", json=body)
        assert response.status_code == 201, response.text
        jobs: list[dict[str, Any]] = response.json()["jobs"]
        return jobs[0]

    def add_user(
        self, name: str, role: Role = Role.RESEARCHER, member_of: tuple[str, ...] = ()
    ) -> str:
        """A user with a token of its own (and memberships); the user's name."""
        with write_session(self.engine) as session:
            session.add(User(name=name, role=role.value, created_at=self.clock.now()))
            session.flush()
            for project in member_of:
                session.add(Membership(project=project, user=name, role=MemberRole.MEMBER.value))
            self.tokens[name] = _token_for(session, name, self.clock.now())
        self.changed()
        return name

    def issue(
        self, user: str, expires_in_days: int | None = None, at: float | None = None
    ) -> TokenCreated:
        """A new token for `user`, issued at `at` (default: now)."""
        with write_session(self.engine) as session:
            admin = Principal("seed", Role.ADMIN)
            now = self.clock.now() if at is None else at
            return issue_token(session, admin, user, now, "tests", expires_in_days)

    def add_project(
        self,
        name: str,
        *,
        pi: str = "alice",
        members: tuple[str, ...] = (),
        state: ProjectState = ProjectState.ACTIVE,
        quotas: dict[str, tuple[int, int]] | None = None,
        credits: float | None = None,
        sector: str = "academia",
    ) -> str:
        """A project in any state, with its PI, members and quotas; the project's name."""
        quotas = {"H100": (8, 16), "A100": (4, 8)} if quotas is None else quotas
        with write_session(self.engine) as session:
            session.add(
                Project(
                    name=name,
                    title=name,
                    sector=sector,
                    state=state.value,
                    pi=pi,
                    credits=credits,
                    created_at=self.clock.now(),
                )
            )
            session.flush()
            session.add(Membership(project=name, user=pi, role=MemberRole.PI.value))
            for member in members:
                session.add(Membership(project=name, user=member, role=MemberRole.MEMBER.value))
            for flavor, (guaranteed, limit) in quotas.items():
                session.add(Quota(project=name, flavor=flavor, guaranteed=guaranteed, limit=limit))
        self.changed()
        return name

    def add_node(self, name: str, flavor: str = "H100", gpus: int = 8, state: str = "up") -> str:
        with write_session(self.engine) as session:
            session.add(Node(name=name, flavor=flavor, gpus=gpus, state=state, registered_at=START))
        return name

    def set_job(self, job_id: int, **values: Any) -> None:
        """Change a job's row as the scheduling loop would (e.g. state="running")."""
        with write_session(self.engine) as session:
            job = session.get(Job, job_id)
            assert job is not None
            for key, value in values.items():
                setattr(job, key, value)
            session.add(job)
        self.changed()

    def job_row(self, job_id: int) -> Job:
        """The job's row as stored (a copy, detached from any session)."""
        with read_session(self.engine) as session:
            job = session.get(Job, job_id)
            assert job is not None
            return Job.model_validate(job.model_dump())

    def count(self, table: type[Any]) -> int:
        with read_session(self.engine) as session:
            return int(session.exec(select(func.count()).select_from(table)).one())


def _token_for(session: Any, user: str, now: float) -> str:
    admin = Principal("seed", Role.ADMIN)
    return issue_token(session, admin, user, now, label="tests").token


def pool_settings(base: Settings) -> Settings:
    """The test pool's settings: a small array limit, the default body limit."""
    return base.model_copy(update={"max_array_size": 50})


def open_api(settings: Settings, engine: Engine, toml: Path) -> Iterator[Api]:
    """Seed the pool from `toml`, give every user a token, serve the API over it."""
    clock = ManualClock()
    pool = build_pool(pool_settings(settings), dispatcher=None, clock=clock, engine=engine)
    tokens = {}
    with write_session(engine) as session:
        seed_pool(session, toml, clock.now())
        session.flush()
        for user in USERS:
            tokens[user] = _token_for(session, user, clock.now())
    # Server errors come back as 500 answers, as a real client would see them.
    with TestClient(create_app(pool), raise_server_exceptions=False) as client:
        yield Api(client, pool, clock, tokens)


@pytest.fixture
def pool_toml(tmp_path: Path) -> Path:
    path = tmp_path / "pool.toml"
    path.write_text(POOL_TOML)
    return path


@pytest.fixture
def api(settings: Settings, engine: Engine, pool_toml: Path) -> Iterator[Api]:
    """A fresh seeded pool for this test alone."""
    yield from open_api(settings, engine, pool_toml)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """Settings for a database of this module's own (a SQLite file, or a fresh PostgreSQL
    database dropped after the module), as `settings` is for one test."""
    tmp = tmp_path_factory.mktemp("pool")
    if request.param == "sqlite":
        yield Settings(data_dir=tmp / "data")
        return
    server_url = os.environ.get(PG_URL_VARIABLE, "")
    if not server_url:
        pytest.skip(PG_SKIP_REASON)
    yield from (
        Settings(data_dir=tmp / "data", database_url=url) for url in _fresh_pg_database(server_url)
    )


@pytest.fixture(scope="module")
def module_engine(module_settings: Settings) -> Iterator[Engine]:
    """`engine`, migrated once for the whole module."""
    engine = make_engine(module_settings)
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def module_api(
    module_settings: Settings, module_engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    """A seeded pool shared by the tests of one module (tests keep apart by `unique` names)."""
    toml = tmp_path_factory.mktemp("toml") / "pool.toml"
    toml.write_text(POOL_TOML)
    yield from open_api(module_settings, module_engine, toml)


def assert_refusal(response: httpx.Response, status: int, field: str, *says: str) -> str:
    """A refusal with this status whose message names `field` and says each of `says`;
    the message."""
    assert response.status_code == status, response.text
    body = response.json()
    detail: str = body["detail"]
    fields = {body.get("field")} | {e["field"] for e in body.get("errors", [])}
    assert field in fields, body
    assert f"{field}: " in detail, detail  # the message itself names the field
    for words in says:
        assert words in detail, detail
    return detail


@contextmanager
def served_in_thread(pool: Pool, port: int, name: str) -> Iterator[str]:
    """The pool's app served by uvicorn in a thread of this process on `port` (its address)
    until the block ends: a real server for clients that speak HTTP (a browser, a fuzzer)."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(pool),
            host="127.0.0.1",
            port=port,
            access_log=False,
            log_level="warning",
            lifespan="on",
        )
    )
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the {name} did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
