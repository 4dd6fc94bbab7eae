"""The control plane's records, in the Base -> Create/Update -> table -> Public ladder.

Tables hold what the pool knows; *Create/*Update say what a caller may send; *Public what a
caller gets back (response_model everywhere, so internal fields such as token hashes never
leak). Times are seconds since the epoch (the scheduling core counts in seconds); the Public
models turn them into ISO datetimes.
"""

from __future__ import annotations

import enum
import math
import re
import types
import typing
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    ConfigDict,
    GetJsonSchemaHandler,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic import Field as PydanticField
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema
from sqlalchemy import JSON, BigInteger, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from web.enums import (
    ACTIVE_JOB_STATES,
    FINAL_JOB_STATES,
    JobState,
    MemberRole,
    NodeStateName,
    ProjectState,
    Role,
)
from web.services.durations import MAX_DURATION_S

__all__ = [
    "ACTIVE_JOB_STATES",
    "FINAL_JOB_STATES",
    "JobState",
    "MemberRole",
    "NodeStateName",
    "ProjectState",
    "Role",
]

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
NAME_RULE = "1-63 characters: a-z, 0-9, '.', '_', '-', starting with a letter or digit"
MAX_ID = 2**31 - 1  # ids are 32-bit integers in the database
MAX_CREDITS = 1e12  # a project's budget, and any one grant or take-back


# End dates callers may give: 1970 to 2499. Times are stored as seconds since the epoch and
# read back through pydantic, which takes a number past 2e10 (a date after 2603) for
# milliseconds; a far-future end date would come back as one in the 1970s.
EARLIEST_END = datetime(1970, 1, 2, tzinfo=UTC)
LATEST_END = datetime(2500, 1, 1, tzinfo=UTC)


def _end_date_in_range(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not EARLIEST_END <= aware < LATEST_END:
        raise ValueError("must be a date from 1970-01-02 to 2499-12-31")
    return value


EndDate = Annotated[datetime | None, AfterValidator(_end_date_in_range)]


class Input(SQLModel):
    """What callers send (every *Create, *Update and the like). Refused with a 422 naming
    the field: numbers that are not finite (NaN, Infinity: JSON parsers take them, nothing
    downstream can use them), text that is not storable Unicode anywhere, runtime_env's
    included (NUL, which PostgreSQL cannot store, and lone UTF-16 surrogates such as
    "\\ud800", which JSON allows as escapes but no UTF-8 text can hold: stored, they made
    every list showing the row fail), true/false for a number (JSON's true is not 1), and
    null for the fields in `not_null` (null is allowed by the type only to mean "not given";
    leave such a field out to keep its value)."""

    # Merged into SQLModel's own config (a ConfigDict by another name).
    # Unknown fields are refused: a misspelled one ("gpu": 4) would otherwise be dropped
    # silently and the job made with the default.
    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")  # type: ignore[assignment]
    not_null: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="before")
    @classmethod
    def _plain(cls, value: Any, info: ValidationInfo) -> Any:
        # Before the type's own checks, whose words for these say less.
        if isinstance(value, str):
            problem = unstorable_text(value)
            if problem:
                raise ValueError(problem)
        elif isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            kinds = typing.get_args(annotation) or (annotation,)
            if bool not in kinds and (int in kinds or float in kinds):
                raise ValueError("must be a number, not true or false")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            if info.field_name in cls.not_null:
                raise ValueError("must not be null; leave it out to keep the current value")
        elif isinstance(value, dict | list):
            _check_nested(value)
        return value

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # The OpenAPI schema says what is taken: a field in `not_null` may be left out, not
        # sent as null (its type allows None only to mean "not given").
        schema = handler(core_schema)
        found = handler.resolve_ref_schema(schema)
        for name in cls.not_null:
            field = found.get("properties", {}).get(name, {})
            kinds = [kind for kind in field.get("anyOf", ()) if kind.get("type") != "null"]
            if kinds:
                del field["anyOf"]
                field.update(kinds[0] if len(kinds) == 1 else {"anyOf": kinds})
                if field.get("default", 0) is None:
                    del field["default"]
        return schema


