"""configs/grafana-dashboard.json against what GET /metrics exports.

The metrics and labels it may use are read from a real scrape: a seeded pool (the one
tests/web uses) with a running job, a queued one and one agent report, scraped like
tests/web/api/test_metrics.py does. Every query of the dashboard is then read by a small
PromQL reader (below) that knows which labels each part of an expression carries, so a
metric the server does not export, a label matcher or `by (...)` on a label the metric lacks,
a legend naming a label the query dropped, or two sides of an operator that can never match
all fail here rather than as an empty panel.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.web.api.test_agents import Agent, gpu, report, running_job
from tests.web.conftest import POOL_TOML, open_api

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from web.settings import Settings

DASHBOARD = Path(__file__).resolve().parents[2] / "configs" / "grafana-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_COLUMNS = 24
GRAFANA_VARIABLES = {"__range", "__rate_interval", "__interval"}
# Prometheus sets these on every series it scrapes; the `job` /metrics puts on a GPU becomes
# `exported_job` (or, with honor_labels, idle GPUs get the scrape job's name): never query them.
TARGET_LABELS = {"job", "instance"}

Labels = frozenset[str] | None  # what a PromQL expression's series carry; None: a scalar


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def all_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside rows included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def query_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    return (p for p in all_panels(dashboard) if p["type"] != "row")


def variables(dashboard: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def variable_query(variable: Mapping[str, Any]) -> str:
    query = variable["query"]
    text: str = query["query"] if isinstance(query, dict) else query
    return text


# --- a small PromQL reader ------------------------------------------------------------------

METRIC = re.compile(r"DCGM_FI_[A-Z_]+|gpupool_[a-z_]+")
TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*")
     |(?P<range>\[[^\]]*\])
     |(?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
     |(?P<name>[A-Za-z_][A-Za-z0-9_:]*)
     |(?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=(){},])
    )""",
    re.VERBOSE,
)
AGGREGATIONS = {
    "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk", "bottomk",
    "quantile",
}  # fmt: skip
SCALAR_FUNCTIONS = {"time", "scalar", "pi"}
PRECEDENCE = {
    "or": 1, "and": 2, "unless": 2,
    "==": 3, "!=": 3, "<": 3, "<=": 3, ">": 3, ">=": 3,
    "+": 4, "-": 4, "*": 5, "/": 5, "%": 5, "atan2": 5, "^": 6,
}  # fmt: skip
SET_OPERATORS = {"or", "and", "unless"}


