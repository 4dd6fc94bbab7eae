"""Operators' pages: utilization over time, the GPU grid per node, the queue with its
reasons, idle allocations, draining and undraining nodes.

For operators and admins only (others get 403). Every page reads through the services the
API's routers call (web/services/nodes.py, utilization.py, projects.py), in one session in
the thread pool, with one page of rows or aggregates (never the whole pool): they stay
fast with 10,000 nodes and 100,000 jobs. Charts are SVG drawn here (web/portal/charts.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from fastapi import APIRouter, Depends, Path, Query
from fastapi.concurrency import run_in_threadpool
from markupsafe import Markup
from pydantic import ValidationError
from starlette.responses import Response

from web.api.deps import refuse_nul
from web.db import read_session, write_session
from web.models import (
    MAX_ID,
    GpuMinutePublic,
    GpuStatusPublic,
    JobPage,
    NodeDrain,
    NodeGpusPublic,
    NodePublic,
    NodeStateName,
    Role,
)
from web.portal.charts import Chart, Series, render
from web.portal.deps import Page, SignedIn
from web.portal.forms import Form, read_form
from web.portal.views.account import safe_next
from web.portal.views.researcher import ANY_FLAVOR, headline
from web.portal.words import N_, REASONS
from web.services import nodes, projects, utilization
from web.services.errors import NotFound, ServiceError
from web.services.nodes import NodePage
from web.services.telemetry import CRITICAL_XIDS
from web.services.utilization import PoolNow, ReasonCount, UtilizationOverview, UtilizationPoint

router = APIRouter(dependencies=[Depends(refuse_nul)])

PAGE_SIZE = 50
RANGES = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}
RANGE_WORDS = {
    "1h": N_("the last hour"),
    "6h": N_("the last 6 hours"),
    "24h": N_("the last 24 hours"),
    "7d": N_("the last 7 days"),
}
DEFAULT_RANGE = "6h"
NODE_HISTORY_S = 3600
GPU_KINDS = {
    "busy": N_("busy"),
    "idle": N_("idle"),
    "free": N_("free"),
    "bad": N_("bad"),
}


async def get_operator(page: SignedIn) -> Page:
    page.who.require(Role.OPERATOR, Role.ADMIN)
    return page


Operator = Annotated[Page, Depends(get_operator)]
NodeName = Annotated[str, Path(min_length=1, max_length=63)]


# --- formats for the charts ----------------------------------------------------------------


def time_label(page: Page, span_s: float) -> Callable[[float], str]:
    """A chart's x ticks in the pool's time zone: hours and minutes, or dates over days."""
    tz = ZoneInfo(page.pool.settings.timezone)
    pattern = "HH:mm" if span_s <= 86400 else "MM-dd"

    def label(moment: float) -> str:
        shown: str = format_datetime(
            datetime.fromtimestamp(moment, UTC), pattern, tzinfo=tz, locale=page.language
        )
        return shown

    return label


def utc_offset(page: Page) -> float:
    """How far the pool's time zone is ahead of UTC now, in seconds."""
    tz = ZoneInfo(page.pool.settings.timezone)
    offset = datetime.fromtimestamp(page.now, UTC).astimezone(tz).utcoffset()
    return offset.total_seconds() if offset is not None else 0.0


def number_label(page: Page) -> Callable[[float], str]:
    from web.portal.i18n import Formats

    f = Formats(page.language, page.pool.settings.timezone)
    return lambda value: f.number(value, 0 if float(value).is_integer() else 1)


def _mean(values: Sequence[float | None]) -> float:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else 0.0