def unstorable_text(text: str) -> str:
    """Why `text` cannot be stored and given back by every backend, or "" when it can:
    NUL (PostgreSQL refuses it) or a lone surrogate (no UTF-8 encoding holds one)."""
    if "\x00" in text:
        return "must not contain NUL characters (\\x00)"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            return (
                f"must be valid Unicode text: character {err.start + 1} is a lone surrogate "
                f"(U+{ord(text[err.start]):04X}), which no UTF-8 text can hold"
            )
    return ""


MAX_NESTING = 32  # arrays and objects within one another in a JSON field (Ray's runtime_env
# nests 3 or 4 deep); deeper ones cannot be given back by the pages and tools that read them


def _check_nested(value: dict[str, Any] | list[Any]) -> None:
    """Refuse unstorable text (in keys and strings), non-finite numbers and nesting past
    MAX_NESTING anywhere in a JSON value. Iterative: a body may nest deeper than Python
    recurses."""
    stack: list[tuple[str, int, Any]] = [("", 1, value)]
    while stack:
        where, depth, item = stack.pop()
        if isinstance(item, str):
            problem = unstorable_text(item)
            if problem:
                raise ValueError(f"{problem}; at {_brief(where)!r}")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError(f"numbers must be finite; {_brief(where)!r} is {item}")
        elif isinstance(item, dict | list) and depth > MAX_NESTING:
            raise ValueError(
                f"must nest at most {MAX_NESTING} arrays and objects deep; "
                f"{_brief(where)!r} is deeper"
            )
        elif isinstance(item, dict):
            for key, inner in item.items():
                path = f"{where}.{key}" if where else str(key)
                problem = unstorable_text(key) if isinstance(key, str) else ""
                if problem:
                    raise ValueError(f"{problem}; in the key {_brief(path)!r}")
                stack.append((path, depth + 1, inner))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", depth + 1, inner) for i, inner in enumerate(item))


def _brief(path: str) -> str:
    """A place in a JSON value, cut to what an error message can show."""
    return path if len(path) <= 120 else f"{path[:60]}...{path[-57:]}"


class Output(SQLModel):
    """What callers get back, made from stored rows (every *Public and *Page).

    A row stored before a rule got stricter must still be listed, not take the whole list
    down: a field whose stored value cannot be shown (a time past what a date can hold, a
    number where a date belongs, text holding a lone surrogate, which no UTF-8 answer can
    carry) comes back as a placeholder (its default, null, empty or zero; surrogates as
    U+FFFD) and is named in `unreadable` (left out of answers where nothing is)."""

    unreadable: list[str] = PydanticField(
        default_factory=list,
        description="fields whose stored value could not be shown; they hold a placeholder",
        exclude_if=lambda names: not names,  # only rows with such a field carry it
    )

    @model_validator(mode="wrap")
    @classmethod
    def _readable(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            made = handler(data)
        except ValidationError as err:
            bad = sorted(
                {str(e["loc"][0]) for e in err.errors() if e["loc"]} & cls.model_fields.keys()
            )
            if not bad:
                raise
            values = dict(data) if isinstance(data, dict) else _attributes(cls, data)
            values |= {name: _placeholder(cls, name) for name in bad}
            made = handler(values)
            made.unreadable = sorted(set(made.unreadable) | set(bad))
        if isinstance(made, Output):
            _replace_surrogates(made)
        return made


def _attributes(cls: type[SQLModel], row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in cls.model_fields if hasattr(row, name)}


def _placeholder(cls: type[SQLModel], name: str) -> Any:
    field = cls.model_fields[name]
    if not field.is_required():
        return field.get_default(call_default_factory=True)
    kind = field.annotation
    options = (
        typing.get_args(kind)
        if typing.get_origin(kind) in (typing.Union, types.UnionType)
        else (kind,)
    )
    if type(None) in options:
        return None
    kind = options[0]
    kind = typing.get_origin(kind) or kind
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return next(iter(kind))
    placeholders: dict[Any, Any] = {str: "", int: 0, float: 0.0, bool: False, list: [], dict: {}}
    if kind is datetime:
        return datetime(1970, 1, 1, tzinfo=UTC)
    return placeholders.get(kind)


_SURROGATE = re.compile("[\ud800-\udfff]")


def without_surrogates(text: str) -> str:
    """`text` with any lone surrogate replaced by U+FFFD: text that can be sent as UTF-8."""
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return _SURROGATE.sub("\ufffd", text)


def _replace_surrogates(made: Output) -> None:
    for name, value in made.__dict__.items():
        if isinstance(value, str):
            shown = without_surrogates(value)
            if shown is not value:
                setattr(made, name, shown)
                made.unreadable = sorted({*made.unreadable, name})
        elif isinstance(value, dict | list) and value:
            try:
                cleaned, changed = _without_surrogates(value)
            except RecursionError:  # nested deeper than a rule now allows
                cleaned, changed = type(value)(), True
            if changed:
                setattr(made, name, cleaned)
                made.unreadable = sorted({*made.unreadable, name})


def _without_surrogates(value: Any) -> tuple[Any, bool]:
    """`value` (JSON-like) with lone surrogates replaced by U+FFFD, and whether any was."""
    if isinstance(value, str):
        shown = without_surrogates(value)
        return shown, shown is not value
    if isinstance(value, dict):
        pairs = [(_without_surrogates(k), _without_surrogates(v)) for k, v in value.items()]
        if not any(k[1] or v[1] for k, v in pairs):
            return value, False
        return {k[0]: v[0] for k, v in pairs}, True
    if isinstance(value, list):
        items = [_without_surrogates(v) for v in value]
        if not any(changed for _, changed in items):
            return value, False
        return [v for v, _ in items], True
    return value, False


# --- users and tokens ----------------------------------------------------------------------


class User(SQLModel, table=True):
    __tablename__ = "users"
    name: str = Field(primary_key=True, max_length=63)
    full_name: str = Field(default="", max_length=200)
    email: str = Field(default="", max_length=200)
    role: str = Field(default=Role.RESEARCHER.value, max_length=16)
    active: bool = True
    created_at: float = 0.0
    # For signing in to the portal: scrypt (web/services/auth.py); None: no password set,
    # the user signs in with an API token.
    password_hash: str | None = Field(default=None, max_length=200)


class UserCreate(Input):
    name: Name
    full_name: str = Field(default="", max_length=200)
    email: str = Field(default="", max_length=200)
    role: Role = Role.RESEARCHER


class UserUpdate(Input):
    not_null: ClassVar[frozenset[str]] = frozenset({"full_name", "email", "role", "active"})
    full_name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=200)
    role: Role | None = None
    active: bool | None = None


