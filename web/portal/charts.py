"""SVG charts drawn on the server: no JavaScript and nothing fetched, so they work on any
page, phone or printout.

A chart is time on x and one quantity on y: stacked areas (busy and idle GPUs, say) and
lines over them (allocated, capacity), with axes, gridlines with tick labels, a legend, a
<title> and an aria-label summary for screen readers. The caller gives every text already
translated and the functions that write its numbers and times; everything is escaped here.
Colours come from the page's CSS (classes chart-<style>), so the charts follow its theme.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from markupsafe import Markup, escape

# Steps between the x axis' ticks, in seconds: the smallest that keeps the ticks apart.
TIME_STEPS = (
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    2 * 3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86400,
    2 * 86400,
    7 * 86400,
    14 * 86400,
    30 * 86400,
)
STYLE = re.compile(r"[^a-z0-9-]")


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    values: Sequence[float | None]  # one per time; None: not known there (a gap)
    style: str  # the CSS class chart-<style> colours it
    kind: Literal["area", "line"] = "line"
    dashed: bool = False


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    summary: str  # what a screen reader says of the whole chart
    times: Sequence[float]  # seconds since the epoch, increasing
    series: Sequence[Series]
    x_label: Callable[[float], str]  # a tick's time, as the page writes it
    y_label: Callable[[float], str]  # a tick's value
    empty: str = "No data"  # said in the chart's place when there is nothing to draw
    unit: str = ""  # the y axis' title
    x_range: tuple[float, float] | None = None  # the span shown (default: the times')
    y_max: float | None = None  # a fixed top (100 for percentages); default: from the data
    x_offset_s: float = 0.0  # the page's time zone's offset: ticks fall on its round times
    width: int = 720
    height: int = 260
    id: str = ""


LEFT, RIGHT, BOTTOM, LEGEND_ROW = 60.0, 16.0, 30.0, 20.0


def nice_step(span: float, ticks: int = 5) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) that cuts `span` into about
    `ticks` parts."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= factor * power * (1 + 1e-9):
            return factor * power
    return 10.0 * power


def y_ticks(top: float, ticks: int = 5) -> list[float]:
    """0, step, ... up to the first multiple of the step at or over `top`."""
    step = nice_step(top, ticks)
    count = max(1, math.ceil(top / step - 1e-9))
    return [round(i * step, 10) for i in range(count + 1)]


def time_ticks(start: float, end: float, most: int, offset_s: float = 0.0) -> list[float]:
    """Times at a round step (TIME_STEPS) within [start, end], at most `most` of them;
    round in the time zone `offset_s` ahead of UTC."""
    span = end - start
    for step in TIME_STEPS:
        if span / step <= most:
            break
    first = math.ceil((start + offset_s) / step) * step - offset_s
    return [first + i * step for i in range(int((end - first) // step) + 1)]


def _text_width(text: str, size: float = 12.0) -> float:
    """A guess at the width of `text` (wide characters count double)."""
    return sum(size if ord(ch) >= 0x2E80 else size * 0.58 for ch in text)


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def render(chart: Chart) -> Markup:
    """The chart as an inline <svg> element."""
    w, h = float(chart.width), float(chart.height)
    legend = _legend_rows(chart.series, w - LEFT - RIGHT)
    top = 12.0 + LEGEND_ROW * max(1, len(legend)) + (14.0 if chart.unit else 0.0)
    left, right, bottom = LEFT, w - RIGHT, h - BOTTOM
    parts: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {_fmt(w)} '
        f'{_fmt(h)}" role="img" aria-label="{escape(chart.summary)}"'
        + (f' id="{escape(chart.id)}"' if chart.id else "")
        + ">",
        f"<title>{escape(chart.title)}</title>",
    ]
    parts += _legend(legend, left, 12.0)
    if chart.unit:
        parts.append(
            f'<text class="chart-unit" x="{_fmt(left)}" y="{_fmt(top - 6)}">'
            f"{escape(chart.unit)}</text>"
        )
    drawable = [s for s in chart.series if any(v is not None for v in s.values)]
    if not chart.times or not drawable:
        parts.append(
            f'<rect class="chart-frame" x="{_fmt(left)}" y="{_fmt(top)}" '
            f'width="{_fmt(right - left)}" height="{_fmt(bottom - top)}"/>'
        )
        parts.append(
            f'<text class="chart-empty" x="{_fmt((left + right) / 2)}" '
            f'y="{_fmt((top + bottom) / 2)}" text-anchor="middle">{escape(chart.empty)}</text>'
        )
        parts.append("</svg>")
        return Markup("".join(parts))

    times = list(chart.times)
    start, end = chart.x_range or (times[0], times[-1])
    if end <= start:
        start, end = start - 30.0, start + 30.0

    stacks = _stacked(chart.series, len(times))
    highest = max(
        [0.0]
        + [v for area in stacks.values() for v in area[1]]
        + [v for s in chart.series if s.kind == "line" for v in s.values if v is not None]
    )
    ceiling = chart.y_max if chart.y_max is not None else highest
    ticks = y_ticks(ceiling if ceiling > 0 else 1.0)
    y_top = ticks[-1] if chart.y_max is None else chart.y_max

    def x(t: float) -> float:
        return left + (t - start) / (end - start) * (right - left)

    def y(v: float) -> float:
        return bottom - min(max(v, 0.0), y_top) / y_top * (bottom - top)

    # Gridlines and the y axis' labels.
    for tick in ticks:
        if tick > y_top + 1e-9:
            continue
        parts.append(
            f'<line class="chart-grid" x1="{_fmt(left)}" x2="{_fmt(right)}" '
            f'y1="{_fmt(y(tick))}" y2="{_fmt(y(tick))}"/>'
        )
        parts.append(
            f'<text class="chart-tick" x="{_fmt(left - 6)}" y="{_fmt(y(tick) + 4)}" '
            f'text-anchor="end">{escape(chart.y_label(tick))}</text>'
        )
    most = max(2, int((right - left) // 90))
    for t in time_ticks(start, end, most, chart.x_offset_s):
        parts.append(
            f'<line class="chart-grid" x1="{_fmt(x(t))}" x2="{_fmt(x(t))}" '
            f'y1="{_fmt(top)}" y2="{_fmt(bottom)}"/>'
        )
        parts.append(
            f'<text class="chart-tick" x="{_fmt(x(t))}" y="{_fmt(bottom + 18)}" '
            f'text-anchor="middle">{escape(chart.x_label(t))}</text>'
        )

    # Areas, stacked in the order given; then lines over them.
    for series in chart.series:
        if series.kind != "area":
            continue
        base, upper = stacks[series.label + "\x00" + series.style]
        if len(times) == 1:
            half = max(2.0, (right - left) / 100)
            cx = x(times[0])
            points = [
                (cx - half, y(upper[0])),
                (cx + half, y(upper[0])),
                (cx + half, y(base[0])),
                (cx - half, y(base[0])),
            ]
        else:
            points = [(x(t), y(v)) for t, v in zip(times, upper, strict=True)]
            points += [(x(t), y(v)) for t, v in reversed(list(zip(times, base, strict=True)))]
        parts.append(
            f'<polygon class="chart-area chart-{_style(series.style)}" points="'
            + " ".join(f"{_fmt(px)},{_fmt(py)}" for px, py in points)
            + '"/>'
        )
    for series in chart.series:
        if series.kind != "line":
            continue
        dash = ' stroke-dasharray="6 4"' if series.dashed else ""
        for run in _runs(times, series.values):
            if len(run) == 1:
                t, v = run[0]
                parts.append(
                    f'<circle class="chart-dot chart-{_style(series.style)}" '
                    f'cx="{_fmt(x(t))}" cy="{_fmt(y(v))}" r="3"/>'
                )
                continue
            parts.append(
                f'<polyline class="chart-line chart-{_style(series.style)}"{dash} points="'
                + " ".join(f"{_fmt(x(t))},{_fmt(y(v))}" for t, v in run)
                + '"/>'
            )
    parts.append(
        f'<line class="chart-axis" x1="{_fmt(left)}" x2="{_fmt(right)}" '
        f'y1="{_fmt(bottom)}" y2="{_fmt(bottom)}"/>'
    )
    parts.append(
        f'<line class="chart-axis" x1="{_fmt(left)}" x2="{_fmt(left)}" '
        f'y1="{_fmt(top)}" y2="{_fmt(bottom)}"/>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))


def _style(name: str) -> str:
    return STYLE.sub("", name.lower()) or "plain"


def _stacked(series: Sequence[Series], length: int) -> dict[str, tuple[list[float], list[float]]]:
    """Each area's (base, top) per time, stacked in the order given (a gap counts 0)."""
    base = [0.0] * length
    stacks: dict[str, tuple[list[float], list[float]]] = {}
    for s in series:
        if s.kind != "area":
            continue
        values = [float(v or 0.0) for v in s.values][:length]
        values += [0.0] * (length - len(values))
        upper = [b + max(v, 0.0) for b, v in zip(base, values, strict=True)]
        stacks[s.label + "\x00" + s.style] = (base, upper)
        base = upper
    return stacks


