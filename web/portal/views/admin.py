"""Administrators' pages: project requests and decisions, quotas and credits with their
history, sectors, users, roles and tokens.

For administrators only: every route depends on `Admin`, which refuses anyone else with
the portal's 403 page before a posted form is even read. Each page calls the services the
API's routers call (web/api/routes/projects.py, accounts.py), in one session in the thread
pool, turning rows into *Public models there, and reads one page of rows or aggregates.
A form that is refused comes back in place with its errors and what was typed (400); one
that is taken redirects (303) with a message. A refusal is raised inside the write session
(as Refused), so nothing a service did before refusing is kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Path, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.responses import Response

from web.api.deps import IdPath, refuse_nul
from web.db import read_session, write_session
from web.models import (
    EARLIEST_END,
    LATEST_END,
    MAX_ID,
    NAME_PATTERN,
    ChangePublic,
    CreditChange,
    FlavorPublic,
    MemberCreate,
    MemberRole,
    ProjectDecision,
    ProjectPublic,
    ProjectState,
    ProjectUpdate,
    QuotaUpdate,
    Role,
    SectorUpdate,
    TokenCreated,
    TokenPublic,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from web.portal.deps import Page, SignedIn
from web.portal.forms import FORM, Form, blank_to_none, read_form
from web.portal.i18n import Formats
from web.portal.views.account import issue_token_spec, password_error
from web.portal.words import N_
from web.services import auth, nodes, projects, users
from web.services.changes import history, recent_changes
from web.services.durations import format_duration, parse_duration
from web.services.errors import Conflict, NotFound, ServiceError

router = APIRouter(prefix="/admin", dependencies=[Depends(refuse_nul)])

PAGE_SIZE = 50
HISTORY = 200  # the latest changes on a project's or a user's page
RECENT = 10  # on the overview
WAITING = (ProjectState.REQUESTED, ProjectState.APPROVED)
ACTIONS = {
    "approve": N_("Approve"),
    "activate": N_("Activate"),
    "deny": N_("Deny"),
    "close": N_("Close"),
}
CHANGE_KINDS = {
    "project": N_("Projects"),
    "user": N_("Users"),
    "sector": N_("Sectors"),
    "node": N_("Nodes"),
}
NAME = re.compile(NAME_PATTERN)
UPDATE_FIELDS = ("title", "share", "default_max_runtime_s", "expires_at")
QUOTA_FIELDS = ("guaranteed", "limit", "credit_rate")


async def get_admin(page: SignedIn) -> Page:
    page.who.require(Role.ADMIN)
    return page


Admin = Annotated[Page, Depends(get_admin)]
ProjectName = Annotated[str, Path(min_length=1, max_length=63)]
UserName = Annotated[str, Path(min_length=1, max_length=63)]
FlavorName = Annotated[str, Path(min_length=1, max_length=63)]
Offset = Annotated[int, Query(ge=0, le=MAX_ID)]


class Refused(Exception):
    """A service's or an input model's refusal, raised out of a write session so that it
    rolls back, and shown on the form."""

    def __init__(self, error: ServiceError | ValidationError) -> None:
        super().__init__(str(error))
        self.error = error


@contextmanager
def refusals() -> Iterator[None]:
    try:
        yield
    except (ServiceError, ValidationError) as err:
        raise Refused(err) from err


def formats(page: Page) -> Formats:
    return Formats(page.language, page.pool.settings.timezone)


def date_text(page: Page, moment: float | datetime | None) -> str:
    """A moment as the date (YYYY-MM-DD) it falls on in the pool's time zone; "" for none."""
    if moment is None:
        return ""
    zone = ZoneInfo(page.pool.settings.timezone)
    if isinstance(moment, datetime):
        return moment.astimezone(zone).date().isoformat()
    return datetime.fromtimestamp(moment, zone).date().isoformat()


def date_field(page: Page, form: Form, name: str) -> datetime | None:
    """A date field (YYYY-MM-DD) as 00:00 that day in the pool's time zone; None if blank
    or not a date (then an error on the field)."""
    text = form.get(name).strip()
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        form.error(name, page.gettext("Must be a date (YYYY-MM-DD)."))
        return None
    moment = datetime.combine(day, time(), tzinfo=ZoneInfo(page.pool.settings.timezone))
    if not EARLIEST_END <= moment < LATEST_END:
        form.error(name, page.gettext("Must be a date from 1970-01-02 to 2499-12-31."))
        return None
    return moment


