"""The server's SVG charts: well-formed and escaped, scaled to the data (areas stacked,
lines over them, ticks at round values), an empty chart that says so, one point drawn as
a point, gaps left as gaps."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from web.portal.charts import Chart, Series, nice_step, render, time_ticks, y_ticks

SVG = "{http://www.w3.org/2000/svg}"
T0 = 1_700_000_400.0  # a multiple of 600 s


def chart(times: list[float], *series: Series, **options: Any) -> ET.Element:
    made = Chart(
        title=options.pop("title", "GPUs"),
        summary=options.pop("summary", "GPUs over the last hour"),
        times=times,
        series=list(series),
        x_label=lambda t: f"t{int(t - T0)}",
        y_label=lambda v: f"{v:g}",
        empty="Nothing yet",
        **options,
    )
    svg = str(render(made))
    return ET.fromstring(svg)


def points(element: ET.Element) -> list[tuple[float, float]]:
    return [
        (float(x), float(y)) for x, y in (p.split(",") for p in element.attrib["points"].split())
    ]


def all_of(root: ET.Element, tag: str, cls: str = "") -> list[ET.Element]:
    return [e for e in root.iter(SVG + tag) if cls in e.attrib.get("class", "").split()]


def texts(root: ET.Element, cls: str) -> list[str]:
    return [e.text or "" for e in all_of(root, "text", cls)]


@pytest.mark.parametrize(
    ("span", "step"),
    [(10, 2), (7, 2), (100, 20), (12.5, 2.5), (3, 1), (0.4, 0.1), (0, 1), (24, 5)],
)
def test_steps_are_round(span: float, step: float) -> None:
    assert nice_step(span) == pytest.approx(step)


@pytest.mark.parametrize(
    ("top", "ticks"),
    [
        (10, [0, 2, 4, 6, 8, 10]),
        (11, [0, 2.5, 5, 7.5, 10, 12.5]),
        (1, [0, 0.2, 0.4, 0.6, 0.8, 1]),
        (16, [0, 5, 10, 15, 20]),
    ],
)
def test_the_y_axis_reaches_the_first_round_value_over_the_top(
    top: float, ticks: list[float]
) -> None:
    assert y_ticks(top) == pytest.approx(ticks)


def test_time_ticks_fall_on_round_times_within_the_span() -> None:
    assert time_ticks(T0 + 1, T0 + 3600, 7) == [T0 + 600 * i for i in range(1, 7)]
    day = time_ticks(T0, T0 + 7 * 86400, 8)
    assert len(day) <= 8 and all(t % 86400 == 0 for t in day)
    # In a time zone 9 h ahead of UTC, ticks fall on its own round hours.
    local = time_ticks(T0, T0 + 86400, 5, offset_s=9 * 3600)
    assert local and all((t + 9 * 3600) % (6 * 3600) == 0 for t in local)
    assert all(T0 <= t <= T0 + 86400 for t in local)


def test_the_structure_title_summary_legend_and_one_shape_per_series() -> None:
    times = [T0 + 60 * i for i in range(4)]
    root = chart(
        times,
        Series("Busy", [1, 2, 3, 4], "busy", kind="area"),
        Series("Idle", [1, 1, 1, 1], "idle", kind="area"),
        Series("Allocated", [2, 3, 4, 5], "allocated"),
        Series("Capacity", [8, 8, 8, 8], "capacity", dashed=True),
        unit="GPUs",
    )
    assert root.tag == SVG + "svg"
    assert root.attrib["role"] == "img"
    assert root.attrib["aria-label"] == "GPUs over the last hour"
    assert root.find(SVG + "title") is not None
    assert root.find(SVG + "title").text == "GPUs"  # type: ignore[union-attr]
    assert texts(root, "chart-key") == ["Busy", "Idle", "Allocated", "Capacity"]
    assert len(all_of(root, "polygon", "chart-busy")) == 1
    assert len(all_of(root, "polygon", "chart-idle")) == 1
    [capacity] = all_of(root, "polyline", "chart-capacity")
    assert capacity.attrib["stroke-dasharray"]
    assert len(all_of(root, "polyline", "chart-allocated")) == 1
    assert texts(root, "chart-unit") == ["GPUs"]
    # The x axis' ticks name times in the span; the y axis' run 0 .. 8 (the top value).
    assert texts(root, "chart-tick")[:5] == ["0", "2", "4", "6", "8"]
    assert [t for t in texts(root, "chart-tick") if t.startswith("t")] == [
        "t0",
        "t60",
        "t120",
        "t180",
    ]


def test_values_are_scaled_to_the_plot_and_areas_stack() -> None:
    times = [T0, T0 + 60]
    root = chart(
        times,
        Series("Busy", [2, 4], "busy", kind="area"),
        Series("Idle", [2, 4], "idle", kind="area"),
        Series("Capacity", [10, 10], "capacity"),
    )
    [frame_x, frame_y] = [all_of(root, "line", "chart-axis")[i] for i in (0, 1)]
    bottom = float(frame_x.attrib["y1"])
    top = float(frame_y.attrib["y1"])
    left, right = float(frame_x.attrib["x1"]), float(frame_x.attrib["x2"])
    [capacity] = all_of(root, "polyline", "chart-capacity")
    # 10 is the axis' top (ticks 0, 2, ..., 10): the line runs along the top edge.
    assert points(capacity) == [(left, top), (right, top)]

    def at(value: float) -> float:
        return round(bottom - value / 10 * (bottom - top), 1)

    [busy] = all_of(root, "polygon", "chart-busy")
    [idle] = all_of(root, "polygon", "chart-idle")
    assert [p[1] for p in points(busy)] == [at(2), at(4), at(0), at(0)]
    # Idle sits on busy: from busy's top to busy + idle.
    assert [p[1] for p in points(idle)] == [at(4), at(8), at(4), at(2)]
    assert [p[0] for p in points(idle)] == [left, right, right, left]


def test_a_fixed_top_and_the_range_asked_for() -> None:
    root = chart(
        [T0 + 1800],
        Series("GPU 0", [50.0], "gpu0"),
        y_max=100.0,
        x_range=(T0, T0 + 3600),
    )
    [dot] = all_of(root, "circle", "chart-gpu0")  # one point: drawn as a point
    axis = all_of(root, "line", "chart-axis")[0]
    left, right = float(axis.attrib["x1"]), float(axis.attrib["x2"])
    bottom = float(axis.attrib["y1"])
    top = float(all_of(root, "line", "chart-axis")[1].attrib["y1"])
    assert float(dot.attrib["cx"]) == pytest.approx((left + right) / 2, abs=0.1)
    assert float(dot.attrib["cy"]) == pytest.approx((top + bottom) / 2, abs=0.1)
    assert texts(root, "chart-tick")[0] == "0"
    assert "100" in texts(root, "chart-tick")


def test_one_point_without_a_range_is_centred() -> None:
    root = chart(
        [T0], Series("Busy", [3.0], "busy", kind="area"), Series("Allocated", [4.0], "allocated")
    )
    [bar] = all_of(root, "polygon", "chart-busy")
    [dot] = all_of(root, "circle", "chart-allocated")
    xs = [p[0] for p in points(bar)]
    assert min(xs) < float(dot.attrib["cx"]) < max(xs)
    assert not all_of(root, "polyline")


def test_gaps_split_a_line_and_count_zero_in_an_area() -> None:
    times = [T0 + 60 * i for i in range(5)]
    root = chart(
        times,
        Series("Allocated", [1, 2, None, 4, 5], "allocated"),
        Series("Busy", [1, None, 1, 1, 1], "busy", kind="area"),
    )
    runs = all_of(root, "polyline", "chart-allocated")
    assert [len(points(r)) for r in runs] == [2, 2]
    [busy] = all_of(root, "polygon", "chart-busy")
    assert len(points(busy)) == 10


@pytest.mark.parametrize("values", [[], [None, None]])
def test_nothing_to_draw_says_so(values: list[float | None]) -> None:
    times = [T0 + 60 * i for i in range(len(values))]
    root = chart(times, Series("Busy", values, "busy", kind="area"))
    assert texts(root, "chart-empty") == ["Nothing yet"]
    assert not all_of(root, "polygon") and not all_of(root, "polyline")
    assert texts(root, "chart-key") == ["Busy"]  # the legend still says what would be here


def test_every_text_is_escaped() -> None:
    nasty = '<script>alert("x")</script> & "quotes"'
    made = Chart(
        title=nasty,
        summary=nasty,
        times=[T0, T0 + 60],
        series=[Series(nasty, [1, 2], 'busy" onload="x', kind="area")],
        x_label=lambda t: nasty,
        y_label=lambda v: nasty,
        unit=nasty,
    )
    svg = str(render(made))
    assert "<script" not in svg and 'onload="' not in svg
    root = ET.fromstring(svg)  # well-formed
    assert root.attrib["aria-label"] == nasty
    assert root.find(SVG + "title").text == nasty  # type: ignore[union-attr]
    assert nasty in texts(root, "chart-key")
    assert re.search(r'class="chart-area chart-busyonloadx"', svg)