def _runs(
    times: Sequence[float], values: Sequence[float | None]
) -> list[list[tuple[float, float]]]:
    """The line's stretches between gaps."""
    runs: list[list[tuple[float, float]]] = [[]]
    for t, v in zip(times, values, strict=False):
        if v is None:
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append((t, float(v)))
    return [run for run in runs if run]


def _legend_rows(series: Sequence[Series], width: float) -> list[list[tuple[Series, float]]]:
    """The legend's items in rows that fit `width`: (series, its width)."""
    rows: list[list[tuple[Series, float]]] = [[]]
    used = 0.0
    for s in series:
        item = 22.0 + _text_width(s.label) + 16.0
        if rows[-1] and used + item > width:
            rows.append([])
            used = 0.0
        rows[-1].append((s, item))
        used += item
    return [row for row in rows if row]


def _legend(rows: list[list[tuple[Series, float]]], left: float, top: float) -> list[str]:
    parts = ['<g class="chart-legend">']
    for i, row in enumerate(rows):
        cy = top + i * LEGEND_ROW + 6
        cx = left
        for s, item in row:
            style = _style(s.style)
            if s.kind == "area":
                parts.append(
                    f'<rect class="chart-area chart-{style}" x="{_fmt(cx)}" y="{_fmt(cy - 6)}" '
                    'width="16" height="12"/>'
                )
            else:
                dash = ' stroke-dasharray="4 3"' if s.dashed else ""
                parts.append(
                    f'<line class="chart-line chart-{style}"{dash} x1="{_fmt(cx)}" '
                    f'x2="{_fmt(cx + 16)}" y1="{_fmt(cy)}" y2="{_fmt(cy)}"/>'
                )
            parts.append(
                f'<text class="chart-key" x="{_fmt(cx + 22)}" y="{_fmt(cy + 4)}">'
                f"{escape(s.label)}</text>"
            )
            cx += item
    parts.append("</g>")
    return parts