def refused_form(page: Page, form: Form, err: Refused, rename: Mapping[str, str] = {}) -> None:
    form.refuse(err.error, page.gettext, rename)


# --- the overview --------------------------------------------------------------------------


@dataclass
class Overview:
    by_state: dict[str, int]
    users_by_role: dict[str, int]
    sectors: int
    changes: list[ChangePublic]

    @property
    def waiting(self) -> int:
        return sum(self.by_state.get(s.value, 0) for s in WAITING)


@router.get("")
async def overview(page: Admin) -> Response:
    view = await run_in_threadpool(_overview, page)
    return page.render("admin_overview.html", view=view, states=list(ProjectState))


def _overview(page: Page) -> Overview:
    with read_session(page.pool.engine) as session:
        changes, _total = recent_changes(session, limit=RECENT)
        return Overview(
            projects.projects_by_state(session),
            users.users_by_role(session, page.who),
            len(projects.list_sectors(session)),
            [ChangePublic.model_validate(c.model_dump()) for c in changes],
        )


# --- project requests and the list of projects ---------------------------------------------


@dataclass
class ProjectList:
    items: list[ProjectPublic]
    total: int
    sectors: list[str] = field(default_factory=list)


@router.get("/requests")
async def requests_page(page: Admin, offset: Offset = 0) -> Response:
    """Requests waiting for a decision (requested), and approved projects not active yet;
    the oldest first."""
    found = await run_in_threadpool(_requests, page, offset)
    return page.render("admin_requests.html", found=found, limit=PAGE_SIZE, offset=offset)


def _requests(page: Page, offset: int) -> ProjectList:
    with read_session(page.pool.engine) as session:
        rows, total = projects.page_projects(
            session, page.who, WAITING, limit=PAGE_SIZE, offset=offset, oldest_first=True
        )
        return ProjectList(projects.public_projects(session, rows), total)


@router.get("/projects")
async def projects_page(
    page: Admin,
    state: Annotated[str, Query(max_length=100)] = "",
    sector: Annotated[str, Query(max_length=100)] = "",
    q: Annotated[str, Query(max_length=100)] = "",
    offset: Offset = 0,
) -> Response:
    """Every project by name, 50 a page, filtered by state, sector and a piece of the name
    or title; a filter that names nothing known is an error on its field."""
    _ = page.gettext
    form = Form(values={"state": state, "sector": sector, "q": q})
    found = await run_in_threadpool(_projects, page, form, offset)
    params = {k: v for k, v in form.values.items() if v and k not in form.errors}
    every = ("", _("All"))
    options = {
        "state": [every, *((s.value, _(s.value)) for s in ProjectState)],
        "sector": [every, *((s, _(s)) for s in found.sectors)],
    }
    return page.render(
        "admin_projects.html",
        status_code=200 if form.ok else 400,
        form=form,
        found=found,
        options=options,
        params=params,
        limit=PAGE_SIZE,
        offset=offset,
    )


def _projects(page: Page, form: Form, offset: int) -> ProjectList:
    _ = page.gettext
    with read_session(page.pool.engine) as session:
        sectors = [s.name for s in projects.list_sectors(session)]
        state, sector = form.get("state"), form.get("sector")
        if state and state not in {s.value for s in ProjectState}:
            form.error("state", _("No such state."))
        if sector and sector not in sectors:
            form.error("sector", _("No such sector."))
        rows, total = projects.page_projects(
            session,
            page.who,
            [ProjectState(state)] if state and "state" not in form.errors else (),
            sector=sector if sector and "sector" not in form.errors else None,
            contains=form.get("q").strip() or None,
            limit=PAGE_SIZE,
            offset=offset,
        )
        return ProjectList(projects.public_projects(session, rows), total, sectors)


# --- one project: decisions, changes, quotas, credits, members, history --------------------


@dataclass
class ProjectAdmin:
    project: ProjectPublic
    own_rates: dict[str, float | None]
    flavors: list[FlavorPublic]
    changes: list[ChangePublic]
    actions: list[str]  # the decisions its state allows

    @property
    def new_flavor_options(self) -> list[tuple[str, str]]:
        """Flavors it has no quota for yet, as a select's options."""
        have = {q.flavor for q in self.project.quotas}
        return [(f.name, f.name) for f in self.flavors if f.name not in have]

    @property
    def flavor_rates(self) -> dict[str, float]:
        return {f.name: f.credit_rate for f in self.flavors}


@router.get("/projects/{name}")
async def project_page(page: Admin, name: ProjectName) -> Response:
    return await _project_page(page, name)