class PasswordUpdate(Input):
    password: str = Field(min_length=10, max_length=200)
    # Required to change one's own password (once one is set): a stolen session or token
    # alone cannot take the account over. An administrator setting another's leaves it out.
    current_password: str | None = Field(default=None, max_length=200)


class UserPublic(Output):
    name: str
    full_name: str
    email: str
    role: Role
    active: bool
    created_at: datetime


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_tokens"
    id: int | None = Field(default=None, primary_key=True)
    user: str = Field(foreign_key="users.name", index=True, max_length=63)
    label: str = Field(default="", max_length=100)
    prefix: str = Field(max_length=16)  # the first characters, to tell tokens apart
    digest: str = Field(unique=True, max_length=64)  # sha256 of the secret; never the secret
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None


class PortalSessionRecord(SQLModel, table=True):
    """A signed-in portal session. The cookie carries its id, this row its digest: deleting
    the row (sign-out, a password change, deactivation, "sign out everywhere") ends the
    session at once, whoever holds a copy of the cookie."""

    __tablename__ = "portal_sessions"
    digest: str = Field(primary_key=True, max_length=64)  # sha256 of the id; never the id
    user: str = Field(foreign_key="users.name", index=True, max_length=63)
    token_id: int | None = None  # the API token signed in with (None: a password)
    created_at: float = 0.0
    expires_at: float = Field(default=0.0, index=True)


class TokenCreate(Input):
    label: str = Field(default="", max_length=100)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class TokenPublic(Output):
    id: int
    user: str
    label: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenPublic):
    token: str  # shown once, here; the pool keeps only its digest


# --- sectors, flavors, projects, quotas ----------------------------------------------------


class Sector(SQLModel, table=True):
    __tablename__ = "sectors"
    name: str = Field(primary_key=True, max_length=63)
    weight: float = Field(default=1.0, gt=0)


class SectorUpdate(Input):
    weight: float = Field(gt=0, le=1_000_000)


class SectorPublic(Output):
    name: str
    weight: float


class Flavor(SQLModel, table=True):
    __tablename__ = "flavors"
    name: str = Field(primary_key=True, max_length=63)
    credit_rate: float = Field(default=1.0, ge=0)  # credits per GPU-hour