class Query:
    """One PromQL expression read against the exported metrics and their labels; what is
    wrong with it ends up in `errors`, the metrics it reads in `metrics`."""

    def __init__(self, expr: str, exported: Mapping[str, frozenset[str]]) -> None:
        self.expr, self.exported = expr, exported
        self.errors: list[str] = []
        self.metrics: set[str] = set()
        self.tokens: list[tuple[str, str]] = []
        at, end = 0, len(expr.rstrip())
        while at < end:
            match = TOKEN.match(expr, at)
            if match is None or match.lastgroup is None:
                raise ValueError(f"{expr!r}: cannot read from {expr[at:]!r}")
            self.tokens.append((match.lastgroup, match.group(match.lastgroup)))
            at = match.end()
        self.at = 0
        self.labels = self._expr(0)
        if self.at != len(self.tokens):
            raise ValueError(f"{expr!r}: cannot read from {self._peek()!r}")

    def check_legend(self, legend: str) -> None:
        """A legend's {{label}} must be a label the query's result keeps."""
        for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend):
            if self.labels is None or label not in self.labels:
                self.errors.append(f"legend {{{{{label}}}}}: not a label of the result")

    # tokens

    def _peek(self) -> str:
        return self.tokens[self.at][1] if self.at < len(self.tokens) else ""

    def _take(self, *expected: str) -> str:
        if self.at == len(self.tokens):
            raise ValueError(f"{self.expr!r}: ends too soon")
        kind, text = self.tokens[self.at]
        if expected and text not in expected:
            raise ValueError(f"{self.expr!r}: {' or '.join(expected)} expected, not {text!r}")
        self.at += 1
        return text if kind != "range" else ""

    def _label_list(self) -> frozenset[str]:
        self._take("(")
        names: list[str] = []
        while self._peek() != ")":
            names.append(self._take())
            if self._peek() == ",":
                self._take()
        self._take(")")
        for name in names:
            self._not_a_target_label(name)
        return frozenset(names)

    def _not_a_target_label(self, label: str) -> None:
        if label in TARGET_LABELS:
            self.errors.append(
                f"{label}: Prometheus sets it on every scraped series (the exported one "
                f"becomes exported_{label}), so it cannot be queried"
            )

    # grammar

    def _expr(self, lowest: int) -> Labels:
        left = self._unary()
        while (op := self._peek()) in PRECEDENCE and PRECEDENCE[op] >= lowest:
            self._take()
            if self._peek() == "bool":
                self._take()
            matching: tuple[str, frozenset[str]] | None = None
            if self._peek() in ("on", "ignoring"):
                matching = (self._take(), self._label_list())
            group = ""
            if self._peek() in ("group_left", "group_right"):
                group = self._take()
                if self._peek() == "(":
                    self._label_list()
            right = self._expr(PRECEDENCE[op] + 1)
            left = self._binary(op, left, right, matching, group)
        return left

    def _unary(self) -> Labels:
        if self._peek() in ("-", "+"):
            self._take()
        return self._primary()

    def _primary(self) -> Labels:
        kind, text = self.tokens[self.at] if self.at < len(self.tokens) else ("", "")
        self._take()
        if kind in ("number", "string"):
            return None
        if text == "(":
            inner = self._expr(0)
            self._take(")")
            return self._postfix(inner)
        if kind != "name":
            raise ValueError(f"{self.expr!r}: unexpected {text!r}")
        if text in AGGREGATIONS:
            return self._aggregation(text)
        if self._peek() == "(":
            return self._function(text)
        return self._selector(text)

    def _postfix(self, labels: Labels) -> Labels:
        while self.at < len(self.tokens) and self.tokens[self.at][0] == "range":
            self._take()
        return labels

    def _selector(self, name: str) -> Labels:
        known = name in self.exported
        if not METRIC.fullmatch(name) or not known:
            self.errors.append(f"{name}: not a metric /metrics exports")
        self.metrics.add(name)
        labels = self.exported.get(name, frozenset())
        if self._peek() == "{":
            self._take()
            while self._peek() != "}":
                label = self._take()
                self._take("=", "!=", "=~", "!~")
                self._take()  # the value
                self._not_a_target_label(label)
                if known and label not in labels:
                    self.errors.append(f"{name}{{{label}}}: {name} has no label {label}")
                if self._peek() == ",":
                    self._take()
            self._take("}")
        return self._postfix(labels)

    def _aggregation(self, name: str) -> Labels:
        clause: tuple[str, frozenset[str]] | None = None
        if self._peek() in ("by", "without"):
            clause = (self._take(), self._label_list())
        args = self._arguments()
        if clause is None and self._peek() in ("by", "without"):
            clause = (self._take(), self._label_list())
        operand = args[-1]  # topk(k, v), quantile(q, v)
        if operand is None:
            self.errors.append(f"{name}: aggregates a scalar")
            return frozenset()
        if clause is None:
            return frozenset()
        kind, named = clause
        for label in sorted(named - operand):
            self.errors.append(
                f"{name} {kind} ({label}): {label} is not a label of what it aggregates "
                f"({', '.join(sorted(operand)) or 'no labels'})"
            )
        return named if kind == "by" else operand - named

    def _function(self, name: str) -> Labels:
        args = self._arguments()
        if name in ("label_replace", "label_join"):
            raise ValueError(f"{self.expr!r}: {name} is beyond this reader; teach it first")
        if name in SCALAR_FUNCTIONS:
            return self._postfix(None)
        if name == "vector":
            return self._postfix(frozenset())
        vectors = [a for a in args if a is not None]
        return self._postfix(vectors[0] if vectors else None)

    def _arguments(self) -> list[Labels]:
        self._take("(")
        args: list[Labels] = []
        while self._peek() != ")":
            args.append(self._expr(0))
            if self._peek() == ",":
                self._take()
        self._take(")")
        return args

    def _binary(
        self,
        op: str,
        left: Labels,
        right: Labels,
        matching: tuple[str, frozenset[str]] | None,
        group: str,
    ) -> Labels:
        if left is None or right is None:
            return right if left is None else left
        if matching is not None:
            kind, named = matching
            if kind == "on":
                for side, labels in (("left", left), ("right", right)):
                    for label in sorted(named - labels):
                        self.errors.append(f"{op} on ({label}): not a label of the {side} side")
            elif op not in SET_OPERATORS and left - named != right - named:
                self.errors.append(self._mismatch(op, left - named, right - named))
        elif op not in SET_OPERATORS and not group and left != right:
            self.errors.append(self._mismatch(op, left, right))
        if op == "or":
            return left | right
        return right if group == "group_right" else left

    @staticmethod
    def _mismatch(op: str, left: frozenset[str], right: frozenset[str]) -> str:
        return (
            f"{op}: its sides carry different labels ({', '.join(sorted(left))} vs "
            f"{', '.join(sorted(right))}), so no series of one ever matches one of the other"
        )