async def _project_page(
    page: Page, name: str, posted: Mapping[str, Form] = {}, status_code: int = 200
) -> Response:
    view = await run_in_threadpool(_project_admin, page, name)
    forms = _project_forms(page, view) | dict(posted)
    return page.render(
        "admin_project.html",
        status_code=status_code,
        view=view,
        project=view.project,
        forms=forms,
        actions=ACTIONS,
        roles=[(r.value, page.gettext(r.value)) for r in MemberRole],
        zone=page.pool.settings.timezone,
    )


def _project_admin(page: Page, name: str) -> ProjectAdmin:
    with read_session(page.pool.engine) as session:
        project = projects.project_public(session, projects.get_project(session, page.who, name))
        state = project.state
        return ProjectAdmin(
            project,
            projects.own_credit_rates(session, name),
            nodes.list_flavors(session),
            [
                ChangePublic.model_validate(c.model_dump())
                for c in history(session, f"project:{name}", limit=HISTORY)
            ],
            [a for a, (sources, _to) in projects.TRANSITIONS.items() if state in sources],
        )


def update_values(page: Page, project: ProjectPublic | Any) -> dict[str, str]:
    """The project-change form's fields as shown for the project as it is (a row or its
    public model): a field sent back as shown is left as it is."""
    share = project.share
    runtime = project.default_max_runtime_s
    return {
        "title": project.title,
        "share": "" if share is None else f"{share:g}",
        "default_max_runtime_s": "" if runtime is None else format_duration(runtime),
        "expires_at": date_text(page, project.expires_at),
    }


def _rate_text(rate: float | None) -> str:
    return "" if rate is None else f"{rate:g}"


def _project_forms(page: Page, view: ProjectAdmin) -> dict[str, Form]:
    forms = {
        "decide": Form(),
        "update": Form(values=update_values(page, view.project)),
        "quota-new": Form(),
        "credits": Form(),
        "member": Form(values={"role": MemberRole.MEMBER.value}),
        "member-remove": Form(),
    }
    for q in view.project.quotas:
        forms[f"quota-{q.flavor}"] = Form(
            values={
                "guaranteed": str(q.guaranteed),
                "limit": str(q.limit),
                "credit_rate": _rate_text(view.own_rates.get(q.flavor)),
            }
        )
    return forms


def _done(page: Page, name: str, message: str) -> Response:
    page.session.say("ok", message)
    return page.redirect(f"/admin/projects/{name}")


@router.post("/projects/{name}/decide")
async def decide(page: Admin, name: ProjectName) -> Response:
    """approve | activate | deny | close, with a note and an optional end date (as the
    API's POST /projects/{name}/{action})."""
    _ = page.gettext
    form = await read_form(page.request, page.session.csrf, _)
    action = form.get("action")
    if form.ok and action not in ACTIONS:
        form.error(FORM, _("Choose one of the decisions."))
    expires_at = date_field(page, form, "expires_at")
    decision = None
    if form.ok:
        try:
            decision = ProjectDecision.model_validate(
                {"note": form.get("note").strip(), "expires_at": expires_at}
            )
        except ValidationError as err:
            form.refuse(err, _)
    if decision is not None and form.ok:
        try:
            state = await run_in_threadpool(_decide, page, name, action, decision)
        except Refused as err:
            refused_form(page, form, err)
        else:
            page.pool.pool_changed()
            return _done(
                page, name, _("Project %(name)s is %(state)s.") % {"name": name, "state": _(state)}
            )
    return await _project_page(page, name, {"decide": form}, 400)


def _decide(page: Page, name: str, action: str, decision: ProjectDecision) -> str:
    with write_session(page.pool.engine) as session:
        projects.get_project(session, page.who, name)
        with refusals():
            project = projects.decide(
                session, page.who, name, action, page.now, decision.note, decision.expires_at
            )
        return project.state