class FlavorPublic(Output):
    name: str
    credit_rate: float
    nodes: int = 0
    gpus: int = 0


class Project(SQLModel, table=True):
    __tablename__ = "projects"
    name: str = Field(primary_key=True, max_length=63)
    title: str = Field(default="", max_length=300)
    sector: str = Field(foreign_key="sectors.name", max_length=63)
    state: str = Field(default=ProjectState.REQUESTED.value, max_length=16, index=True)
    pi: str = Field(foreign_key="users.name", max_length=63)
    justification: str = ""
    requested_gpus: int = 0
    requested_gpu_hours: float = 0.0
    # One budget in credits (GPU-hours weighted by each flavor's credit_rate, as Slurm's
    # GrpTRESMins with billing weights); None: no budget is enforced.
    credits: float | None = None  # granted, net of take-backs (the ledger's grants)
    credits_used: float = 0.0  # charged, net of refunds (the ledger's charges and refunds)
    credits_earned: float = 0.0  # lending rewards (the ledger's rewards)
    share: float | None = None  # weight within its sector; None: the sum of its guarantees
    default_max_runtime_s: float | None = None
    # Stop a job whose GPUs have all been idle this long (None: never; it is only flagged).
    idle_stop_after_s: float | None = None
    usage_gpu_s: float = 0.0  # decayed, for fair share, as of usage_at
    usage_at: float = 0.0
    created_at: float = 0.0
    expires_at: float | None = None
    decided_by: str | None = None
    decided_at: float | None = None
    decision_note: str = ""


class ProjectCreate(Input):
    """A project request, as in an allocation-management portal."""

    name: Name
    title: str = Field(min_length=1, max_length=300)
    sector: str = Field(min_length=1, max_length=63)
    pi: str | None = Field(default=None, max_length=63)  # default: whoever asks
    requested_gpus: int = Field(default=0, ge=0, le=1_000_000)
    requested_gpu_hours: float = Field(default=0.0, ge=0, le=1e9)
    justification: str = Field(default="", max_length=20_000)


class ProjectDecision(Input):
    note: str = Field(default="", max_length=5_000)
    expires_at: EndDate = None


class ProjectUpdate(Input):
    """Null resets share (to the sum of the guarantees), default_max_runtime_s (to the
    pool's) and expires_at (to never); a title cannot be null."""

    not_null: ClassVar[frozenset[str]] = frozenset({"title"})
    title: str | None = Field(default=None, min_length=1, max_length=300)
    share: float | None = Field(default=None, gt=0, le=1_000_000)
    default_max_runtime_s: float | None = Field(default=None, ge=1, le=MAX_DURATION_S)
    expires_at: EndDate = None
    idle_stop_after_s: float | None = Field(default=None, ge=60, le=MAX_DURATION_S)


class QuotaPublic(Output):
    flavor: str
    guaranteed: int
    limit: int
    credit_rate: float
    in_use: int = 0  # GPUs its jobs hold now


class ProjectPublic(Output):
    name: str
    title: str
    sector: str
    state: ProjectState
    pi: str
    justification: str
    requested_gpus: int
    requested_gpu_hours: float
    credits: float | None
    credits_used: float
    credits_earned: float = 0.0
    credits_left: float | None
    share: float | None
    default_max_runtime_s: float | None
    idle_stop_after_s: float | None = None
    created_at: datetime
    expires_at: datetime | None
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str
    members: list[MemberPublic] = []
    quotas: list[QuotaPublic] = []


class Membership(SQLModel, table=True):
    __tablename__ = "memberships"
    project: str = Field(foreign_key="projects.name", primary_key=True, max_length=63)
    user: str = Field(foreign_key="users.name", primary_key=True, max_length=63, index=True)
    role: str = Field(default=MemberRole.MEMBER.value, max_length=16)


class MemberCreate(Input):
    user: str = Field(min_length=1, max_length=63)
    role: MemberRole = MemberRole.MEMBER


class MemberPublic(Output):
    user: str
    role: MemberRole


class Quota(SQLModel, table=True):
    __tablename__ = "quotas"
    project: str = Field(foreign_key="projects.name", primary_key=True, max_length=63)
    flavor: str = Field(foreign_key="flavors.name", primary_key=True, max_length=63)
    guaranteed: int = 0
    limit: int = 0
    # Credits per GPU-hour for this project on this flavor; None: the flavor's rate.
    credit_rate: float | None = None