def utilization_chart(
    page: Page,
    points: list[UtilizationPoint],
    title: str,
    span: tuple[float, float],
    chart_id: str,
) -> Markup:
    """Busy and idle GPUs stacked, allocated and capacity as lines, over `span`."""
    _ = page.gettext
    times = [p.at for p in points]
    allocated = [p.allocated for p in points]
    capacity = [p.capacity for p in points]
    busy = [p.busy for p in points]
    idle = [p.idle for p in points]
    number = number_label(page)
    summary = (
        _(
            "%(title)s: on average %(allocated)s GPUs allocated, %(busy)s busy and %(idle)s "
            "idle, of %(capacity)s in service."
        )
        % {
            "title": title,
            "allocated": number(round(_mean(allocated), 1)),
            "busy": number(round(_mean(busy), 1)),
            "idle": number(round(_mean(idle), 1)),
            "capacity": number(round(_mean(capacity), 1)),
        }
        if points
        else _("%(title)s: no figures for this range.") % {"title": title}
    )
    chart = Chart(
        title=title,
        summary=summary,
        times=times,
        series=[
            Series(_("Busy"), busy, "busy", kind="area"),
            Series(_("Idle"), idle, "idle", kind="area"),
            Series(_("Allocated"), allocated, "allocated"),
            Series(_("Capacity"), capacity, "capacity", dashed=True),
        ],
        x_label=time_label(page, span[1] - span[0]),
        y_label=number,
        empty=_("No figures for this range yet."),
        unit=_("GPUs"),
        x_range=span,
        x_offset_s=utc_offset(page),
        id=chart_id,
    )
    return render(chart)


def sector_chart(
    page: Page,
    found: dict[str, list[tuple[float, float]]],
    span: tuple[float, float],
) -> Markup:
    """GPUs allocated per sector, stacked."""
    _ = page.gettext
    times = sorted({t for rows in found.values() for t, _v in rows})
    series = []
    for i, (sector, rows) in enumerate(sorted(found.items())):
        values = dict(rows)
        series.append(
            Series(_(sector), [values.get(t, 0.0) for t in times], f"sector{i % 6}", kind="area")
        )
    number = number_label(page)
    title = _("GPUs allocated by sector")
    summary = (
        title
        + ": "
        + ", ".join(
            _("%(sector)s %(gpus)s on average")
            % {"sector": s.label, "gpus": number(round(_mean(s.values), 1))}
            for s in series
        )
        if series
        else _("%(title)s: no figures for this range.") % {"title": title}
    )
    return render(
        Chart(
            title=title,
            summary=summary,
            times=times,
            series=series,
            x_label=time_label(page, span[1] - span[0]),
            y_label=number,
            empty=_("No figures for this range yet."),
            unit=_("GPUs"),
            x_range=span,
            x_offset_s=utc_offset(page),
            id="chart-sectors",
        )
    )


# --- the overview: utilization over time -----------------------------------------------------


@dataclass
class Overview:
    now: PoolNow
    charts: UtilizationOverview
    flavors: list[str]  # those with GPUs
    sector_names: list[str]


@router.get("/ops")
async def overview(
    page: Operator,
    span_name: Annotated[str, Query(alias="range", max_length=10)] = DEFAULT_RANGE,
    sector: Annotated[str, Query(max_length=63)] = "",
) -> Response:
    """Utilization over the range chosen (GPUs allocated, busy, idle and in service), for
    the whole pool and per flavor, optionally of one sector; GPUs allocated per sector;
    the figures of the moment."""
    _ = page.gettext
    form = Form(values={"range": span_name, "sector": sector})
    if span_name not in RANGES:
        form.error("range", _("Must be one of: %(expected)s.") % {"expected": ", ".join(RANGES)})
    chosen = span_name if span_name in RANGES else DEFAULT_RANGE
    now = page.now
    span = (now - RANGES[chosen], now)
    view = await run_in_threadpool(_overview, page, form, span)
    whole = _("All GPUs")
    charts = [
        (whole, utilization_chart(page, view.charts.whole, whole, span, "chart-all")),
        *(
            (
                flavor,
                utilization_chart(
                    page, view.charts.flavors.get(flavor, []), flavor, span, f"chart-flavor-{i}"
                ),
            )
            for i, flavor in enumerate(view.flavors)
        ),
    ]
    return page.render(
        "ops_overview.html",
        status_code=200 if form.ok else 400,
        form=form,
        view=view,
        charts=charts,
        sector_options=[("", _("All")), *((name, _(name)) for name in view.sector_names)],
        by_sector=sector_chart(page, view.charts.sectors, span)
        if not form.get("sector") or "sector" in form.errors
        else None,
        ranges=[(key, _(RANGE_WORDS[key])) for key in RANGES],
        range_words=_(RANGE_WORDS[chosen]),
        bucket_s=view.charts.bucket_s,
    )


