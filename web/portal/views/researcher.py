"""Researchers' pages: the dashboard of my projects, my jobs, submitting, a job's page
(with its live log), statements, verifying a statement, requesting a project, a project's
page.

Every page calls the services the API's routers call (web/api/routes/jobs.py, projects.py,
statements.py), inside one session run in the thread pool, and turns rows into *Public
models there. Forms are read with web/portal/forms.py and refused in place, keeping what
was typed."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.responses import JSONResponse, Response

from web.api.deps import IdPath, refuse_nul
from web.db import read_session, write_session
from web.enums import ACTIVE_JOB_STATE_VALUES, FINAL_JOB_STATE_VALUES
from web.models import (
    MAX_ID,
    MAX_NESTING,
    NAME_PATTERN,
    ChangePublic,
    JobCreate,
    JobPage,
    JobPublic,
    JobState,
    JobUsagePublic,
    ProjectCreate,
    ProjectPublic,
    ProjectState,
)
from web.portal.deps import Page, PageDep, SignedIn
from web.portal.forms import FORM, Form, blank_to_none, read_form
from web.portal.i18n import Formats
from web.portal.words import N_, REASONS
from web.services import jobs, ledger, nodes, projects, signing, statements
from web.services.changes import history
from web.services.durations import parse_duration
from web.services.errors import NotFound, ServiceError, Unavailable
from web.services.logs import MAX_CHUNK, JobLogs, read_logs
from web.services.metering import period_of

router = APIRouter()

PAGE_SIZE = 50
LOG_TAIL = 256 * 1024  # of a long log, the job's page shows the end
CANCELLABLE = (JobState.QUEUED.value, *ACTIVE_JOB_STATE_VALUES)
ANY_FLAVOR = "*"
# A job just submitted waits for the loop's next cycle (its reason code is "new").
NEW_JOB = N_("Submitted: waiting for the next scheduling cycle")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PROJECT_NAME = re.compile(NAME_PATTERN)
FORMAT_NAMES = {"html": "HTML", "csv": "CSV", "json": "JSON"}


def headline(reason_code: str) -> str | None:
    """Why a job waits, in a few words to translate (None: a code without words)."""
    if reason_code == "new":
        return NEW_JOB
    return REASONS.get(reason_code)


def start_estimate(job: JobPublic, f: Formats, _: Callable[[str], str]) -> str:
    """A waiting job's estimated start and how sure it is, in the page's language ('' when
    it has none): "Estimated start: 14:10 (likely between 13:50 and 14:40)"."""
    if job.state is not JobState.QUEUED or not job.est_start:
        return ""
    text = _("Estimated start: %(when)s") % {"when": f.when(job.est_start)}
    if not (job.est_confidence and job.est_start_earliest and job.est_start_latest):
        return text
    between = {"earliest": f.when(job.est_start_earliest), "latest": f.when(job.est_start_latest)}
    if job.est_confidence == "likely":
        sure = _("likely between %(earliest)s and %(latest)s") % between
    elif job.est_unbounded:
        sure = _(
            "rough: between %(earliest)s and %(latest)s; it depends on %(count)s jobs "
            "running past what their history knows"
        ) % (between | {"count": job.est_unbounded})
    else:
        sure = (
            _(
                "rough: between %(earliest)s and %(latest)s; the jobs it waits on vary widely "
                "in run time"
            )
            % between
        )
    return f"{text} ({sure})"


def estimated(page: Page) -> Callable[[JobPublic], str]:
    """start_estimate for the page's templates."""
    f = formats(page)
    return lambda job: start_estimate(job, f, page.gettext)


def formats(page: Page) -> Formats:
    """Numbers and dates as the page's language writes them (what templates get as `f`)."""
    return Formats(page.language, page.pool.settings.timezone)


def idle_flag_before(page: Page) -> float:
    """Running jobs idle since before this are flagged (as the API's idle_flag_before)."""
    return page.now - page.pool.settings.idle_flag_after_s


# --- the dashboard -------------------------------------------------------------------------


@router.get("/")
async def dashboard(page: SignedIn) -> Response:
    mine = await run_in_threadpool(_my_projects, page)
    return page.render("dashboard.html", projects=mine)