@router.post("/projects/{name}/update")
async def update_project(page: Admin, name: ProjectName) -> Response:
    """The request modified: title, share, default time limit, end date (ProjectUpdate).
    Only the fields changed from what the form showed are sent; a blank share, time limit
    or end date means none."""
    _ = page.gettext
    form = await read_form(page.request, page.session.csrf, _)
    data: dict[str, Any] = {}
    if form.ok:
        data["title"] = form.get("title").strip()
        data["share"] = form.get("share").strip() or None
        runtime = form.get("default_max_runtime_s").strip()
        data["default_max_runtime_s"] = None
        if runtime:
            try:
                data["default_max_runtime_s"] = parse_duration(runtime, "default_max_runtime_s")
            except ServiceError as err:
                form.refuse(err, _)
        data["expires_at"] = date_field(page, form, "expires_at")
    if form.ok:
        typed = {k: form.get(k).strip() for k in UPDATE_FIELDS}
        try:
            changed = await run_in_threadpool(_update, page, name, data, typed)
        except Refused as err:
            refused_form(page, form, err)
        else:
            page.pool.pool_changed()
            if not changed:
                return _done(page, name, _("Nothing was changed."))
            return _done(page, name, _("Project %(name)s is changed.") % {"name": name})
    return await _project_page(page, name, {"update": form}, 400)


def _update(page: Page, name: str, data: dict[str, Any], typed: dict[str, str]) -> list[str]:
    with write_session(page.pool.engine) as session:
        project = projects.get_project(session, page.who, name)
        shown = update_values(page, project)
        change = {k: v for k, v in data.items() if typed[k] != shown[k]}
        with refusals():
            spec = ProjectUpdate.model_validate(change)
            projects.update_project(session, page.who, name, spec, page.now)
        return list(change)


@router.post("/projects/{name}/quotas")
async def add_quota(page: Admin, name: ProjectName) -> Response:
    """A quota for a flavor the project has none of yet (the flavor chosen in the form)."""
    return await _set_quota(page, name, None)


@router.post("/projects/{name}/quotas/{flavor}")
async def set_quota(page: Admin, name: ProjectName, flavor: FlavorName) -> Response:
    return await _set_quota(page, name, flavor)


async def _set_quota(page: Page, name: str, flavor: str | None) -> Response:
    """guaranteed, limit, an optional credit rate of its own, a note (QuotaUpdate, as the
    API's PUT /projects/{name}/quotas/{flavor})."""
    _ = page.gettext
    form = await read_form(page.request, page.session.csrf, _)
    key = f"quota-{flavor}" if flavor is not None else "quota-new"
    chosen = flavor if flavor is not None else form.get("flavor").strip()
    if form.ok and not chosen:
        form.error("flavor", _("Choose a flavor."))
    spec = None
    if form.ok:
        data = blank_to_none(form.values, QUOTA_FIELDS) | {"note": form.get("note").strip()}
        try:
            spec = QuotaUpdate.model_validate(data)
        except ValidationError as err:
            form.refuse(err, _)
    if spec is not None and form.ok:
        try:
            await run_in_threadpool(_quota, page, name, chosen, spec, flavor is None)
        except Refused as err:
            refused_form(page, form, err)
        else:
            page.pool.pool_changed()
            said = _("%(name)s on %(flavor)s: %(guaranteed)s GPUs guaranteed, %(limit)s at most.")
            return _done(
                page,
                name,
                said
                % {
                    "flavor": chosen,
                    "name": name,
                    "guaranteed": spec.guaranteed,
                    "limit": spec.limit,
                },
            )
    if flavor is not None and not await run_in_threadpool(_has_quota, page, name, flavor):
        key = "quota-new"  # no such quota on the page: said on the form that adds one
        form.values["flavor"] = flavor
    return await _project_page(page, name, {key: form}, 400)


def _quota(page: Page, name: str, flavor: str, spec: QuotaUpdate, new: bool) -> None:
    with write_session(page.pool.engine) as session:
        project = projects.project_public(session, projects.get_project(session, page.who, name))
        if not new and flavor not in {f.name for f in nodes.list_flavors(session)}:
            raise NotFound(f"no flavor {flavor!r}", field="flavor")  # an address made up
        with refusals():
            if new and any(q.flavor == flavor for q in project.quotas):
                raise Conflict(
                    f"{name!r} has a {flavor} quota already; change it in its own form",
                    field="flavor",
                )
            projects.set_quota(session, page.who, name, flavor, spec, page.now)


def _has_quota(page: Page, name: str, flavor: str) -> bool:
    with read_session(page.pool.engine) as session:
        return flavor in projects.own_credit_rates(session, name)