def _overview(page: Page, form: Form, span: tuple[float, float]) -> Overview:
    _ = page.gettext
    who = page.who
    since, until = span
    with read_session(page.pool.engine) as session:
        names = utilization.sector_names(session)
        sector = form.get("sector") or None
        if sector is not None and sector not in names:
            form.error("sector", _("No such sector."))
            sector = None
        now = utilization.pool_now(session, who, page.now)
        charts = utilization.overview(session, who, since, until, sector=sector)
        flavors = [f.name for f in nodes.list_flavors(session) if f.gpus]
    return Overview(now, charts, flavors, names)


# --- nodes -----------------------------------------------------------------------------------


def gpu_kind(gpu: GpuStatusPublic, idle_pct: float) -> str:
    """busy, idle (a job's GPU under the idle threshold), free (no job's), or bad (an
    uncorrectable ECC error, a critical Xid, or fields the agent could not read)."""
    if (gpu.ecc_uncorrected or 0) > 0 or gpu.last_xid in CRITICAL_XIDS or gpu.errors:
        return "bad"
    if not gpu.jobs:
        return "free"
    if gpu.util_gpu_pct is not None and gpu.util_gpu_pct >= idle_pct:
        return "busy"
    return "idle"


@dataclass
class NodesView:
    found: NodePage
    flavors: list[str]
    groups: list[str]