def _my_projects(page: Page) -> list[ProjectPublic]:
    """The projects the user belongs to (admins and operators: those they belong to too;
    the whole pool is on their own pages)."""
    who = page.who
    with read_session(page.pool.engine) as session:
        rows = projects.list_projects(session, who, None)
        return projects.public_projects(session, [p for p in rows if p.name in who.memberships])


# --- jobs ----------------------------------------------------------------------------------


@dataclass
class JobsView:
    found: JobPage
    projects: list[str]
    flavors: list[str]


@router.get("/jobs")
async def jobs_list(
    page: SignedIn,
    project: Annotated[str, Query(max_length=100)] = "",
    state: Annotated[str, Query(max_length=100)] = "",
    flavor: Annotated[str, Query(max_length=100)] = "",
    mine: Annotated[str, Query(max_length=10)] = "",
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> Response:
    """My jobs (admins and operators: all), newest first, filtered by project, state and
    flavor; a filter that names nothing known is an error on its field."""
    _ = page.gettext
    form = Form(values={"project": project, "state": state, "flavor": flavor, "mine": mine})
    view = await run_in_threadpool(_jobs_view, page, form, offset)
    params = {k: v for k, v in form.values.items() if v and k not in form.errors}
    every = ("", _("All"))
    options = {
        "project": [every, *((p, p) for p in view.projects)],
        "state": [every, *((s.value, _(s.value)) for s in JobState)],
        "flavor": [every, (ANY_FLAVOR, _("any")), *((f, f) for f in view.flavors)],
    }
    return page.render(
        "jobs.html",
        status_code=200 if form.ok else 400,
        form=form,
        view=view,
        params=params,
        options=options,
        headline=headline,
        estimate=estimated(page),
        limit=PAGE_SIZE,
        offset=offset,
        any_flavor=ANY_FLAVOR,
    )


def _jobs_view(page: Page, form: Form, offset: int) -> JobsView:
    _ = page.gettext
    who = page.who
    with read_session(page.pool.engine) as session:
        names = [p.name for p in projects.list_projects(session, who, None)]
        flavors = [f.name for f in nodes.list_flavors(session)]
        project, state, flavor = form.get("project"), form.get("state"), form.get("flavor")
        if project and project not in names:
            form.error("project", _("No such project of yours."))
        if state and state not in {s.value for s in JobState}:
            form.error("state", _("No such state."))
        if flavor and flavor != ANY_FLAVOR and flavor not in flavors:
            form.error("flavor", _("No such flavor."))
        found = jobs.list_jobs(
            session,
            who,
            project=project if project and "project" not in form.errors else None,
            states=[JobState(state)] if state and "state" not in form.errors else (),
            user=who.name if form.get("mine") else None,
            flavor=flavor if flavor and "flavor" not in form.errors else None,
            limit=PAGE_SIZE,
            offset=offset,
            idle_flag_before=idle_flag_before(page),
            newest_first=True,
        )
        return JobsView(found, names, flavors)


# --- submitting ----------------------------------------------------------------------------


@dataclass
class SubmitChoices:
    projects: list[tuple[str, str]]  # (name, label) of my active projects
    flavors: list[str]


@router.get("/submit")
async def submit_form(page: SignedIn) -> Response:
    return await _submit_page(page, None)


@router.post("/submit")
async def submit(page: SignedIn) -> Response:
    """Queue a job through the same intake as POST /api/v1/jobs (validated the same way);
    the form's idempotency key makes a form sent twice one job."""
    _ = page.gettext
    form = await read_form(page.request, page.session.csrf, _)
    spec = job_spec(form, _) if form.ok else None
    if spec is not None:
        try:
            result = await asyncio.wrap_future(page.pool.intake.submit(page.who, spec, page.now))
        except ServiceError as err:
            form.refuse(err, _)
        else:
            page.pool.job_submitted()
            first = result.jobs[0]
            if result.duplicate:
                page.session.say(
                    "ok",
                    _("This form was sent before: here is the job it made, job %(id)s.")
                    % {"id": first.id},
                )
            else:
                page.session.say("ok", _("Job %(id)s is queued.") % {"id": first.id})
            return page.redirect(f"/jobs/{first.id}")
    return await _submit_page(page, form)


async def _submit_page(page: Page, form: Form | None) -> Response:
    """The form: empty, or refused (400) with what was typed, its errors and its key (a
    form sent again after a fix still makes one job)."""
    _ = page.gettext
    choices = await run_in_threadpool(_submit_choices, page)
    options = {
        "project": list(choices.projects),
        "flavor": [(ANY_FLAVOR, _("any")), *((f, f) for f in choices.flavors)],
    }
    if form is not None:  # a value typed that is not offered is shown as typed
        for name, offered in options.items():
            typed = form.get(name)
            if typed and typed not in {value for value, _text in offered}:
                offered.append((typed, typed))
    return page.render(
        "submit.html",
        status_code=200 if form is None else 400,
        form=form,
        options=options if choices.projects else {"project": [], "flavor": []},
        idempotency_key=(form.get("idempotency_key") if form else "") or secrets.token_urlsafe(18),
        any_flavor=ANY_FLAVOR,
    )


def _submit_choices(page: Page) -> SubmitChoices:
    who = page.who
    with read_session(page.pool.engine) as session:
        active = projects.list_projects(session, who, ProjectState.ACTIVE)
        mine = [
            (p.name, p.name if p.title in ("", p.name) else f"{p.name} · {p.title}") for p in active
        ]
        flavors = [f.name for f in nodes.list_flavors(session)]
        return SubmitChoices([m for m in mine if m[0] in who.memberships], flavors)


def job_spec(form: Form, _: Any) -> JobCreate | None:
    """The form as the API's JobCreate (None, with errors on the form's fields, if it is
    not one): runtime environment JSON, working directory and environment variables
    merged into runtime_env."""
    data: dict[str, Any] = blank_to_none(
        form.values,
        ("project", "entrypoint", "gpus", "flavor", "nodes", "time", "name", "idempotency_key"),
    )
    if "time" in data:  # said with the other fields' errors, not after them
        try:
            parse_duration(data["time"])
        except ServiceError as err:
            form.refuse(err, _)
    runtime_env: dict[str, Any] = {}
    text = form.get("runtime_env").strip()
    if text:
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as err:
            form.error(
                "runtime_env",
                _("Not valid JSON: %(problem)s (line %(line)s, column %(column)s).")
                % {"problem": err.msg, "line": err.lineno, "column": err.colno},
            )
        except RecursionError:  # nested past what Python's parser reads
            form.error(
                "runtime_env",
                _("Nested too deep: at most %(depth)s arrays and objects within one another.")
                % {"depth": MAX_NESTING},
            )
        else:
            if isinstance(parsed, dict):
                runtime_env = parsed
            else:
                form.error(
                    "runtime_env", _('Must be a JSON object in braces, such as {"pip": ["torch"]}.')
                )
    working_dir = form.get("working_dir").strip()
    if working_dir:
        if runtime_env.get("working_dir", working_dir) != working_dir:
            form.error(
                "working_dir",
                _("The runtime environment sets another working_dir: give it in one place."),
            )
        runtime_env["working_dir"] = working_dir
    variables = env_vars(form, _)
    if variables:
        given = runtime_env.get("env_vars", {})
        if not isinstance(given, dict):
            form.error("runtime_env", _("Its env_vars must be an object of names to strings."))
        else:
            runtime_env["env_vars"] = given | variables
    data["runtime_env"] = runtime_env
    try:
        spec = JobCreate.model_validate(data)
    except ValidationError as err:
        form.refuse(err, _)
        return None
    return spec if form.ok else None


def env_vars(form: Form, _: Any) -> dict[str, str]:
    """NAME=value lines (blank lines skipped); an error naming the first bad line."""
    found: dict[str, str] = {}
    for number, line in enumerate(form.get("env_vars").splitlines(), start=1):
        if not line.strip():
            continue
        name, equals, value = line.partition("=")
        if not equals or not ENV_NAME.match(name.strip()):
            form.error(
                "env_vars",
                _("Line %(line)s is not NAME=value (a name of letters, digits and _).")
                % {"line": number},
            )
            break
        found[name.strip()] = value
    return found


# --- a job's page --------------------------------------------------------------------------


@dataclass
class JobView:
    job: JobPublic
    usage: list[JobUsagePublic]
    may_cancel: bool
    log: str = ""
    log_offset: int = 0  # where what follows the shown log starts
    log_attempt: int = 0
    log_cut: bool = False  # the start of a long log is not shown
    log_note: str = ""  # why there is no log (the dispatcher runs nothing, Ray is away)
    final: bool = False


@router.get("/jobs/{job_id}")
async def job_page(page: SignedIn, job_id: IdPath) -> Response:
    view = await run_in_threadpool(_job_view, page, job_id)
    return page.render(
        "job.html", view=view, job=view.job, headline=headline, estimate=estimated(page)
    )


def _job_view(page: Page, job_id: int) -> JobView:
    who = page.who
    with read_session(page.pool.engine) as session:
        row = jobs.get_job(session, who, job_id)  # NotFound: another project's job
        job = jobs.public_jobs(session, [row], idle_flag_before(page))[0]
        usage = jobs.job_usage(session, who, job_id)
    may_cancel = job.state.value in CANCELLABLE and (
        job.user == who.name or who.leads(job.project) or who.is_admin
    )
    view = JobView(job, usage, may_cancel, final=job.state.value in FINAL_JOB_STATE_VALUES)
    try:
        found = read_logs(page.pool.engine, page.pool.settings, who, job_id)
        if found.size > LOG_TAIL:
            found = read_logs(
                page.pool.engine,
                page.pool.settings,
                who,
                job_id,
                found.attempt or None,
                found.size - LOG_TAIL,
            )
            view.log_cut = True
    except (NotFound, Unavailable) as err:
        view.log_note = err.message
    else:
        view.log = found.text.decode(errors="replace")
        view.log_offset, view.log_attempt = found.end, found.attempt
    return view


@router.get("/jobs/{job_id}/log")
def job_log(
    page: SignedIn,
    job_id: IdPath,
    attempt: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    offset: Annotated[int, Query(ge=0, le=2**53)] = 0,
) -> Response:
    """The job's output from `offset` (at most MAX_CHUNK bytes), as the API's
    GET /api/v1/jobs/{id}/logs answers it, for the page's script (the session's user)."""
    found = read_logs(page.pool.engine, page.pool.settings, page.who, job_id, attempt, offset)
    response = Response(
        found.text, media_type="text/plain; charset=utf-8", headers=log_headers(found)
    )
    return page.finish(response)


def log_headers(found: JobLogs) -> dict[str, str]:
    return {
        "X-Gpupool-Attempt": str(found.attempt),
        "X-Gpupool-Job-Attempt": str(found.job_attempt),
        "X-Gpupool-Job-State": found.state,
        "X-Gpupool-Log-End": str(found.end),
        "X-Gpupool-Log-Size": str(found.size),
        "X-Gpupool-Log-Done": "1" if found.done else "0",
        "X-Gpupool-Log-Chunk": str(MAX_CHUNK),
    }


@router.get("/jobs/{job_id}/state.json")
def job_state(page: SignedIn, job_id: IdPath) -> Response:
    """The job's state and why it waits, in the page's language, for the page's script."""
    _ = page.gettext
    with read_session(page.pool.engine) as session:
        job = jobs.public_jobs(session, [jobs.get_job(session, page.who, job_id)])[0]
    words = headline(job.reason_code)
    f = formats(page)
    body = {
        "id": job.id,
        "state": job.state.value,
        "state_label": _(job.state.value),
        "final": job.state.value in FINAL_JOB_STATE_VALUES,
        "attempt": job.attempt,
        "reason_code": job.reason_code,
        "headline": _(words) if words and job.state is JobState.QUEUED else "",
        "reason": job.reason if job.state is JobState.QUEUED else "",
        "est_start": f.when(job.est_start) if job.est_start else "",
        "est_start_text": start_estimate(job, f, _),
        "outcome": job.outcome,
    }
    return page.finish(JSONResponse(body))


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(page: SignedIn, job_id: IdPath) -> Response:
    """Cancel as the API's POST /jobs/{id}/cancel does: a waiting job at once, an admitted
    or running one is stopped by the loop."""
    _ = page.gettext
    form = await read_form(page.request, page.session.csrf, _)
    if not form.ok:
        page.session.say("error", form.errors[FORM])
        return page.redirect(f"/jobs/{job_id}")
    try:
        state = await run_in_threadpool(_cancel, page, job_id)
    except NotFound:
        raise
    except ServiceError as err:
        page.session.say("error", _("Not accepted: %(reason)s") % {"reason": err.message})
        return page.redirect(f"/jobs/{job_id}")
    page.pool.job_submitted()
    if state == JobState.CANCELLED.value:
        page.session.say("ok", _("Job %(id)s was cancelled.") % {"id": job_id})
    else:
        page.session.say(
            "ok", _("Job %(id)s is being stopped; its GPUs are freed shortly.") % {"id": job_id}
        )
    return page.redirect(f"/jobs/{job_id}")


def _cancel(page: Page, job_id: int) -> str:
    with write_session(page.pool.engine) as session:
        return jobs.cancel(session, page.who, job_id, page.now).state


# --- statements ----------------------------------------------------------------------------


@router.get("/statements")
async def statements_page(
    page: SignedIn,
    project: Annotated[str | None, Query(max_length=100)] = None,
    period: Annotated[str, Query(max_length=100)] = "",
    format: Annotated[str, Query(max_length=10)] = "html",
) -> Response:
    """Pick a project and a period; a valid choice is sent on to the download."""
    _ = page.gettext
    names = await run_in_threadpool(_visible_project_names, page)
    this_month = period_of(page.now)
    if project is None:  # the page, not a choice yet
        return page.render(
            "statements.html",
            form=None,
            names=names,
            this_month=this_month,
            formats=FORMAT_NAMES,
        )
    form = Form(values={"project": project, "period": period.strip(), "format": format})
    if project not in names:
        form.error("project", _("No such project of yours."))
    if not form.get("period"):
        form.error("period", _("Required."))
    else:
        try:
            statements.parse_period(form.get("period"))
        except ServiceError as err:
            form.refuse(err, _)
    if format not in FORMAT_NAMES:
        form.error("format", _("Must be one of: %(expected)s.") % {"expected": "html, csv, json"})
    if form.ok:
        return page.redirect(f"/projects/{project}/statements/{form.get('period')}.{format}")
    return page.render(
        "statements.html",
        status_code=400,
        form=form,
        names=names,
        this_month=this_month,
        formats=FORMAT_NAMES,
    )


def _visible_project_names(page: Page) -> list[str]:
    with read_session(page.pool.engine) as session:
        return [p.name for p in projects.list_projects(session, page.who, None)]


@router.get("/projects/{name}/statements/{period}.{fmt}", dependencies=[Depends(refuse_nul)])
async def statement_download(
    page: SignedIn,
    name: Annotated[str, Path(max_length=63)],
    period: Annotated[str, Path(max_length=20)],
    fmt: Literal["json", "csv", "html"],
) -> Response:
    """The signed statement, as the API's GET /projects/{name}/statements/{period} makes
    it, to keep: JSON (the one that verifies), CSV or printable HTML."""
    body, media_type = await run_in_threadpool(_statement, page, name, period, fmt)
    filename = f"statement-{name}-{period}.{fmt}".replace('"', "")
    response = Response(
        body,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
    return page.finish(response)


def _statement(page: Page, name: str, period: str, fmt: str) -> tuple[bytes, str]:
    key = signing.pool_key(page.pool.settings.statement_key_path)
    return statements.rendered_statement(
        page.pool.engine, page.who, name, period, fmt, key, page.now
    )


# --- verifying a statement -----------------------------------------------------------------


@dataclass
class Verified:
    valid: bool
    problems: list[str]
    key_id: str
    project: str = ""
    period: str = ""


@router.get("/verify")
def verify_form(page: PageDep) -> Response:
    return page.render("verify.html", form=None, result=None)


@router.post("/verify")
async def verify(page: PageDep) -> Response:
    """Anyone checks a statement (a file, or pasted): its signature with this pool's key,
    its figures, and its entries against the ledger, as POST /api/v1/statements/verify."""
    _ = page.gettext
    limit = page.pool.settings.max_statement_bytes
    data = await page.request.form(max_part_size=limit)  # read_form reads it from here
    form = await read_form(page.request, page.session.csrf, _)
    raw, where = b"", "statement_file"
    upload = data.get("statement_file")
    if isinstance(upload, UploadFile) and upload.filename:
        raw = await upload.read(limit + 1)
        if not raw:
            form.error(where, _("The file is empty."))
    elif form.get("statement_text").strip():
        # As pasted: the signature covers the exact bytes (surrogates kept, to be named).
        raw, where = form.get("statement_text").encode("utf-8", "surrogatepass"), "statement_text"
    else:
        form.error(where, _("Choose a statement file, or paste one below."))
    if form.ok and len(raw) > limit:
        form.error(where, _("Larger than %(size)s.") % {"size": formats(page).size(limit)})
    if not form.ok:
        return page.render("verify.html", status_code=400, form=form, result=None)
    found, key_id = await run_in_threadpool(_verify, page, raw)
    if found.not_text:  # not a statement file at all: said on its field
        form.error(where, _("Not text in UTF-8: a statement is a JSON file."))
    elif found.not_json is not None:
        form.error(
            where,
            _("Not valid JSON: %(problem)s (line %(line)s, column %(column)s).")
            % {
                "problem": found.not_json.msg,
                "line": found.not_json.lineno,
                "column": found.not_json.colno,
            },
        )
    if not form.ok:
        return page.render("verify.html", status_code=400, form=form, result=None)
    said = found.statement or {}
    result = Verified(
        found.valid,
        found.problems,
        key_id,
        project=str(said.get("project", ""))[:63],
        period=str(said.get("period", ""))[:20],
    )
    return page.render("verify.html", form=form, result=result)


def _verify(page: Page, document: bytes) -> tuple[statements.Verification, str]:
    """The statement's verification (its exact bytes: see statements.read_document) with
    this pool's key and ledger, and the key's id."""
    key = signing.pool_key(page.pool.settings.statement_key_path).public_key()
    with page.pool.verifications.held(), read_session(page.pool.engine) as session:
        found = statements.verify_statement(document, key, ledger.stream(session))
    return found, signing.key_id(key)


# --- requesting a project ------------------------------------------------------------------


@router.get("/requests/new")
async def request_form(page: SignedIn) -> Response:
    sectors = await run_in_threadpool(_sectors, page)
    return page.render("request_project.html", form=None, sectors=sectors)


@router.post("/requests/new")
async def request_project(page: SignedIn) -> Response:
    """A project request as the API's POST /projects takes it: the PI (by default the one
    asking) becomes its first member; an administrator decides on it."""
    _ = page.gettext
    form = await read_form(page.request, page.session.csrf, _)
    data: dict[str, Any] = blank_to_none(
        form.values,
        ("name", "title", "sector", "pi", "requested_gpus", "requested_gpu_hours"),
    )
    data["justification"] = form.get("justification").strip()
    if data.get("name") and not PROJECT_NAME.match(data["name"]):
        form.error(
            "name",
            _("1 to 63 characters: a-z, 0-9, '.', '_' or '-', starting with a letter or digit."),
        )
    spec = None
    try:
        spec = ProjectCreate.model_validate(data)
    except ValidationError as err:
        form.refuse(err, _)  # every field's error at once (a bad name's said above)
    if spec is not None and form.ok:
        try:
            await run_in_threadpool(_request, page, spec)
        except ServiceError as err:
            form.refuse(err, _)
        else:
            page.pool.identities_changed()  # the PI is a member now
            page.session.say(
                "ok",
                _("Project %(name)s is requested; an administrator will decide on it.")
                % {"name": spec.name},
            )
            return page.redirect(f"/projects/{spec.name}")
    sectors = await run_in_threadpool(_sectors, page)
    return page.render("request_project.html", status_code=400, form=form, sectors=sectors)


def _sectors(page: Page) -> list[str]:
    with read_session(page.pool.engine) as session:
        return [s.name for s in projects.list_sectors(session)]


def _request(page: Page, spec: ProjectCreate) -> None:
    with write_session(page.pool.engine) as session:
        projects.request_project(session, page.who, spec, page.now)


# --- a project's page ----------------------------------------------------------------------


@dataclass
class ProjectView:
    project: ProjectPublic
    changes: list[ChangePublic] | None = None  # for its PI and administrators


@router.get("/projects/{name}", dependencies=[Depends(refuse_nul)])
async def project_page(page: SignedIn, name: Annotated[str, Path(max_length=63)]) -> Response:
    view = await run_in_threadpool(_project_view, page, name)
    return page.render(
        "project.html", view=view, project=view.project, this_month=period_of(page.now)
    )


def _project_view(page: Page, name: str) -> ProjectView:
    who = page.who
    with read_session(page.pool.engine) as session:
        project = projects.project_public(session, projects.get_project(session, who, name))
        changes = None
        if who.is_admin or who.leads(name):
            changes = [
                ChangePublic.model_validate(c.model_dump())
                for c in history(session, f"project:{name}", limit=100)
            ]
        return ProjectView(project, changes)