@router.post("/projects/{name}/credits")
async def change_credits(page: Admin, name: ProjectName) -> Response:
    """Credits added (or taken back, negative), set to a total, or no budget at all, with a
    note (CreditChange; the grant goes into the ledger)."""
    _ = page.gettext
    form = await read_form(page.request, page.session.csrf, _)
    for name_of_field in ("amount", "set_to"):
        form.values.setdefault(name_of_field, "")  # errors about them go on them
    spec = None
    if form.ok:
        data = blank_to_none(form.values, ("amount", "set_to"))
        data |= {"unlimited": form.get("unlimited") == "yes", "note": form.get("note").strip()}
        try:
            spec = CreditChange.model_validate(data)
        except ValidationError as err:
            form.refuse(err, _)
    if spec is not None and form.ok:
        try:
            left = await run_in_threadpool(_credits, page, name, spec)
        except Refused as err:
            refused_form(page, form, err)
        else:
            page.pool.pool_changed()
            if left is None:
                said = _("Project %(name)s has no credit budget now.") % {"name": name}
            else:
                said = _("Credits of %(name)s changed: %(left)s left.") % {
                    "name": name,
                    "left": formats(page).number(left, 1),
                }
            return _done(page, name, said)
    return await _project_page(page, name, {"credits": form}, 400)


def _credits(page: Page, name: str, spec: CreditChange) -> float | None:
    with write_session(page.pool.engine) as session:
        projects.get_project(session, page.who, name)
        with refusals():
            project = projects.change_credits(session, page.who, name, spec, page.now)
        return projects.credits_left(project)


@router.post("/projects/{name}/members")
async def add_member(page: Admin, name: ProjectName) -> Response:
    _ = page.gettext
    form = await read_form(page.request, page.session.csrf, _)
    spec = None
    if form.ok:
        try:
            spec = MemberCreate.model_validate(blank_to_none(form.values, ("user", "role")))
        except ValidationError as err:
            form.refuse(err, _)
    if spec is not None and form.ok:
        try:
            await run_in_threadpool(_add_member, page, name, spec)
        except Refused as err:
            refused_form(page, form, err)
        else:
            page.pool.identities_changed()
            return _done(
                page,
                name,
                _("%(user)s is a %(role)s of %(name)s now.")
                % {"user": spec.user, "role": _(spec.role.value), "name": name},
            )
    return await _project_page(page, name, {"member": form}, 400)


def _add_member(page: Page, name: str, spec: MemberCreate) -> None:
    with write_session(page.pool.engine) as session:
        projects.get_project(session, page.who, name)
        with refusals():
            projects.add_member(session, page.who, name, spec, page.now)


@router.post("/projects/{name}/members/{user}/remove")
async def remove_member(page: Admin, name: ProjectName, user: UserName) -> Response:
    _ = page.gettext
    form = await read_form(page.request, page.session.csrf, _)
    if form.ok:
        try:
            await run_in_threadpool(_remove_member, page, name, user)
        except Refused as err:
            refused_form(page, form, err)
        else:
            page.pool.identities_changed()
            return _done(
                page,
                name,
                _("%(user)s is no longer a member of %(name)s.") % {"user": user, "name": name},
            )
    return await _project_page(page, name, {"member-remove": form}, 400)


def _remove_member(page: Page, name: str, user: str) -> None:
    with write_session(page.pool.engine) as session:
        projects.get_project(session, page.who, name)
        with refusals():
            projects.remove_member(session, page.who, name, user, page.now)


# --- sectors -------------------------------------------------------------------------------


@dataclass
class SectorRow:
    name: str
    weight: float
    share_pct: float  # of the total weight
    projects: int
    active: int


@router.get("/sectors")
async def sectors_page(page: Admin) -> Response:
    return await _sectors_page(page)


async def _sectors_page(
    page: Page, posted: Mapping[str, Form] = {}, status_code: int = 200
) -> Response:
    rows = await run_in_threadpool(_sectors, page)
    forms = {f"sector-{r.name}": Form(values={"weight": f"{r.weight:g}"}) for r in rows}
    forms["sector-new"] = Form()
    return page.render(
        "admin_sectors.html", status_code=status_code, rows=rows, forms=forms | dict(posted)
    )


def _sectors(page: Page) -> list[SectorRow]:
    with read_session(page.pool.engine) as session:
        sectors = projects.list_sectors(session)
        counts = projects.sector_project_counts(session)
        total = sum(s.weight for s in sectors)
        return [
            SectorRow(
                s.name,
                s.weight,
                100 * s.weight / total if total else 0.0,
                *counts.get(s.name, (0, 0)),
            )
            for s in sectors
        ]


@router.post("/sectors")
async def add_sector(page: Admin) -> Response:
    return await _set_sector(page, None)


@router.post("/sectors/{name}")
async def set_sector(page: Admin, name: ProjectName) -> Response:
    return await _set_sector(page, name)