class QuotaUpdate(Input):
    guaranteed: int = Field(ge=0, le=10_000_000)
    limit: int = Field(ge=0, le=10_000_000)
    credit_rate: float | None = Field(default=None, ge=0, le=1_000_000)
    note: str = Field(default="", max_length=2_000)


class CreditChange(Input):
    """Grant (amount > 0) or take back (amount < 0) credits; or set the budget outright."""

    amount: float | None = Field(default=None, ge=-MAX_CREDITS, le=MAX_CREDITS)
    set_to: float | None = Field(default=None, ge=0, le=MAX_CREDITS)
    unlimited: bool = False
    note: str = Field(default="", max_length=2_000)


class Change(SQLModel, table=True):
    """Who changed what, when: quotas, credits, project states, memberships, roles."""

    __tablename__ = "changes"
    id: int | None = Field(default=None, primary_key=True)
    at: float
    actor: str = Field(max_length=63)
    subject: str = Field(max_length=200, index=True)  # project:NAME, user:NAME, node:NAME
    field: str = Field(max_length=100)
    old: str = ""
    new: str = ""
    note: str = ""


class ChangePublic(Output):
    id: int
    at: datetime
    actor: str
    subject: str
    field: str
    old: str
    new: str
    note: str


# --- nodes ---------------------------------------------------------------------------------


class Node(SQLModel, table=True):
    __tablename__ = "nodes"
    name: str = Field(primary_key=True, max_length=63)
    flavor: str = Field(foreign_key="flavors.name", max_length=63)
    gpus: int
    group: str = Field(default="", max_length=63)
    state: str = Field(default=NodeStateName.UP.value, max_length=16)
    state_reason: str = ""
    registered_at: float = 0.0
    last_heartbeat: float | None = None


class NodeCreate(Input):
    name: Name
    flavor: str = Field(min_length=1, max_length=63)
    gpus: int = Field(ge=1, le=64)
    group: str = Field(default="", max_length=63)


class NodeDrain(Input):
    reason: str = Field(default="", max_length=2_000)


class NodePublic(Output):
    name: str
    flavor: str
    gpus: int
    group: str
    state: NodeStateName
    state_reason: str
    registered_at: datetime
    last_heartbeat: datetime | None
    allocated: int = 0


# --- jobs ----------------------------------------------------------------------------------