# --- what /metrics exports ------------------------------------------------------------------


@pytest.fixture
def exported(settings: Settings, engine: Engine, tmp_path: Path) -> dict[str, frozenset[str]]:
    """Every metric family a scrape of a small busy pool shows, with its labels' names."""
    toml = tmp_path / "pool.toml"
    toml.write_text(POOL_TOML)
    with contextmanager(open_api)(settings, engine, toml) as api:
        job = running_job(api)  # allocated GPUs, on h-0
        api.submit("alice", gpus=3)  # a queue
        now = api.clock.advance(1000)
        held = gpu(0, jobs=[(job, 1)], util_gpu_pct=0.0)  # idle long enough to be flagged
        stranger = gpu(1, processes=[{"pid": 4242, "used_memory_bytes": 1024}])
        Agent(api, "h-0").ok(
            report(1, now - 700, held, stranger),
            report(2, now - 690, held | {"xids": [{"xid": 13, "at": now}]}, stranger),
        )
        answer = api.client.get("/metrics", headers=api.headers("ops"))
    assert answer.status_code == 200, answer.text
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(answer.text):
        labels[family.name] = set()
        for sample in family.samples:
            labels[family.name] |= set(sample.labels)
    unseen = sorted(name for name, names in labels.items() if not names)
    # A family without a sample here would leave its labels unknown: give it one above.
    assert not unseen, f"the seeded pool shows no sample of {unseen}"
    return {name: frozenset(names) for name, names in labels.items()}


# --- the tests ------------------------------------------------------------------------------


def test_the_dashboard_is_a_grafana_dashboard_to_import() -> None:
    dashboard = load()
    assert dashboard["title"] and dashboard["uid"]
    assert dashboard["id"] is None  # Grafana gives it one on import
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["panels"]


def test_every_panel_queries_prometheus_through_the_datasource_variable() -> None:
    dashboard = load()
    found = variables(dashboard)
    assert found["datasource"]["type"] == "datasource"
    assert found["datasource"]["query"] == "prometheus"
    for name in ("Hostname", "project"):
        assert found[name]["type"] == "query"
        assert found[name]["datasource"] == DATASOURCE
        assert variable_query(found[name]).startswith("label_values(")
    known = set(found) | GRAFANA_VARIABLES
    for panel in query_panels(dashboard):
        title = panel["title"]
        assert panel.get("datasource") == DATASOURCE, title
        assert panel.get("targets"), f"{title}: no query"
        for target in panel["targets"]:
            assert isinstance(target.get("expr"), str) and target["expr"].strip(), title
            assert target.get("datasource", DATASOURCE) == DATASOURCE, title
            used = set(re.findall(r"\$\{?(\w+)", target["expr"]))
            assert used <= known, f"{title}: unknown variables {used - known}"


def test_panels_have_unique_ids_and_places_on_the_grid_that_do_not_overlap() -> None:
    dashboard = load()
    ids = [panel["id"] for panel in all_panels(dashboard)]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= grid.keys(), panel["title"]
        h, w, x, y = (grid[k] for k in ("h", "w", "x", "y"))
        assert h > 0 and w > 0 and x >= 0 and y >= 0, panel["title"]
        assert x + w <= GRID_COLUMNS, panel["title"]
        for cell in ((col, line) for col in range(x, x + w) for line in range(y, y + h)):
            assert cell not in cells, f"{panel['title']} overlaps {cells[cell]}"
            cells[cell] = panel["title"]