async def _set_sector(page: Page, name: str | None) -> Response:
    """A sector's share weight (SectorUpdate, as the API's PUT /sectors/{name}); a new
    sector from the form that names one."""
    _ = page.gettext
    form = await read_form(page.request, page.session.csrf, _)
    key = f"sector-{name}" if name is not None else "sector-new"
    chosen = name if name is not None else form.get("name").strip()
    if form.ok and name is None and not NAME.match(chosen):
        form.error(
            "name",
            _("1 to 63 characters: a-z, 0-9, '.', '_' or '-', starting with a letter or digit."),
        )
    spec = None
    if form.ok:
        try:
            spec = SectorUpdate.model_validate(blank_to_none(form.values, ("weight",)))
        except ValidationError as err:
            form.refuse(err, _)
    if spec is not None and form.ok:
        try:
            await run_in_threadpool(_sector, page, chosen, spec, name is None)
        except Refused as err:
            refused_form(page, form, err)
        else:
            page.pool.pool_changed()  # the loop weighs sectors afresh
            page.session.say(
                "ok",
                _("Sector %(name)s weighs %(weight)s now.")
                % {"name": _(chosen), "weight": formats(page).number(spec.weight, 2)},
            )
            return page.redirect("/admin/sectors")
    return await _sectors_page(page, {key: form}, 400)


def _sector(page: Page, name: str, spec: SectorUpdate, new: bool) -> None:
    with write_session(page.pool.engine) as session:
        known = {s.name for s in projects.list_sectors(session)}
        if not new and name not in known:
            raise NotFound(f"no sector {name!r}", field="sector")
        with refusals():
            if new and name in known:
                raise Conflict(
                    f"sector {name!r} exists already; change its weight in its own row",
                    field="name",
                )
            projects.set_sector(session, page.who, name, spec, page.now)


# --- users ---------------------------------------------------------------------------------


@dataclass
class UserList:
    items: list[UserPublic]
    total: int


@router.get("/users")
async def users_page(
    page: Admin,
    role: Annotated[str, Query(max_length=100)] = "",
    q: Annotated[str, Query(max_length=100)] = "",
    offset: Offset = 0,
) -> Response:
    return await _users_page(page, Form(values={"role": role, "q": q}), offset)


async def _users_page(
    page: Page, filters: Form, offset: int, create: Form | None = None, status_code: int = 200
) -> Response:
    _ = page.gettext
    role = filters.get("role")
    if role and role not in {r.value for r in Role}:
        filters.error("role", _("No such role."))
    found = await run_in_threadpool(
        _users, page, Role(role) if role and filters.ok else None, filters.get("q"), offset
    )
    params = {k: v for k, v in filters.values.items() if v and k not in filters.errors}
    roles = [(r.value, _(r.value)) for r in Role]
    return page.render(
        "admin_users.html",
        status_code=status_code if filters.ok else 400,
        form=filters,
        create=create or Form(values={"role": Role.RESEARCHER.value}),
        found=found,
        roles=roles,
        role_filter=[("", _("All")), *roles],
        params=params,
        limit=PAGE_SIZE,
        offset=offset,
    )


def _users(page: Page, role: Role | None, contains: str, offset: int) -> UserList:
    with read_session(page.pool.engine) as session:
        rows, total = users.page_users(
            session,
            page.who,
            role=role,
            contains=contains.strip() or None,
            limit=PAGE_SIZE,
            offset=offset,
        )
        return UserList([UserPublic.model_validate(u.model_dump()) for u in rows], total)


@router.post("/users")
async def create_user(page: Admin) -> Response:
    """A new user (UserCreate), with a first portal password if one is given."""
    _ = page.gettext
    form = await read_form(page.request, page.session.csrf, _)
    name = form.get("name").strip()
    if form.ok and name and not NAME.match(name):
        form.error(
            "name",
            _("1 to 63 characters: a-z, 0-9, '.', '_' or '-', starting with a letter or digit."),
        )
    if form.ok and (form.get("password") or form.get("password_again")):
        password_error(page, form, name)
    spec = None
    try:
        spec = UserCreate.model_validate(
            blank_to_none(form.values, ("name", "role"))
            | {"full_name": form.get("full_name").strip(), "email": form.get("email").strip()}
        )
    except ValidationError as err:
        form.refuse(err, _)
    if spec is not None and form.ok:
        try:
            await run_in_threadpool(_create_user, page, spec, form.get("password"))
        except Refused as err:
            refused_form(page, form, err)
        else:
            page.session.say("ok", _("User %(name)s is created.") % {"name": spec.name})
            return page.redirect(f"/admin/users/{spec.name}")
    form.values.pop("password", None)  # never sent back into the page
    form.values.pop("password_again", None)
    return await _users_page(page, Form(), 0, form, 400)