class Job(SQLModel, table=True):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("user", "idempotency_key", "array_index", name="uq_jobs_idempotency"),
        Index("ix_jobs_state_project", "state", "project"),
        Index("ix_jobs_project_id", "project", "id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    project: str = Field(foreign_key="projects.name", max_length=63)
    user: str = Field(foreign_key="users.name", max_length=63, index=True)
    name: str = Field(default="", max_length=200)
    entrypoint: str
    runtime_env: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    gpus: int
    flavor: str = Field(max_length=63)  # as asked: a flavor, or "*" for any
    flavor_used: str | None = Field(default=None, max_length=63)  # where it was admitted
    nodes: int | None = None
    max_runtime_s: float
    priority: int = 0
    state: str = Field(default=JobState.QUEUED.value, max_length=16)
    attempt: int = 0  # attempts so far; the running one is this number
    reason_code: str = Field(default="", max_length=32)
    reason: str = ""
    est_start: float | None = None
    # The range of the start estimate, and how many of the jobs it waits on have no history
    # that says when they end (scheduler/core/forecast.py).
    est_start_earliest: float | None = None
    est_start_latest: float | None = None
    est_unbounded: int | None = None
    submitted_at: float = 0.0
    admitted_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    idempotency_key: str | None = Field(default=None, max_length=200)
    array_id: int | None = None
    array_index: int = 0
    borrowed: bool = False
    reserved_flavor: str | None = Field(default=None, max_length=63)  # backfill reservation
    preempted_for: int | None = None
    stopping_at: float | None = None  # preempted or cancelled: its GPUs are free then
    stop_reason: str | None = Field(default=None, max_length=16)  # preempted|cancelled|timeout
    cancel_requested_at: float | None = None
    outcome: str = ""  # how the last attempt ended, in words


class JobCreate(Input):
    """What a researcher submits. `count` > 1 submits an array of identical jobs."""

    project: str = Field(min_length=1, max_length=63)
    entrypoint: str = Field(min_length=1, max_length=20_000)
    gpus: int = Field(ge=1, le=100_000)
    flavor: str = Field(default="*", min_length=1, max_length=63)
    nodes: int | None = Field(default=None, ge=1, le=10_000)
    time: str | None = Field(default=None, max_length=32)  # "2h", "90m", "1-00:00:00", seconds
    priority: int = Field(default=0, ge=-1000, le=1000)
    name: str = Field(default="", max_length=200)
    runtime_env: dict[str, Any] = Field(default_factory=dict)
    count: int = Field(default=1, ge=1, le=1_000_000)  # and at most max_array_size
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank: the command the job runs")
        return value


class JobPublic(Output):
    id: int
    project: str
    user: str
    name: str
    entrypoint: str
    runtime_env: dict[str, Any]
    gpus: int
    flavor: str
    flavor_used: str | None
    nodes: int | None
    max_runtime_s: float
    priority: int
    state: JobState
    attempt: int
    reason_code: str
    reason: str
    est_start: datetime | None
    # How sure est_start is: likely between these two times ...
    est_start_earliest: datetime | None = None
    est_start_latest: datetime | None = None
    # ... "likely", or "rough" when the range is wide or it waits on jobs that have run past
    # everything their history knows; "" without an estimate. est_note says it in words.
    est_confidence: str = ""
    est_note: str = ""
    # How many of the jobs it waits on (running, or expected to start before it) have run
    # past what their history knows, or have none.
    est_unbounded: int | None = None
    submitted_at: datetime
    admitted_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    idempotency_key: str | None
    array_id: int | None
    array_index: int
    borrowed: bool
    outcome: str
    allocations: list[AllocationPublic] = []
    # Running jobs whose GPUs have all been idle since then (the node agents' figures).
    idle_since: datetime | None = None


class JobPage(Output):
    items: list[JobPublic]
    total: int
    limit: int
    offset: int


class Attempt(SQLModel, table=True):
    """One try at running a job: admission to its end."""

    __tablename__ = "attempts"
    job_id: int = Field(foreign_key="jobs.id", primary_key=True)
    number: int = Field(primary_key=True)
    flavor: str = Field(max_length=63)
    gpus: int
    borrowed: bool = False
    admitted_at: float
    started_at: float | None = None
    ended_at: float | None = None
    outcome: str = Field(default="", max_length=16)  # a final job state, or "preempted"
    message: str = ""


class Allocation(SQLModel, table=True):
    """GPUs of one node held by one job attempt. `end` is None while held."""

    __tablename__ = "allocations"
    __table_args__ = (Index("ix_allocations_open", "end", "node"),)
    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="jobs.id", index=True)
    attempt: int
    node: str = Field(foreign_key="nodes.name", max_length=63)
    flavor: str = Field(max_length=63)
    gpus: int
    start: float
    end: float | None = None
    borrowed: bool = False


class AllocationPublic(Output):
    attempt: int
    node: str
    gpus: int
    start: datetime
    end: datetime | None
    borrowed: bool


class Leadership(SQLModel, table=True):
    """The scheduling loop's fencing token: each new leader bumps `epoch`, and every write
    of a leader checks that the epoch is still its own, so a leader that lost its lock in
    the middle of a tick cannot record a stale plan over its successor's."""

    __tablename__ = "leadership"
    id: int = Field(default=1, primary_key=True)
    epoch: int = 0
    holder: str = Field(default="", max_length=200)
    since: float = 0.0


# --- node agents: tokens, telemetry, per-job usage ------------------------------------------


class NodeToken(SQLModel, table=True):
    """A node agent's credential: it may report for its node and do nothing else."""

    __tablename__ = "node_tokens"
    id: int | None = Field(default=None, primary_key=True)
    node: str = Field(foreign_key="nodes.name", index=True, max_length=63)
    label: str = Field(default="", max_length=100)
    prefix: str = Field(max_length=16)
    digest: str = Field(unique=True, max_length=64)  # sha256 of the secret
    created_at: float = 0.0
    created_by: str = Field(default="", max_length=63)
    revoked_at: float | None = None


class NodeTokenCreate(Input):
    label: str = Field(default="", max_length=100)