def test_panels_say_what_they_show_and_in_what_unit() -> None:
    for panel in query_panels(load()):
        title = panel["title"]
        assert title.strip() and panel.get("description", "").strip(), title
        config = panel["fieldConfig"]
        units = [config["defaults"].get("unit")] + [
            p["value"] for o in config["overrides"] for p in o["properties"] if p["id"] == "unit"
        ]
        assert any(units), f"{title}: no unit"


def test_table_columns_are_named_as_grafana_names_query_values() -> None:
    """A table's value column is "Value" when it has one query, "Value #<refId>" when it
    has several: an override for the other name would silently match nothing."""
    for panel in query_panels(load()):
        refs = [target["refId"] for target in panel["targets"]]
        names = {"Value"} if len(refs) == 1 else {f"Value #{ref}" for ref in refs}
        for override in panel["fieldConfig"]["overrides"]:
            field = override["matcher"]["options"]
            if override["matcher"]["id"] == "byName" and field.startswith("Value"):
                assert field in names, f"{panel['title']}: {field} is none of {sorted(names)}"


def test_every_metric_and_label_the_dashboard_queries_is_exported(
    exported: dict[str, frozenset[str]],
) -> None:
    dashboard = load()
    errors: list[str] = []
    for panel in query_panels(dashboard):
        for target in panel["targets"]:
            query = Query(target["expr"], exported)
            query.check_legend(target.get("legendFormat", ""))
            errors += [f"{panel['title']} [{target['refId']}]: {e}" for e in query.errors]
    for name, variable in variables(dashboard).items():
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable_query(variable))
        assert match is not None, name
        metric, label = match.groups()
        if label not in exported.get(metric, ()):
            errors.append(f"variable {name}: {metric} has no label {label} (or is not exported)")
    assert not errors, "\n".join(errors)


def test_the_dashboard_shows_every_metric_the_server_exports(
    exported: dict[str, frozenset[str]],
) -> None:
    """A metric added to /metrics comes with a panel (or this test says which is missing)."""
    used: set[str] = set()
    for panel in query_panels(load()):
        for target in panel["targets"]:
            used |= Query(target["expr"], exported).metrics
    assert sorted(set(exported) - used) == []


# --- the reader itself ----------------------------------------------------------------------

SOME = {
    "gpupool_a": frozenset({"x", "y", "job"}),
    "gpupool_b": frozenset({"x"}),
}


@pytest.mark.parametrize(
    ("expr", "legend", "says"),
    [
        ('sum by (x) (rate(gpupool_a{y=~"$v"}[$__rate_interval])) / 1000', "{{x}}", None),
        ("sum(gpupool_a) / sum(gpupool_b) or vector(0)", "", None),
        ("time() - gpupool_b > 60", "{{x}}", None),
        ("count(gpupool_a < 10) or vector(0)", "", None),
        ("gpupool_a / on (x) group_left gpupool_b", "{{y}}", None),
        ("gpupool_nope", "", "gpupool_nope: not a metric"),
        ("up", "", "up: not a metric"),
        ('gpupool_b{y="1"}', "", "gpupool_b has no label y"),
        ("avg by (y) (gpupool_b)", "", "y is not a label of what it aggregates"),
        ("sum by (x) (sum by (y) (gpupool_a))", "", "x is not a label of what it aggregates"),
        ("gpupool_a / gpupool_b", "", "its sides carry different labels"),
        ("sum by (x) (gpupool_a)", "{{y}}", "legend {{y}}: not a label of the result"),
        ('gpupool_a{job!=""}', "", "job: Prometheus sets it"),
    ],
)
def test_the_reader_finds_what_would_leave_a_panel_empty(
    expr: str, legend: str, says: str | None
) -> None:
    query = Query(expr, SOME)
    query.check_legend(legend)
    if says is None:
        assert query.errors == []
    else:
        assert any(says in error for error in query.errors), query.errors