def _create_user(page: Page, spec: UserCreate, password: str) -> None:
    with write_session(page.pool.engine) as session, refusals():
        users.create_user(session, page.who, spec, page.now)
        if password:
            session.flush()
            auth.set_password(session, page.who, spec.name, password, page.now)


@dataclass
class UserAdmin:
    user: UserPublic
    memberships: list[tuple[str, MemberRole]]
    tokens: list[TokenPublic]
    changes: list[ChangePublic]


@router.get("/users/{name}")
async def user_page(page: Admin, name: UserName) -> Response:
    return await _user_page(page, name)


async def _user_page(
    page: Page,
    name: str,
    posted: Mapping[str, Form] = {},
    status_code: int = 200,
    created: TokenCreated | None = None,
) -> Response:
    view = await run_in_threadpool(_user_admin, page, name)
    u = view.user
    forms = {
        "user": Form(
            values={
                "full_name": u.full_name,
                "email": u.email,
                "role": u.role.value,
                "active": "yes" if u.active else "",
            }
        ),
        "password": Form(),
        "signout": Form(),
        "token": Form(),
        "revoke": Form(),
    } | dict(posted)
    return page.render(
        "admin_user.html",
        status_code=status_code,
        view=view,
        forms=forms,
        roles=[(r.value, page.gettext(r.value)) for r in Role],
        created=created,
    )


def _user_admin(page: Page, name: str) -> UserAdmin:
    with read_session(page.pool.engine) as session:
        user = UserPublic.model_validate(users.get_user(session, page.who, name).model_dump())
        return UserAdmin(
            user,
            projects.memberships_of(session, name),
            [
                TokenPublic.model_validate(t.model_dump())
                for t in auth.list_tokens(session, page.who, name)
            ],
            [
                ChangePublic.model_validate(c.model_dump())
                for c in history(session, f"user:{name}", limit=HISTORY)
            ],
        )


@router.post("/users/{name}")
async def update_user(page: Admin, name: UserName) -> Response:
    """Full name, email, role and whether the user may sign in (UserUpdate). An
    administrator cannot take their own role away or deactivate themselves here, so the
    pool is never left without one by a slip."""
    _ = page.gettext
    form = await read_form(page.request, page.session.csrf, _)
    active = form.get("active") == "yes"
    if form.ok and name == page.who.name:
        if form.get("role") != Role.ADMIN.value:
            form.error("role", _("You cannot take away your own administrator role."))
        if not active:
            form.error("active", _("You cannot deactivate yourself."))
    spec = None
    if form.ok:
        try:
            spec = UserUpdate.model_validate(
                {
                    "full_name": form.get("full_name").strip(),
                    "email": form.get("email").strip(),
                    "role": form.get("role") or None,
                    "active": active,
                }
            )
        except ValidationError as err:
            form.refuse(err, _)
    if spec is not None and form.ok:
        try:
            await run_in_threadpool(_update_user, page, name, spec)
        except Refused as err:
            refused_form(page, form, err)
        else:
            page.pool.identities_changed()
            page.session.say("ok", _("User %(name)s is changed.") % {"name": name})
            return page.redirect(f"/admin/users/{name}")
    return await _user_page(page, name, {"user": form}, 400)


def _update_user(page: Page, name: str, spec: UserUpdate) -> None:
    with write_session(page.pool.engine) as session:
        users.get_user(session, page.who, name)
        with refusals():
            users.update_user(session, page.who, name, spec, page.now)


@router.post("/users/{name}/password")
async def set_password(page: Admin, name: UserName) -> Response:
    _ = page.gettext
    form = await read_form(page.request, page.session.csrf, _)
    if form.ok and name == page.who.name:  # one's own needs the current one: not here
        form.error("password", _("Change your own password on the My account page."))
    if form.ok:
        password_error(page, form, name)
    if form.ok:
        try:
            await run_in_threadpool(_set_password, page, name, form.get("password"))
        except Refused as err:
            refused_form(page, form, err)
        else:
            page.pool.sessions_ended()
            page.session.say(
                "ok",
                _("The password of %(name)s is set; their sessions are signed out.")
                % {"name": name},
            )
            return page.redirect(f"/admin/users/{name}")
    form.values.pop("password", None)
    form.values.pop("password_again", None)
    return await _user_page(page, name, {"password": form}, 400)