class NodeTokenPublic(Output):
    id: int
    node: str
    label: str
    prefix: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None


class NodeTokenCreated(NodeTokenPublic):
    token: str  # shown once, here


class GpuStatusPublic(Output):
    """A GPU as its node's agent last reported it (agents.schema.GpuSample, without the
    Xid events; `last_xid` is the latest one), and the job attempts its processes belong
    to (`jobs`: [job id, attempt] pairs)."""

    index: int
    uuid: str
    name: str = ""
    mig_parent_uuid: str | None = None
    util_gpu_pct: float | None = None
    util_mem_pct: float | None = None
    mem_used_bytes: int | None = None
    mem_total_bytes: int | None = None
    power_w: float | None = None
    energy_mj: int | None = None
    temp_c: float | None = None
    ecc_corrected: int | None = None
    ecc_uncorrected: int | None = None
    last_xid: int | None = None
    processes: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    jobs: list[tuple[int, int]] = []


class NodeGpusPublic(Output):
    node: str
    state: NodeStateName
    state_reason: str = ""
    reader: str = ""  # nvml, or simulated
    driver_version: str = ""
    at: datetime | None = None  # when the agent read the GPUs (its clock)
    received_at: datetime | None = None  # when the report came (the server's)
    gpus: list[GpuStatusPublic]


class NodeTelemetry(SQLModel, table=True):
    """The latest report of a node's agent (one row per node, replaced by each report):
    the heartbeat (`received_at`, by the server's clock), the resend guard (`boot`, `seq`)
    and each GPU's latest sample with the jobs its processes belong to (`gpus`, a list of
    agents.schema.GpuSample as dicts, each with "jobs": [[job_id, attempt], ...])."""

    __tablename__ = "node_telemetry"
    node: str = Field(foreign_key="nodes.name", primary_key=True, max_length=63)
    boot: str = Field(default="", max_length=64)
    seq: int = 0
    reports: int = 0  # reports taken from this node, all runs of its agent together
    reader: str = Field(default="", max_length=16)
    driver_version: str = Field(default="", max_length=200)
    at: float = 0.0  # the agent's clock: when the GPUs were read
    received_at: float = 0.0
    gpus: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))


class GpuMinute(SQLModel, table=True):
    """One GPU's telemetry over one minute (the history charts read), kept for
    GPUPOOL_TELEMETRY_HISTORY_DAYS. Sums and sample counts, so that minutes written in
    parts (a restart, two servers) add up."""

    __tablename__ = "gpu_minutes"
    __table_args__ = (Index("ix_gpu_minutes_node_minute", "node", "minute"),)
    uuid: str = Field(primary_key=True, max_length=96)
    minute: int = Field(primary_key=True, index=True)  # seconds since the epoch // 60
    node: str = Field(max_length=63)
    gpu_index: int = 0
    samples: int = 0
    util_gpu_samples: int = 0
    util_gpu_sum: float = 0.0
    util_mem_sum: float = 0.0
    power_w_sum: float = 0.0
    power_samples: int = 0
    mem_used_max: int | None = Field(default=None, sa_column=Column(BigInteger))
    temp_max: float | None = None


class GpuMinutePublic(Output):
    uuid: str
    node: str
    gpu_index: int
    minute: datetime
    util_gpu_pct: float | None
    util_mem_pct: float | None
    power_w: float | None
    mem_used_bytes: int | None
    temp_c: float | None


class JobUsage(SQLModel, table=True):
    """What the agents saw a job attempt use, from the GPUs its processes ran on: GPU-seconds
    (between consecutive samples; a GPU shared by k jobs gives each 1/k), GPU-seconds
    weighted by utilization, energy from the GPUs' energy-counter deltas (and the
    GPU-seconds those cover: a counter that went backwards covers none), the peak memory
    on any one of its GPUs."""

    __tablename__ = "job_usage"
    # The operators' idle allocations: the few attempts idle since before a time, found
    # without reading every attempt's usage (PostgreSQL scanned them all).
    __table_args__ = (Index("ix_job_usage_idle_since", "idle_since"),)
    job_id: int = Field(foreign_key="jobs.id", primary_key=True)
    attempt: int = Field(primary_key=True)
    gpu_s: float = 0.0
    busy_gpu_s: float = 0.0  # sum of utilization/100 x seconds
    util_gpu_s: float = 0.0  # the GPU-seconds whose utilization was known
    energy_j: float = 0.0
    energy_gpu_s: float = 0.0
    idle_gpu_s: float = 0.0  # GPU-seconds under the idle threshold (GPUPOOL_IDLE_UTIL_PCT)
    # Since when every GPU of the attempt the agents saw has been idle (None: busy now).
    idle_since: float | None = None
    peak_mem_bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    first_at: float = 0.0
    last_at: float = 0.0