@router.get("/ops/nodes")
async def nodes_list(
    page: Operator,
    state: Annotated[str, Query(max_length=16)] = "",
    flavor: Annotated[str, Query(max_length=63)] = "",
    group: Annotated[str, Query(max_length=63)] = "",
    q: Annotated[str, Query(max_length=63)] = "",
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> Response:
    """The nodes, down and draining first, 50 a page, each with its GPU grid and its
    drain or undrain form; filtered by state, flavor and group, searched by name."""
    _ = page.gettext
    form = Form(values={"state": state, "flavor": flavor, "group": group, "q": q})
    view = await run_in_threadpool(_nodes_view, page, form, offset)
    params = {k: v for k, v in form.values.items() if v and k not in form.errors}
    every = ("", _("All"))
    options = {
        "state": [every, *((s.value, _(s.value)) for s in NodeStateName)],
        "flavor": [every, *((f, f) for f in view.flavors)],
        "group": [every, *((g, g) for g in view.groups)],
    }
    return page.render(
        "ops_nodes.html",
        status_code=200 if form.ok else 400,
        form=form,
        view=view,
        params=params,
        options=options,
        limit=PAGE_SIZE,
        offset=offset,
        kind=lambda gpu: gpu_kind(gpu, page.pool.settings.idle_util_pct),
        kinds=GPU_KINDS,
    )


def _nodes_view(page: Page, form: Form, offset: int) -> NodesView:
    _ = page.gettext
    with read_session(page.pool.engine) as session:
        flavors = [f.name for f in nodes.list_flavors(session)]
        groups = nodes.node_groups(session)
        state, flavor, group = form.get("state"), form.get("flavor"), form.get("group")
        if state and state not in {s.value for s in NodeStateName}:
            form.error("state", _("No such state."))
        if flavor and flavor not in flavors:
            form.error("flavor", _("No such flavor."))
        if group and group not in groups:
            form.error("group", _("No such group."))
        found = nodes.node_page(
            session,
            page.who,
            state=NodeStateName(state) if state and "state" not in form.errors else None,
            flavor=flavor if flavor and "flavor" not in form.errors else None,
            group=group if group and "group" not in form.errors else None,
            search=form.get("q").strip() or None,
            limit=PAGE_SIZE,
            offset=offset,
        )
        return NodesView(found, flavors, groups)


@dataclass
class NodeView:
    node: NodePublic
    gpus: NodeGpusPublic
    history: list[GpuMinutePublic]


@router.get("/ops/nodes/{name}")
async def node_page(page: Operator, name: NodeName) -> Response:
    view = await run_in_threadpool(_node_view, page, name)
    return _render_node(page, view, None)


def _node_view(page: Page, name: str) -> NodeView:
    now = page.now
    with read_session(page.pool.engine) as session:
        node = nodes.get_node(session, name)  # NotFound: the portal's 404
        [public] = nodes.public_nodes(session, [node])
        gpus = nodes.node_gpus(session, page.who, name)
        history = nodes.node_history(session, page.who, name, now - NODE_HISTORY_S, now + 60)
        return NodeView(public, gpus, history)


def _render_node(page: Page, view: NodeView, form: Form | None, status_code: int = 200) -> Response:
    _ = page.gettext
    now = page.now
    span = (now - NODE_HISTORY_S, now)
    return page.render(
        "ops_node.html",
        status_code=status_code,
        form=form,
        view=view,
        kind=lambda gpu: gpu_kind(gpu, page.pool.settings.idle_util_pct),
        kinds=GPU_KINDS,
        xids=CRITICAL_XIDS,
        charts=[
            (
                title,
                gpu_history_chart(page, view.history, what, title, unit, span, chart_id, top),
            )
            for what, title, unit, chart_id, top in (
                (
                    "util_gpu_pct",
                    _("GPU utilization over the last hour"),
                    _("Utilization (%)"),
                    "chart-util",
                    100.0,
                ),
                (
                    "temp_c",
                    _("GPU temperature over the last hour"),
                    _("Temperature (°C)"),
                    "chart-temp",
                    None,
                ),
            )
        ],
    )


def gpu_history_chart(
    page: Page,
    history: list[GpuMinutePublic],
    what: str,
    title: str,
    unit: str,
    span: tuple[float, float],
    chart_id: str,
    y_max: float | None = None,
) -> Markup:
    """One line per GPU of the node, a point per minute."""
    _ = page.gettext
    times = sorted({r.minute.timestamp() for r in history})
    by_gpu: dict[int, dict[float, float | None]] = {}
    for r in history:
        by_gpu.setdefault(r.gpu_index, {})[r.minute.timestamp()] = getattr(r, what)
    number = number_label(page)
    series = [
        Series(
            _("GPU %(index)s") % {"index": index}, [values.get(t) for t in times], f"gpu{index % 8}"
        )
        for index, values in sorted(by_gpu.items())
    ]
    means = ", ".join(f"{s.label} {number(round(_mean(s.values), 1))}" for s in series)
    summary = (
        _("%(title)s, the mean of each GPU: %(means)s.") % {"title": title, "means": means}
        if series
        else _("%(title)s: no figures for this range.") % {"title": title}
    )
    return render(
        Chart(
            title=title,
            summary=summary,
            times=times,
            series=series,
            x_label=time_label(page, span[1] - span[0]),
            y_label=number,
            empty=_("No figures for this range yet."),
            unit=unit,
            x_range=span,
            x_offset_s=utc_offset(page),
            y_max=y_max,
            id=chart_id,
        )
    )


@router.post("/ops/nodes/{name}/drain")
async def drain(page: Operator, name: NodeName) -> Response:
    """Drain the node (no new jobs; running ones finish), with the reason given."""
    _ = page.gettext
    form = await read_form(page.request, page.session.csrf, _)
    reason = form.get("reason").strip()
    if form.ok:
        try:
            NodeDrain(reason=reason)
        except ValidationError as err:
            form.refuse(err, _)
    return await _set_drain(page, form, name, True, reason)


@router.post("/ops/nodes/{name}/undrain")
async def undrain(page: Operator, name: NodeName) -> Response:
    """Return a draining node to service."""
    form = await read_form(page.request, page.session.csrf, page.gettext)
    return await _set_drain(page, form, name, False, "")


async def _set_drain(page: Page, form: Form, name: str, draining: bool, reason: str) -> Response:
    _ = page.gettext
    if form.ok:
        try:
            await run_in_threadpool(_write_drain, page, name, draining, reason)
        except ServiceError as err:
            if isinstance(err, NotFound):
                raise
            form.refuse(err, _)
        else:
            page.pool.pool_changed()
            if draining:
                page.session.say("ok", _("Node %(name)s is draining.") % {"name": name})
            else:
                page.session.say("ok", _("Node %(name)s is back in service.") % {"name": name})
            target = form.get("next")
            return page.redirect(safe_next(target) if target else f"/ops/nodes/{name}")
    view = await run_in_threadpool(_node_view, page, name)
    return _render_node(page, view, form, status_code=400)


def _write_drain(page: Page, name: str, draining: bool, reason: str) -> None:
    with write_session(page.pool.engine) as session:
        nodes.set_drain(session, page.who, name, draining, reason, page.now)


# --- the queue -------------------------------------------------------------------------------


@dataclass
class QueueView:
    found: JobPage
    reasons: list[ReasonCount]
    projects: list[str]
    flavors: list[str]


@router.get("/ops/queue")
async def queue(
    page: Operator,
    project: Annotated[str, Query(max_length=63)] = "",
    flavor: Annotated[str, Query(max_length=63)] = "",
    reason: Annotated[str, Query(max_length=32)] = "",
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> Response:
    """The queued jobs of every project, oldest first, each with why it waits and its
    estimated start; the number waiting for each reason."""
    _ = page.gettext
    form = Form(values={"project": project, "flavor": flavor, "reason": reason})
    view = await run_in_threadpool(_queue_view, page, form, offset)
    params = {k: v for k, v in form.values.items() if v and k not in form.errors}
    every = ("", _("All"))
    codes = sorted({*REASONS, *(r.code for r in view.reasons)})
    options = {
        "project": [every, *((p, p) for p in view.projects)],
        "flavor": [every, (ANY_FLAVOR, _("any")), *((f, f) for f in view.flavors)],
        "reason": [every, *((c, reason_words(page, c)) for c in codes)],
    }
    return page.render(
        "ops_queue.html",
        status_code=200 if form.ok else 400,
        form=form,
        view=view,
        params=params,
        options=options,
        limit=PAGE_SIZE,
        offset=offset,
        headline=headline,
        reason_words=lambda code: reason_words(page, code),
        any_flavor=ANY_FLAVOR,
    )


def reason_words(page: Page, code: str) -> str:
    """A reason code in the page's words (the code itself where it has none)."""
    words = headline(code)
    return page.gettext(words) if words else (code or page.gettext("no reason given"))


def _queue_view(page: Page, form: Form, offset: int) -> QueueView:
    _ = page.gettext
    who = page.who
    with read_session(page.pool.engine) as session:
        names = [p.name for p in projects.list_projects(session, who, None)]
        flavors = [f.name for f in nodes.list_flavors(session)]
        project, flavor = form.get("project"), form.get("flavor")
        if project and project not in names:
            form.error("project", _("No such project."))
        if flavor and flavor != ANY_FLAVOR and flavor not in flavors:
            form.error("flavor", _("No such flavor."))
        chosen_project = project if project and "project" not in form.errors else None
        chosen_flavor = flavor if flavor and "flavor" not in form.errors else None
        reasons = utilization.queue_reasons(
            session, who, project=chosen_project, flavor=chosen_flavor
        )
        found = utilization.queue_page(
            session,
            who,
            project=chosen_project,
            flavor=chosen_flavor,
            reason_code=form.get("reason") or None,
            limit=PAGE_SIZE,
            offset=offset,
        )
        return QueueView(found, reasons, names, flavors)


# --- idle allocations ------------------------------------------------------------------------


@router.get("/ops/idle")
async def idle(page: Operator, offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0) -> Response:
    """Running jobs whose GPUs have all been idle for GPUPOOL_IDLE_FLAG_AFTER_S or more,
    the longest idle first."""
    found = await run_in_threadpool(_idle_view, page, offset)
    return page.render(
        "ops_idle.html",
        found=found,
        limit=PAGE_SIZE,
        offset=offset,
        flag_after_s=page.pool.settings.idle_flag_after_s,
        idle_for=lambda since: page.now - since.timestamp(),
    )


def _idle_view(page: Page, offset: int) -> JobPage:
    flag_before = page.now - page.pool.settings.idle_flag_after_s
    with read_session(page.pool.engine) as session:
        return utilization.idle_page(session, page.who, flag_before, limit=PAGE_SIZE, offset=offset)