def _set_password(page: Page, name: str, password: str) -> None:
    with write_session(page.pool.engine) as session:
        users.get_user(session, page.who, name)
        with refusals():
            auth.set_password(session, page.who, name, password, page.now)


@router.post("/users/{name}/signout")
async def sign_out_everywhere(page: Admin, name: UserName) -> Response:
    """End every portal session of the user at once (a lost laptop, a cookie thought
    stolen); their API tokens are revoked one by one below."""
    _ = page.gettext
    form = await read_form(page.request, page.session.csrf, _)
    if form.ok:
        ended = await run_in_threadpool(_sign_out_everywhere, page, name)
        page.pool.sessions_ended()
        page.session.say(
            "ok",
            _("%(name)s is signed out everywhere (%(count)s sessions ended).")
            % {"name": name, "count": ended},
        )
        return page.redirect(f"/admin/users/{name}")
    return await _user_page(page, name, {"signout": form}, 400)


def _sign_out_everywhere(page: Page, name: str) -> int:
    with write_session(page.pool.engine) as session:
        users.get_user(session, page.who, name)
        return auth.sign_out_everywhere(session, page.who, name, page.now)


@router.post("/users/{name}/tokens")
async def issue_token(page: Admin, name: UserName) -> Response:
    """A new API token for the user (TokenCreate). Its secret is on the answer page only:
    the pool keeps its digest, so it is never shown again."""
    _ = page.gettext
    form = await read_form(page.request, page.session.csrf, _)
    spec = issue_token_spec(form, _) if form.ok else None
    if spec is not None and form.ok:
        try:
            created = await run_in_threadpool(_issue, page, name, spec.label, spec.expires_in_days)
        except Refused as err:
            refused_form(page, form, err)
        else:
            return await _user_page(page, name, created=created)
    return await _user_page(page, name, {"token": form}, 400)


def _issue(page: Page, name: str, label: str, days: int | None) -> TokenCreated:
    with write_session(page.pool.engine) as session:
        users.get_user(session, page.who, name)
        with refusals():
            return auth.issue_token(session, page.who, name, page.now, label, days)


@router.post("/users/{name}/tokens/{token_id}/revoke")
async def revoke_token(page: Admin, name: UserName, token_id: IdPath) -> Response:
    _ = page.gettext
    form = await read_form(page.request, page.session.csrf, _)
    if form.ok:
        prefix = await run_in_threadpool(_revoke, page, name, token_id)
        page.pool.identities_changed()
        page.session.say("ok", _("Token %(prefix)s… is revoked.") % {"prefix": prefix})
        return page.redirect(f"/admin/users/{name}")
    return await _user_page(page, name, {"revoke": form}, 400)


def _revoke(page: Page, name: str, token_id: int) -> str:
    with write_session(page.pool.engine) as session:
        row = auth.revoke_token(session, page.who, token_id, page.now)
        if row.user != name:  # another user's token under this user's address
            raise NotFound(f"no token {token_id} of {name!r}", field="token")
        return row.prefix


# --- the change log ------------------------------------------------------------------------


@dataclass
class ChangeList:
    items: list[ChangePublic]
    total: int


@router.get("/changes")
async def changes_page(
    page: Admin, kind: Annotated[str, Query(max_length=100)] = "", offset: Offset = 0
) -> Response:
    """Every change recorded, newest first, 50 a page; of one kind of subject if asked."""
    _ = page.gettext
    form = Form(values={"kind": kind})
    if kind and kind not in CHANGE_KINDS:
        form.error("kind", _("No such kind of change."))
    found = await run_in_threadpool(_changes, page, kind if form.ok else "", offset)
    return page.render(
        "admin_changes.html",
        status_code=200 if form.ok else 400,
        form=form,
        found=found,
        kinds=[("", _("All")), *((k, _(w)) for k, w in CHANGE_KINDS.items())],
        params={"kind": kind} if kind and form.ok else {},
        limit=PAGE_SIZE,
        offset=offset,
    )


def _changes(page: Page, kind: str, offset: int) -> ChangeList:
    with read_session(page.pool.engine) as session:
        rows, total = recent_changes(session, kind or None, PAGE_SIZE, offset)
        return ChangeList([ChangePublic.model_validate(c.model_dump()) for c in rows], total)