class UtilizationMinute(SQLModel, table=True):
    """The pool's GPUs over one minute, per flavor and sector, for the operators' charts:
    `allocated` GPUs held by jobs (sampled by the scheduling loop), and what the node
    agents saw of them: GPU-seconds held (`gpu_s`), weighted by utilization
    (`busy_gpu_s`), and under the idle threshold (`idle_gpu_s`), added up by every report
    of that minute. The row of sector "" holds the flavor's `capacity` (GPUs on nodes that
    are up or draining)."""

    __tablename__ = "utilization_minutes"
    minute: int = Field(primary_key=True)  # seconds since the epoch // 60
    flavor: str = Field(primary_key=True, max_length=63)
    sector: str = Field(primary_key=True, max_length=63)
    capacity: int = 0
    allocated: int = 0
    gpu_s: float = 0.0
    busy_gpu_s: float = 0.0
    idle_gpu_s: float = 0.0


class JobUsagePublic(Output):
    job_id: int
    attempt: int
    gpu_s: float
    mean_util_pct: float | None  # over the GPU-seconds whose utilization was known
    energy_kwh: float
    energy_gpu_s: float
    peak_mem_bytes: int
    first_at: datetime | None
    last_at: datetime | None


# --- the ledger ------------------------------------------------------------------------------


class LedgerEntry(SQLModel, table=True):
    """One movement of credits, with the usage behind it; append-only and hash-chained
    (web/services/ledger.py): `hash` = sha256(prev_hash + the entry's canonical JSON).

    kind: grant (credits given, or taken back when negative), charge (an attempt's use in
    one period: negative), refund (given back for an attempt the pool cut short), reward
    (earned by a project whose guaranteed GPUs others borrowed)."""

    __tablename__ = "ledger"
    __table_args__ = (
        Index("ix_ledger_project_period", "project", "period"),
        Index("ix_ledger_job", "job_id", "attempt"),
    )
    id: int = Field(primary_key=True)  # its place in the chain, from 1
    at: float
    kind: str = Field(max_length=16)
    project: str = Field(max_length=63)
    amount: float  # credits: positive in, negative out
    period: str = Field(default="", max_length=7)  # YYYY-MM the usage fell in
    job_id: int | None = None
    attempt: int | None = None
    user: str = Field(default="", max_length=63)
    flavor: str = Field(default="", max_length=63)
    gpu_s: float = 0.0  # GPU-seconds allocated (charge), or lent (reward)
    borrowed: bool = False
    energy_j: float = 0.0
    util_gpu_s: float = 0.0  # the GPU-seconds whose utilization the agents saw
    busy_gpu_s: float = 0.0  # utilization/100 x seconds
    idle_gpu_s: float = 0.0  # GPU-seconds under the idle threshold
    outcome: str = Field(default="", max_length=32)
    actor: str = Field(default="", max_length=63)
    note: str = Field(default="", max_length=2_000)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64, unique=True)


class LedgerHead(SQLModel, table=True):
    """The chain's last entry: every append locks this one row first, so appends from
    several servers line up one after another."""

    __tablename__ = "ledger_head"
    id: int = Field(default=1, primary_key=True)
    last_id: int = 0
    last_hash: str = Field(default="0" * 64, max_length=64)


class LedgerEntryPublic(Output):
    id: int
    at: datetime
    kind: str
    project: str
    amount: float
    period: str
    job_id: int | None
    attempt: int | None
    user: str
    flavor: str
    gpu_s: float
    borrowed: bool
    energy_j: float
    util_gpu_s: float
    busy_gpu_s: float
    idle_gpu_s: float
    outcome: str
    actor: str
    note: str
    prev_hash: str
    hash: str


class SubmitResult(SQLModel):
    jobs: list[JobPublic]
    duplicate: bool = False  # the idempotency key was seen before: these are the first jobs


ProjectPublic.model_rebuild()
JobPublic.model_rebuild()
