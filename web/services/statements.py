"""Usage statements: what a project used and was charged in a period, from the ledger,
signed with the pool's key, so that a funding agency can accept it without receipts and
anyone can check it.

A statement for (project, period: YYYY-MM, YYYY-Qn or YYYY) is built from the project's
ledger entries whose period falls in it (an entry without a period, a grant, counts in the
month of its `at`), up to the ledger's head when it is made. It holds:
- totals (GPU-hours, borrowed GPU-hours, credits, energy kWh, mean utilization, idle
  GPU-hours) over the charges and refunds, by flavor, by user and by job;
- credits: the balance before the period (`opening`), granted, used (charges net of
  refunds), earned (lending rewards), left at the period's end (opening + the entries'
  amounts) and left now (every entry of the project to the head);
- idle GPU-hours and the ten jobs that held idle GPUs longest;
- every entry it is built from (all their fields, prev_hash and hash, as a table:
  `entries.fields` names the columns of `entries.rows`) and the ledger's head (id, hash);
- `public_key`, the signing key's id, and `signature`: Ed25519 over the statement's
  canonical JSON (keys sorted, no spaces, floats as Python writes them) without its
  `signature` member.

The JSON form is that canonical JSON with the signature: the signed form, the one to keep
and to verify. CSV and HTML show the same figures and carry the signature, but only the
JSON can be verified (the signature covers its exact bytes).

`verify_statement` checks a statement without trusting whoever hands it over. First that
the document is exactly the signed form of what it holds (read_document): UTF-8 without a
byte order mark, JSON with no duplicate key at any depth, no NaN or Infinity, integers of
64 bits and finite doubles, nested no deeper than MAX_DEPTH, nothing after it, and byte for
byte the canonical JSON of its own content (so no whitespace, reordered keys, \\u escapes
where the canonical form has the character, other number spellings). A reader and the
verifier then see the same thing: nothing a last-wins parser would read differently from a
person, a pretty-printed copy or an editor's re-save verifies. Then the signature over those
bytes, every figure against what its listed entries sum to, each entry's hash against its
content, the entries' order, that each belongs to the project and period; and, given the
ledger, that each entry is in it unchanged, that none of the project's entries in the
period is left out, the balances, and the chain from GENESIS to the statement's head.
Each problem is said in words that name the rule that fails; the verifier never raises on
what it is given.

Usage figures are exact sums of the entries (doubles, added in id order), credits rounded
to 6 decimals; the builder and the verifier compute them by the same function. The two
balances that sum entries outside the statement (opening, left_now) are checked against
the ledger to 1e-6 credits.
"""

from __future__ import annotations

import csv
import gc
import html
import io
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from math import fsum
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Engine, and_, func, or_, select
from sqlmodel import Session

from web.db import read_session
from web.models import LedgerEntry
from web.services import signing
from web.services.auth import Principal
from web.services.errors import Invalid
from web.services.ledger import GENESIS, HEAD, LEDGER, check_chain, entry_hash
from web.services.metering import period_of
from web.services.projects import get_project

FORMAT_VERSION = 1
KIND = "gpupool usage statement"
ENTRY_FIELDS = tuple(LedgerEntry.model_fields)  # id, at, kind, ..., prev_hash, hash
_AT = ENTRY_FIELDS.index("at")
_ID, _KIND, _PROJECT, _AMOUNT = (ENTRY_FIELDS.index(n) for n in ("id", "kind", "project", "amount"))
_PERIOD, _JOB, _ATTEMPT, _USER = (
    ENTRY_FIELDS.index(n) for n in ("period", "job_id", "attempt", "user")
)
_FLAVOR, _GPU_S, _BORROWED = (ENTRY_FIELDS.index(n) for n in ("flavor", "gpu_s", "borrowed"))
_ENERGY, _UTIL, _BUSY, _IDLE = (
    ENTRY_FIELDS.index(n) for n in ("energy_j", "util_gpu_s", "busy_gpu_s", "idle_gpu_s")
)
_HASH = ENTRY_FIELDS.index("hash")
TOP_IDLE_JOBS = 10
USAGE_COLUMNS = (
    "gpu_hours",
    "borrowed_gpu_hours",
    "credits",
    "energy_kwh",
    "mean_util_pct",
    "idle_gpu_hours",
)
JOB_FIELDS = ("job_id", "user", "attempts", *USAGE_COLUMNS)
FORMATS = ("json", "csv", "html")
# ASCII digits only (\d is any script's), the whole text (fullmatch: `$` allows a newline).
_PERIOD_SYNTAX = re.compile(r"([0-9]{4})(?:-([0-9]{2})|-Q([1-4]))?", re.ASCII)


# --- periods ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    name: str  # as asked: 2026-03, 2026-Q4, 2026
    months: tuple[str, ...]  # YYYY-MM, in order
    start: float  # its first moment (UTC)
    end: float  # the first moment after it

    def holds(self, entry_period: str, at: float) -> bool:
        return (entry_period or period_of(at)) in self.months


def parse_period(text: str) -> Period:
    """YYYY-MM, YYYY-Qn or YYYY; Invalid naming `period` otherwise."""
    match = _PERIOD_SYNTAX.fullmatch(text)
    year = int(match.group(1)) if match else 0
    month = int(match.group(2)) if match and match.group(2) else None
    if match is None or not 1970 <= year <= 9998 or (month is not None and not 1 <= month <= 12):
        raise Invalid(
            f"{_brief(text)} is not a period: give a month (2026-03), a quarter (2026-Q4) or a "
            "year (2026), from 1970, in ASCII digits",
            field="period",
        )
    if month is not None:
        first, count = month, 1
    elif match.group(3):
        first, count = 3 * int(match.group(3)) - 2, 3
    else:
        first, count = 1, 12
    months = tuple(f"{year:04d}-{m:02d}" for m in range(first, first + count))
    last = first + count - 1
    start = datetime(year, first, 1, tzinfo=UTC)
    end = (
        datetime(year + 1, 1, 1, tzinfo=UTC)
        if last == 12
        else datetime(year, last + 1, 1, tzinfo=UTC)
    )
    return Period(text, months, start.timestamp(), end.timestamp())


@dataclass(frozen=True, slots=True)
class SignedStatement:
    content: dict[str, Any]  # signature included
    json: bytes  # its signed form (canonical JSON), encoded once

    def render(self, form: str) -> tuple[bytes, str]:
        """(body, media type) in one of FORMATS."""
        if form == "json":
            return self.json, "application/json"
        return render(self.content, form)


# --- building --------------------------------------------------------------------------------


def build_statement(
    session: Session,
    asker: Principal,
    project_name: str,
    period_text: str,
    key: Ed25519PrivateKey,
    now: float,
) -> SignedStatement:
    """The signed statement of `project_name` (one the asker may see) for the period."""
    with collector_paused():
        return _build(session, asker, project_name, period_text, key, now)


def rendered_statement(
    engine: Engine,
    asker: Principal,
    project_name: str,
    period_text: str,
    form: str,
    key: Ed25519PrivateKey,
    now: float,
) -> tuple[bytes, str]:
    """(body, media type) of the signed statement in one of FORMATS: what the API's
    GET /projects/{name}/statements/{period} and the portal's downloads answer."""
    with read_session(engine) as session:
        signed = build_statement(session, asker, project_name, period_text, key, now)
    return signed.render(form)


def _build(
    session: Session,
    asker: Principal,
    project_name: str,
    period_text: str,
    key: Ed25519PrivateKey,
    now: float,
) -> SignedStatement:
    project = get_project(session, asker, project_name)
    period = parse_period(period_text)
    head = session.execute(select(HEAD.c.last_id, HEAD.c.last_hash).where(HEAD.c.id == 1)).first()
    head_id, head_hash = (0, GENESIS) if head is None else (int(head[0]), str(head[1]))
    # Entries past the head read first are left out: on PostgreSQL each query sees what was
    # committed when it began, and entries are committed with the head that counts them.
    mine = and_(LEDGER.c.project == project.name, LEDGER.c.id <= head_id)
    in_period = or_(
        LEDGER.c.period.in_(period.months),
        and_(LEDGER.c.period == "", LEDGER.c.at >= period.start, LEDGER.c.at < period.end),
    )
    before = or_(
        and_(LEDGER.c.period != "", LEDGER.c.period < period.months[0]),
        and_(LEDGER.c.period == "", LEDGER.c.at < period.start),
    )
    columns = [LEDGER.c[name] for name in ENTRY_FIELDS]
    rows = [
        list(row)
        for row in session.execute(select(*columns).where(mine, in_period).order_by(LEDGER.c.id))
    ]
    opening = _sum(session, and_(mine, before))
    left_now = _sum(session, mine)
    figures = summarize(rows, opening)
    figures["credits"]["left_now"] = _round(left_now)
    figures["credits"]["budgeted"] = project.credits is not None
    statement: dict[str, Any] = {
        "kind": KIND,
        "version": FORMAT_VERSION,
        "project": project.name,
        "project_title": project.title,
        "pi": project.pi,
        "period": period.name,
        "period_start": _iso(period.start),
        "period_end": _iso(period.end),
        "months": list(period.months),
        "made_at": _iso(now),
        "ledger_head": {"id": head_id, "hash": head_hash},
        **figures,
        "entries": {"fields": list(ENTRY_FIELDS), "rows": rows},
        "public_key": signing.key_id(key.public_key()),
    }
    members = _canonical_members(statement)
    statement["signature"] = signature = signing.sign(key, _join(members))
    members.append(("signature", _ENCODE(signature)))
    members.sort()
    return SignedStatement(statement, _join(members))


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a statement's hundreds of thousands of
    rows and sums are made or checked: they form no cycles, and the collections their
    number sets off would double the time. On again after (if it was on before)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def _sum(session: Session, where: Any) -> float:
    total = session.execute(select(func.sum(LEDGER.c.amount)).where(where)).scalar()
    return float(total or 0.0)


def summarize(rows: Sequence[Sequence[Any]], opening: float) -> dict[str, Any]:
    """The figures of a statement's entries (rows in ENTRY_FIELDS order): its totals,
    credits (from `opening`, the balance before the period) and idle time. Usage is that
    of the charges and refunds; every sum is math.fsum's, exactly rounded, so it depends
    neither on the order of the entries nor on how a Python version adds floats."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(ENTRY_FIELDS)
    kinds, amounts = columns[_KIND], columns[_AMOUNT]
    usage = [i for i, kind in enumerate(kinds) if kind == "charge" or kind == "refund"]
    gpu_s = columns[_GPU_S]
    borrowed = [g if b else 0.0 for g, b in zip(gpu_s, columns[_BORROWED], strict=True)]
    figures = (gpu_s, borrowed, amounts, *(columns[i] for i in (_ENERGY, _UTIL, _BUSY, _IDLE)))

    def sums(index: list[int]) -> list[float]:
        if len(index) == 1:
            return [column[index[0]] for column in figures]
        return [fsum(map(column.__getitem__, index)) for column in figures]

    def grouped(column: Sequence[Any]) -> dict[Any, list[int]]:
        groups: dict[Any, list[int]] = {}
        for i in usage:
            key = column[i]
            group = groups.get(key)
            if group is None:
                groups[key] = [i]
            else:
                group.append(i)
        return groups

    total = sums(usage)
    by_flavor = {
        str(name): _usage(sums(index)) for name, index in grouped(columns[_FLAVOR]).items()
    }
    by_user = {str(name): _usage(sums(index)) for name, index in grouped(columns[_USER]).items()}
    users, attempts = columns[_USER], columns[_ATTEMPT]
    jobs = sorted(grouped(columns[_JOB]).items(), key=lambda item: _job_order(item[0]))
    job_rows, idle = [], []
    for job, index in jobs:
        job_sums = sums(index)
        tried = {attempts[i] for i in index} - {None}
        job_rows.append([job, users[index[0]], len(tried), *_usage_row(job_sums)])
        if job_sums[6] > 0:
            idle.append((-job_sums[6], _job_order(job), job, users[index[0]], job_sums))
    idle.sort(key=lambda item: (item[0], item[1]))
    return {
        "totals": _usage(total)
        | {
            "jobs": len(jobs),
            "entries": len(rows),
            "by_flavor": by_flavor,
            "by_user": by_user,
            "by_job": {"fields": list(JOB_FIELDS), "rows": job_rows},
        },
        "credits": {
            "opening": _round(opening),
            "granted": _round(fsum(amounts[i] for i, k in enumerate(kinds) if k == "grant")),
            "used": _round(-total[2]),
            "earned": _round(fsum(amounts[i] for i, k in enumerate(kinds) if k == "reward")),
            "left_at_end": _round(fsum((opening, *amounts))),
        },
        "idle": {
            "gpu_hours": total[6] / 3600.0,
            "top_jobs": [
                {
                    "job_id": job,
                    "user": user,
                    "idle_gpu_hours": job_sums[6] / 3600.0,
                    "gpu_hours": job_sums[0] / 3600.0,
                }
                for _, _, job, user, job_sums in idle[:TOP_IDLE_JOBS]
            ],
        },
    }


def _job_order(job: Any) -> int:
    return job if isinstance(job, int) and not isinstance(job, bool) else -1


def _usage_row(sums: list[float]) -> list[Any]:
    gpu_s, borrowed_s, amount, energy_j, util_s, busy_s, idle_s = sums
    return [
        gpu_s / 3600.0,
        borrowed_s / 3600.0,
        -amount,
        energy_j / 3.6e6,
        100.0 * busy_s / util_s if util_s > 0 else None,
        idle_s / 3600.0,
    ]


def _usage(sums: list[float]) -> dict[str, Any]:
    return dict(zip(USAGE_COLUMNS, _usage_row(sums), strict=True))


def _round(value: float) -> float:
    return round(value, 6) + 0.0  # + 0.0: never -0.0


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


# --- the canonical JSON ----------------------------------------------------------------------

_ENCODE = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def _canonical_members(statement: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, canonical JSON of its value) of each member but the signature, sorted: joined,
    exactly json.dumps(sort_keys=True, separators=(",", ":")) of the statement without its
    signature; each value encoded once for both the signed text and the signed form."""
    return [(key, _ENCODE(statement[key])) for key in sorted(statement) if key != "signature"]


def _join(members: Iterable[tuple[str, str]]) -> bytes:
    return ("{" + ",".join(f"{_ENCODE(k)}:{v}" for k, v in members) + "}").encode()


def to_json(statement: Mapping[str, Any]) -> bytes:
    """The signed form: canonical JSON, signature included."""
    return _join((key, _ENCODE(statement[key])) for key in sorted(statement))


# --- CSV and HTML ----------------------------------------------------------------------------

VERIFY_NOTE = (
    "Only the JSON form can be verified (gpupool statement --format json; gpupool verify FILE); "
    "this form repeats its figures and signature."
)


def to_csv(statement: Mapping[str, Any]) -> str:
    """One table: a `section` column (total, flavor, user, job, credits, idle, entry), then
    the figures; the signature in `#` trailer lines."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "key", "user", "attempts", *USAGE_COLUMNS])
    totals = statement["totals"]
    writer.writerow(["total", statement["project"], "", totals["jobs"], *_cells(totals)])
    for section, table in (("flavor", "by_flavor"), ("user", "by_user")):
        for name, usage in totals[table].items():
            writer.writerow([section, name, "", "", *_cells(usage)])
    for job, user, attempts, *usage in totals["by_job"]["rows"]:
        writer.writerow(["job", job, user, attempts, *("" if v is None else v for v in usage)])
    writer.writerow([])
    writer.writerow(["credits", "figure", "value"])
    for name, value in statement["credits"].items():
        writer.writerow(["credits", name, value])
    writer.writerow(["idle", "gpu_hours", statement["idle"]["gpu_hours"]])
    for job in statement["idle"]["top_jobs"]:
        writer.writerow(["idle_job", job["job_id"], job["user"], job["idle_gpu_hours"]])
    writer.writerow([])
    writer.writerow(["entry", *statement["entries"]["fields"]])
    for row in statement["entries"]["rows"]:
        writer.writerow(["entry", *row])
    writer.writerow([])
    for name in ("project", "period", "period_start", "period_end", "made_at"):
        writer.writerow([f"# {name}", statement[name]])
    head = statement["ledger_head"]
    writer.writerow(["# ledger_head", head["id"], head["hash"]])
    writer.writerow(["# public_key", statement["public_key"]])
    writer.writerow(["# signature", statement["signature"]])
    writer.writerow(["# note", VERIFY_NOTE])
    return out.getvalue()


def _cells(usage: Mapping[str, Any]) -> list[Any]:
    return ["" if usage[name] is None else usage[name] for name in USAGE_COLUMNS]


_CSS = """
body { font: 10.5pt/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #111; }
h1 { font-size: 16pt; margin-bottom: 0; } h2 { font-size: 12pt; margin-top: 1.6em; }
table { border-collapse: collapse; width: 100%; margin: .4em 0; }
th, td { border-bottom: 1px solid #ccc; padding: .15em .5em; text-align: left; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.meta td:first-child { color: #555; width: 14em; }
.signature { border: 1px solid #333; padding: .6em 1em; margin-top: 2em; }
.signature code { word-break: break-all; font-size: 8.5pt; }
.entries td { font-size: 8.5pt; }
@media print {
  body { margin: 0; max-width: none; font-size: 9.5pt; }
  h2 { break-after: avoid; } tr { break-inside: avoid; } .signature { break-inside: avoid; }
  @page { size: A4; margin: 15mm; }
}
"""


def to_html(statement: Mapping[str, Any]) -> str:
    """A printable page, self-contained (inline CSS, nothing fetched)."""
    e = html.escape
    totals, credits, idle = statement["totals"], statement["credits"], statement["idle"]
    head = statement["ledger_head"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Usage statement {e(statement['project'])} {e(statement['period'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Usage statement: {e(statement['project'])}, {e(statement['period'])}</h1>",
        '<table class="meta">',
    ]
    meta = [
        ("Project", f"{statement['project']} ({statement['project_title']})"),
        ("Principal investigator", statement["pi"]),
        ("Period", f"{statement['period_start']} to {statement['period_end']} (exclusive)"),
        ("Made at", statement["made_at"]),
        ("Ledger head", f"entry {head['id']}, hash {head['hash']}"),
        ("Jobs / ledger entries", f"{totals['jobs']} / {totals['entries']}"),
    ]
    parts += [f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>" for k, v in meta]
    parts.append("</table><h2>Credits</h2><table><tr>")
    parts += [f'<th class="n">{e(name)}</th>' for name in credits]
    parts.append("</tr><tr>")
    parts += [f'<td class="n">{e(_shown(v))}</td>' for v in credits.values()]
    parts.append("</tr></table>")

    def usage_table(title: str, label: str, table: Mapping[str, Any]) -> None:
        rows = [[name, *(usage[c] for c in USAGE_COLUMNS)] for name, usage in table.items()]
        parts.append(_html_table(title, [label, *USAGE_COLUMNS], rows))

    usage_table("Totals", "", {"all": totals})
    usage_table("By flavor", "flavor", totals["by_flavor"])
    usage_table("By user", "user", totals["by_user"])
    parts.append(f"<h2>Idle GPUs: {_shown(idle['gpu_hours'])} GPU-hours allocated but idle</h2>")
    parts.append(
        "<table><tr><th>job</th><th>user</th><th class='n'>idle GPU-hours</th>"
        "<th class='n'>GPU-hours</th></tr>"
    )
    for job in idle["top_jobs"]:
        parts.append(
            f"<tr><td>{e(str(job['job_id']))}</td><td>{e(job['user'])}</td>"
            f"<td class='n'>{_shown(job['idle_gpu_hours'])}</td>"
            f"<td class='n'>{_shown(job['gpu_hours'])}</td></tr>"
        )
    parts.append("</table>")
    parts.append(_html_table("By job", JOB_FIELDS, totals["by_job"]["rows"]))
    fields = statement["entries"]["fields"]
    shown = ("id", "at", "kind", "amount", "period", "job_id", "attempt", "flavor", "gpu_s", "hash")
    index = [fields.index(name) for name in shown]
    parts.append("<h2>Ledger entries</h2><table class='entries'><tr>")
    parts += [f"<th>{name}</th>" for name in shown]
    parts.append("</tr>")
    for row in statement["entries"]["rows"]:
        cells = [row[i] for i in index]
        cells[1] = _iso(cells[1])
        parts.append("<tr>" + "".join(f"<td>{e(_shown(c))}</td>" for c in cells) + "</tr>")
    parts.append("</table>")
    parts.append(
        '<div class="signature"><strong>Signed by the pool</strong> (Ed25519)<br>'
        f"Key: <code>{e(statement['public_key'])}</code><br>"
        f"Signature: <code>{e(statement['signature'])}</code><br>"
        f"<small>{e(VERIFY_NOTE)}</small></div></body></html>"
    )
    return "\n".join(parts)


def _html_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c.replace('_', ' '))}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{e(_shown(v))}</td>'
            if isinstance(v, int | float) and not isinstance(v, bool)
            else f"<td>{e(_shown(v))}</td>"
            for v in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<h2>{e(title)}</h2><table><tr>{head}</tr>{body}</table>"


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) < 1e15 else str(value)
    return str(value)


def render(statement: Mapping[str, Any], form: str) -> tuple[bytes, str]:
    """(body, media type) of the statement in one of FORMATS."""
    if form == "json":
        return to_json(statement), "application/json"
    if form == "csv":
        return to_csv(statement).encode(), "text/csv; charset=utf-8"
    if form == "html":
        return to_html(statement).encode(), "text/html; charset=utf-8"
    raise Invalid(f"{form!r} is not a format; one of: {', '.join(FORMATS)}", field="format")


# --- verification ----------------------------------------------------------------------------


@dataclass
class Verification:
    problems: list[str] = field(default_factory=list)
    # The statement as read, when the document is one (to name its project and period).
    statement: dict[str, Any] | None = None
    # Why a document could not be read at all, for a form to say so on its field: not UTF-8
    # text, or not JSON (where its syntax fails).
    not_text: bool = False
    not_json: json.JSONDecodeError | None = None

    @property
    def valid(self) -> bool:
        return not self.problems


def verify_statement(
    statement_json: str | bytes | Mapping[str, Any],
    public_key: Ed25519PublicKey | str | bytes,
    ledger_rows: Iterable[Mapping[str, Any]] | None = None,
) -> Verification:
    """Check a statement's JSON form (bytes, or str as UTF-8; a Mapping is written as its
    canonical JSON first) with the pool's public key (or its PEM), and against the ledger's
    entries in id order when given. Every problem found; never raises on the document."""
    with collector_paused():
        return _verify(statement_json, public_key, ledger_rows)


def _verify(
    statement_json: str | bytes | Mapping[str, Any],
    public_key: Ed25519PublicKey | str | bytes,
    ledger_rows: Iterable[Mapping[str, Any]] | None,
) -> Verification:
    found = Verification()
    if isinstance(statement_json, str | bytes):
        document = statement_json
    else:
        try:
            document = to_json(statement_json)
        except UnicodeEncodeError:
            found.problems.append("a lone surrogate in a string: not Unicode text")
            return found
        except (ValueError, TypeError, RecursionError) as err:
            found.problems.append(f"not JSON: {_excerpt(str(err))}")
            return found
    read = read_document(document, found)
    if read is None:
        return found
    statement, signed = read
    found.statement = statement
    key = public_key if isinstance(public_key, Ed25519PublicKey) else _public(public_key, found)
    shape = _shape_problem(statement)
    if shape:
        found.problems.append(shape)
        return found
    if key is not None:
        _check_signature(statement, signed, key, found)
    del signed
    rows = _check_entries(statement, found)
    _check_figures(statement, rows, found)
    if ledger_rows is not None:
        _check_against_ledger(statement, rows, ledger_rows, found)
    return found


# --- reading a statement's JSON form exactly -------------------------------------------------

MAX_DEPTH = 16  # arrays and objects within one another; a statement's JSON nests 5 deep
# A statement's arrays and objects lie far apart (a ledger entry's row is about 270 bytes,
# a job's 40 or more); packed closer, as `[{},{},...]`, a document would take 20 to 30 times
# its size in memory once parsed, against 4 times for a statement.
MIN_BYTES_PER_CONTAINER = 32
_CONTAINERS_ALWAYS_ALLOWED = 64
# The canonical form writes an integer of 64 bits in at most 19 digits and a double in at
# most 17 significant ones: a longer run of digits is out of range (int() refuses 4,300).
MAX_DIGITS = 20
_DIGITS_AS_ZEROS = bytes.maketrans(b"123456789", b"0" * 9)
_UTF16_32_MARKS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")
_PIECE_BYTES = 256 * 1024  # what _outside_strings holds at a time, and a little more
_BRACKETS_ONLY = (bytes.maketrans(b"{}", b"[]"), bytes(set(range(256)) - set(b"[]{}")))
_NUMBER_BYTES = b"0123456789+-.eE"
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Unreadable(Exception):
    """The rule a document breaks, found while parsing it."""


def read_document(
    document: str | bytes, found: Verification
) -> tuple[dict[str, Any], bytes] | None:
    """(the statement, the bytes its signature covers) when `document` is exactly the
    canonical JSON of what it holds (see the module docstring); else None, with the rule it
    breaks added to found.problems."""
    if isinstance(document, str):
        try:
            data = document.encode("utf-8")
        except UnicodeEncodeError as err:
            found.not_text = True
            found.problems.append(
                f"not UTF-8 text: a lone surrogate ({_excerpt(err.object[err.start])}) at "
                f"character {err.start}"
            )
            return None
    else:
        data = bytes(document)
    text = _utf8_text(data, found)
    if text is None:
        return None
    structure, long_number = _structure_problem(data)
    if structure:
        found.problems.append(structure)
        return None
    reader = _Reader()
    statement = _parse(text, reader, found)
    del text
    if statement is _UNREAD:
        return None
    if long_number:  # said once the document is known to be JSON (a CSV has long numbers)
        found.problems.append(
            f"number out of range: more than {MAX_DIGITS} digits in a row (a statement's "
            "integers fit in 64 bits, its numbers in a double)"
        )
        return None
    if not isinstance(statement, dict):
        found.problems.append("not a statement: a JSON object is expected")
        return None
    if reader.flagged:
        found.problems += reader.problems(statement)
        return None
    try:
        parts = [(_ENCODE(k) + ":" + _ENCODE(statement[k])).encode() for k in sorted(statement)]
    except UnicodeEncodeError:
        found.problems.append(_surrogate_problem(statement))
        return None
    except ValueError:  # a double out of range (1e400) read as infinity
        found.problems.append(
            f"number out of range at {_infinite_place(statement)}: beyond a double"
        )
        return None
    if not _is_joined(data, parts):
        found.problems.append(_difference(data, b"{" + b",".join(parts) + b"}"))
        return None
    unsigned = [
        part for key, part in zip(sorted(statement), parts, strict=True) if key != "signature"
    ]
    return statement, b"{" + b",".join(unsigned) + b"}"


def _is_joined(data: bytes, parts: list[bytes]) -> bool:
    """data == b"{" + b",".join(parts) + b"}", without making that copy."""
    if not (data.startswith(b"{") and data.endswith(b"}")):
        return False
    position = 1
    for index, part in enumerate(parts):
        if index:
            if data[position : position + 1] != b",":
                return False
            position += 1
        if not data.startswith(part, position):
            return False
        position += len(part)
    return position == len(data) - 1


def _utf8_text(data: bytes, found: Verification) -> str | None:
    if not data:
        found.problems.append("empty: a statement is a JSON object")
        return None
    if data.startswith(b"\xef\xbb\xbf"):
        found.problems.append(
            "starts with a byte order mark (EF BB BF): the signed form has none; this is not "
            "the signed document"
        )
        return None
    said = ""
    if data.startswith(_UTF16_32_MARKS):
        said = "it starts with a UTF-16 or UTF-32 byte order mark"
    elif b"\x00" in data[:4]:
        said = "it starts with NUL bytes, as UTF-16 or UTF-32 text does"
    else:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as err:
            said = f"byte {err.start} (0x{data[err.start]:02x}) is not part of UTF-8 text"
    found.not_text = True
    found.problems.append(f"not UTF-8: {said}; a statement's JSON form is UTF-8")
    return None


def _structure_problem(data: bytes) -> tuple[str, bool]:
    """Too deep, or arrays and objects packed too close, for a statement: said before the
    document is parsed, as parsing it would recurse that deep or take that much memory;
    and whether it has a number of more than MAX_DIGITS digits. Looked at outside strings,
    a piece at a time (_outside_strings); linear in its size."""
    brackets = bytearray()
    too_long = b"0" * (MAX_DIGITS + 1)
    long_number = False
    before = b""  # the end of the last piece: a number may go on into the next
    for outside in _outside_strings(data):
        digits = before + outside.translate(_DIGITS_AS_ZEROS)
        long_number = long_number or too_long in digits
        before = digits[-MAX_DIGITS:]
        brackets += outside.translate(*_BRACKETS_ONLY)
    containers = brackets.count(b"[")
    # Each pass takes away the innermost arrays and objects ("[]" once their content is
    # gone): what passes leave is nested that much deeper; unmatched "[" nest deeper too.
    passes = 0
    while passes <= MAX_DEPTH:
        inner_gone = brackets.replace(b"[]", b"")
        if len(inner_gone) == len(brackets):
            break
        brackets = inner_gone
        passes += 1
    if passes + brackets.count(b"[") > MAX_DEPTH:
        return (
            f"nested deeper than {MAX_DEPTH} arrays and objects: not a statement (a "
            "statement's JSON nests 5 deep)",
            long_number,
        )
    if containers > len(data) // MIN_BYTES_PER_CONTAINER + _CONTAINERS_ALWAYS_ALLOWED:
        return (
            f"more arrays and objects than a statement of its size holds ({containers:,} in "
            f"{len(data):,} bytes; a statement has at most one per "
            f"{MIN_BYTES_PER_CONTAINER} bytes): not a statement",
            long_number,
        )
    return "", long_number


def _outside_strings(data: bytes) -> Iterator[bytes]:
    """What `data` holds outside its JSON strings, in pieces: each piece of _PIECE_BYTES
    without its escaped backslashes and quotes (outside a string a backslash is not JSON,
    which the parse says), then without what lies between quotes, which alternate opening
    and closing once those are gone. Working a piece at a time
    keeps the lists split() and sub() make small, whatever the document holds."""
    inside = False
    start = 0
    while start < len(data):
        end = min(start + _PIECE_BYTES, len(data))
        piece = data[start:end]
        backslashes = len(piece) - len(piece.rstrip(b"\\"))
        if backslashes % 2 and end < len(data):  # an escape across the cut: keep it whole
            piece, end = piece[:-1], end - 1
        # Left to right, as JSON pairs them: an escaped backslash, then an escaped quote.
        parts = piece.replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')
        yield b"".join(parts[1::2] if inside else parts[0::2])
        if len(parts) % 2 == 0:  # an odd number of quotes
            inside = not inside
        start = end


class _Reader:
    """json's hooks, refusing what the canonical form cannot hold and noting objects with a
    duplicate key or keys out of order (named with their place once the parse is done)."""

    def __init__(self) -> None:
        self.flagged: list[tuple[dict[str, Any], str, str]] = []  # object, rule, detail

    def decoder(self) -> json.JSONDecoder:
        return json.JSONDecoder(
            object_pairs_hook=self.object,
            parse_constant=self.constant,
        )

    def object(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        made = dict(pairs)
        keys = [key for key, _ in pairs]
        if len(made) != len(pairs):
            seen: set[str] = set()
            for key in keys:
                if key in seen:
                    self.flagged.append((made, "duplicate", key))
                    break
                seen.add(key)
        else:
            for before, after in pairwise(keys):
                if before > after:
                    self.flagged.append((made, "order", f"{_brief(before)} before {_brief(after)}"))
                    break
        return made

    @staticmethod
    def constant(name: str) -> Any:
        raise _Unreadable(f"{name} is not a JSON number (a statement's numbers are finite)")

    def problems(self, root: dict[str, Any]) -> list[str]:
        """Each flagged object's rule with its place in `root` ($, $.credits, $.rows[0]):
        the duplicate keys (a reader may take either value), else the first keys out of
        order."""
        duplicates = [f for f in self.flagged if f[1] == "duplicate"]
        chosen = duplicates[:5] if duplicates else self.flagged[:1]
        places = _places(root, [made for made, _, _ in chosen])
        said = []
        for made, rule, detail in chosen:
            place = places.get(id(made), "a value a later duplicate key replaced")
            if rule == "duplicate":
                said.append(
                    f"duplicate key {_brief(detail)} at {place} (a reader may see either value)"
                )
            else:
                said.append(f"not in canonical form: keys out of order at {place} ({detail})")
        return said


_UNREAD = object()


def _parse(text: str, reader: _Reader, found: Verification) -> Any:
    """The JSON value `text` holds (leading whitespace allowed here: the canonical
    comparison names it); _UNREAD, with the rule broken, if it is not JSON or has more
    after it."""
    start = len(text) - len(text.lstrip(" \t\r\n"))
    try:
        value, end = reader.decoder().raw_decode(text, start)
    except _Unreadable as err:
        found.problems.append(str(err))
        return _UNREAD
    except json.JSONDecodeError as err:
        found.not_json = err
        where = len(text[: err.pos].encode())
        found.problems.append(
            f"not JSON: {err.msg} at byte {where} (line {err.lineno}, column {err.colno})"
        )
        return _UNREAD
    except ValueError as err:  # not raised once _structure_problem passed: int() of 4,300 digits
        found.problems.append(f"number out of range: {_excerpt(str(err))}")
        return _UNREAD
    except RecursionError:  # _structure_problem keeps the depth far below this
        found.problems.append(f"nested deeper than {MAX_DEPTH} arrays and objects")
        return _UNREAD
    if end != len(text):
        where = len(text[:end].encode())
        found.problems.append(
            f"trailing data after the statement at byte {where}: {_brief(text[end:], 20)}"
        )
        return _UNREAD
    return value


def _places(root: Any, wanted: Sequence[Any]) -> dict[int, str]:
    """id -> path ($.a.b[2]) of each of `wanted` (objects held alive by the caller) in root."""
    left = {id(item) for item in wanted}
    places: dict[int, str] = {}
    stack: list[tuple[Any, str]] = [(root, "$")]
    while stack and left:
        node, path = stack.pop()
        if id(node) in left:
            left.discard(id(node))
            places[id(node)] = path
        if isinstance(node, dict):
            stack += [(v, path + _member(k)) for k, v in node.items() if isinstance(v, dict | list)]
        elif isinstance(node, list):
            stack += [(v, f"{path}[{i}]") for i, v in enumerate(node) if isinstance(v, dict | list)]
    return places


def _member(key: str) -> str:
    return f".{key}" if key.isidentifier() and key.isascii() else f"[{_brief(key)}]"


def _surrogate_problem(root: Any) -> str:
    stack: list[tuple[Any, str]] = [(root, "$")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if _SURROGATE.search(key):
                    return _surrogate_said(key, f"{path} (in a key)")
                stack.append((value, path + _member(key)))
        elif isinstance(node, list):
            stack += [(v, f"{path}[{i}]") for i, v in enumerate(node)]
        elif isinstance(node, str) and _SURROGATE.search(node):
            return _surrogate_said(node, path)
    return "a lone surrogate in a string: not Unicode text"


def _infinite_place(root: Any) -> str:
    stack: list[tuple[Any, str]] = [(root, "$")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            stack += [(v, path + _member(k)) for k, v in node.items()]
        elif isinstance(node, list):
            stack += [(v, f"{path}[{i}]") for i, v in enumerate(node)]
        elif isinstance(node, float) and not math.isfinite(node):
            return path
    return "$"


def _surrogate_said(text: str, place: str) -> str:
    found = _SURROGATE.search(text)
    code = ord(found.group()) if found else 0xD800
    return (
        f"a lone surrogate (\\u{code:04x}) in a string at {place}: not Unicode text, which "
        "the signed form (UTF-8) cannot hold"
    )


def _difference(given: bytes, canonical: bytes) -> str:
    """Where `given` first differs from the canonical form of its own content, and how."""
    at = _common_prefix(given, canonical)
    if at == len(canonical):
        return f"trailing data after the statement at byte {at}: {_bytes_excerpt(given[at:])}"
    while at > 0 and 0x80 <= given[at] < 0xC0:  # to the start of a UTF-8 character
        at -= 1
    backslashes = len(given[:at]) - len(given[:at].rstrip(b"\\"))
    if backslashes % 2:  # inside an escape: from its backslash
        at -= 1
    elif given[at : at + 1] in b"0123456789+-.eE" and given[at : at + 1]:
        while at > 0 and given[at - 1] in _NUMBER_BYTES:  # a number: from its start
            at -= 1
    if given[at] in b" \t\r\n":
        return (
            f"not in canonical form: whitespace at byte {at} (the signed form has none: a "
            "pretty-printed or re-saved copy is not the signed document)"
        )
    rule = "a \\u escape" if given[at : at + 2] == b"\\u" else "at byte"
    shown = (
        f"{_bytes_excerpt(given[at:])} where the signed form has {_bytes_excerpt(canonical[at:])}"
    )
    if rule == "at byte":
        return f"not in canonical form: at byte {at}, {shown}"
    return (
        f"not in canonical form: a \\u escape at byte {at}, {shown} (it has the character itself)"
    )


def _common_prefix(a: bytes, b: bytes) -> int:
    """The length of the longest common prefix (binary search over C-speed compares)."""
    low, high = 0, min(len(a), len(b))
    view_a, view_b = memoryview(a), memoryview(b)
    while low < high:
        middle = (low + high + 1) // 2
        if view_a[:middle] == view_b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _bytes_excerpt(data: bytes) -> str:
    return _brief(data[:24].decode("utf-8", "backslashreplace"))


def _brief(value: Any, limit: int = 40) -> str:
    """repr of `value`, cut to about `limit` characters: control characters, surrogates and
    the like escaped (repr does), a huge value named, not spelled out."""
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value):,} characters)"
    said = repr(value)
    return said if len(said) <= limit + 2 else said[:limit] + "..."


def _excerpt(text: str, limit: int = 80) -> str:
    """`text` with what repr escapes escaped, no quotes added, cut to `limit`."""
    escaped = repr(text[: limit + 1])[1:-1]
    return escaped if len(escaped) <= limit else escaped[:limit] + "..."


def _public(pem: str | bytes, found: Verification) -> Ed25519PublicKey | None:
    try:
        return signing.load_public_key(pem)
    except Invalid as err:
        found.problems.append(f"the public key given: {err.message}")
        return None


def _shape_problem(statement: Any) -> str:
    if not isinstance(statement, dict):
        return "not a statement: a JSON object is expected"
    if statement.get("kind") != KIND:
        return f"not a statement: its kind is {_brief(statement.get('kind'))}, not {KIND!r}"
    needed = {
        "signature": str,
        "public_key": str,
        "project": str,
        "period": str,
        "ledger_head": dict,
        "totals": dict,
        "credits": dict,
        "idle": dict,
        "entries": dict,
    }
    for name, kind in needed.items():
        if not isinstance(statement.get(name), kind):
            return f"{name}: missing or not a {kind.__name__}"
    entries = statement["entries"]
    if entries.get("fields") != list(ENTRY_FIELDS):
        return f"entries.fields: not the ledger's fields ({', '.join(ENTRY_FIELDS)})"
    rows = entries.get("rows")
    if not isinstance(rows, list) or not all(
        isinstance(r, list) and len(r) == len(ENTRY_FIELDS) for r in rows
    ):
        return f"entries.rows: not a list of rows of {len(ENTRY_FIELDS)} fields"
    head = statement["ledger_head"]
    if not isinstance(head.get("id"), int) or not isinstance(head.get("hash"), str):
        return "ledger_head: needs an id (a number) and a hash"
    if not isinstance(statement["credits"].get("opening"), int | float):
        return "credits.opening: missing or not a number"
    try:
        parse_period(statement["period"])
    except Invalid as err:
        return str(err)
    return ""


def _check_signature(
    statement: dict[str, Any], signed: bytes, key: Ed25519PublicKey, found: Verification
) -> None:
    given = signing.key_id(key)
    if statement["public_key"] != given:
        found.problems.append(
            f"signed with key {_excerpt(statement['public_key'])}, not with the key given ({given})"
        )
        return
    if not signing.signature_matches(key, signed, statement["signature"]):
        found.problems.append(
            "signature does not match: the statement was changed after it was signed, or "
            "was not signed with this key"
        )


def _check_entries(statement: dict[str, Any], found: Verification) -> list[list[Any]]:
    """Each entry's hash, order, project, period and place before the head; the rows."""
    rows: list[list[Any]] = statement["entries"]["rows"]
    period = parse_period(statement["period"])
    project, head = statement["project"], statement["ledger_head"]
    last: int | None = None
    for row in rows:
        number = row[_ID]
        if not isinstance(number, int):
            found.problems.append(f"an entry's id is not a number: {_brief(number)}")
            continue
        if last is not None and number <= last:
            said = "listed twice" if number == last else f"out of order: {number} after {last}"
            found.problems.append(f"entries {said}")
        last = number
        entry = dict(zip(ENTRY_FIELDS, row, strict=True))
        try:
            matches = entry_hash(str(entry["prev_hash"]), entry) == entry["hash"]
        except (TypeError, ValueError):
            matches = False
        if not matches:
            found.problems.append(f"ledger entry {number}: its hash does not match its content")
        if row[_PROJECT] != project:
            found.problems.append(
                f"ledger entry {number}: of project {_brief(row[_PROJECT])}, not {_brief(project)}"
            )
        if not _in_period(period, row):
            found.problems.append(f"ledger entry {number}: outside the period {period.name}")
        if number > head["id"]:
            found.problems.append(
                f"ledger entry {number}: after the statement's ledger head ({head['id']})"
            )
        elif number == head["id"] and row[_HASH] != head["hash"]:
            found.problems.append(
                f"ledger_head: its hash is not that of entry {number} listed in the statement"
            )
    return rows


def _in_period(period: Period, row: Sequence[Any]) -> bool:
    try:
        return period.holds(row[_PERIOD], float(row[_AT]))
    except (TypeError, ValueError, OverflowError, OSError):
        return False


def _check_figures(statement: dict[str, Any], rows: list[list[Any]], found: Verification) -> None:
    try:
        recomputed = summarize(rows, float(statement["credits"]["opening"]))
    except (TypeError, ValueError, KeyError, OverflowError) as err:
        found.problems.append(f"the entries' figures cannot be summed: {_excerpt(str(err))}")
        return
    for name, value in recomputed.items():
        stated = statement.get(name)
        if name == "credits" and isinstance(stated, dict):  # left_now: checked on the ledger
            stated = {k: v for k, v in stated.items() if k not in ("left_now", "budgeted")}
        found.problems += _differences(name, stated, value)


def _differences(path: str, stated: Any, computed: Any) -> Iterator[str]:
    if stated == computed and _same_kinds(stated, computed):
        return
    if isinstance(computed, dict) and isinstance(stated, dict):
        for key in computed:
            if key in stated:
                yield from _differences(f"{path}.{key}", stated[key], computed[key])
            else:
                said = _said(computed[key])
                yield f"{path}.{key}: missing in the statement, {said} from its entries"
        for key in stated:
            if key not in computed:
                yield f"{path}.{key}: in the statement, not from its entries"
        return
    if isinstance(computed, list) and isinstance(stated, list) and len(computed) == len(stated):
        for index, (a, b) in enumerate(zip(stated, computed, strict=True)):
            yield from _differences(f"{path}[{index}]", a, b)
        return
    if stated != computed or not _same_kinds(stated, computed):
        yield f"{path}: {_said(stated)} in the statement, {_said(computed)} from its entries"


def _same_kinds(a: Any, b: Any) -> bool:
    """No true standing for 1 (or 1 for true) at the top of a figure (== allows it)."""
    return isinstance(a, bool) == isinstance(b, bool)


def _said(value: Any) -> str:
    if isinstance(value, dict | list):
        return "(" + json.dumps(value)[:80] + ")"
    said = json.dumps(value)  # escapes what a terminal would act on
    return said if len(said) <= 82 else said[:80] + "..."


def _check_against_ledger(
    statement: dict[str, Any],
    rows: list[list[Any]],
    ledger_rows: Iterable[Mapping[str, Any]],
    found: Verification,
) -> None:
    """Each entry as in the ledger, none of the project's in the period left out, the
    balances, and the chain from GENESIS to the statement's head."""
    period = parse_period(statement["period"])
    project, head = statement["project"], statement["ledger_head"]
    head_id = head["id"]
    listed = {row[_ID]: row for row in rows if isinstance(row[_ID], int)}
    opening = left_now = 0.0
    seen: dict[str, Any] = {"last": None}  # the last ledger entry read up to the head
    left_out: list[int] = []

    def upto_head() -> Iterator[Mapping[str, Any]]:
        nonlocal opening, left_now
        for entry in ledger_rows:
            if int(entry["id"]) > head_id:
                return
            seen["last"] = entry
            if entry["project"] == project:  # looked at before check_chain, which may stop
                left_now += entry["amount"]
                number = int(entry["id"])
                if period.holds(entry["period"], entry["at"]):
                    row = listed.pop(number, None)
                    if row is None:
                        left_out.append(number)
                    else:
                        _compare_entry(number, row, entry, found)
                elif (entry["period"] or period_of(entry["at"])) < period.months[0]:
                    opening += entry["amount"]
            yield entry

    entries = upto_head()
    problem = check_chain(entries)
    if problem is not None:
        found.problems.append(f"the ledger's chain does not verify: {problem}")
        for _ in entries:  # the rest of the project's entries, compared all the same
            pass
    last = seen["last"]
    if head_id > 0 and (last is None or int(last["id"]) != head_id):
        found.problems.append(
            f"ledger_head: the ledger has no entry {head_id} (it ends at "
            f"{0 if last is None else last['id']})"
        )
        return
    ledger_head_hash = GENESIS if last is None else last["hash"]
    if head["hash"] != ledger_head_hash:
        found.problems.append(
            f"ledger_head: entry {head_id}'s hash is {_excerpt(head['hash'])} in the statement, "
            f"{ledger_head_hash} in the ledger"
        )
    for number in sorted(listed):
        found.problems.append(f"ledger entry {number}: in the statement, not in the ledger")
    for number in left_out:
        found.problems.append(
            f"ledger entry {number}: in the ledger ({project}, {period.name}) but not in the "
            "statement"
        )
    credits = statement["credits"]
    for name, value in (("opening", opening), ("left_now", left_now)):
        stated = credits.get(name)
        if not isinstance(stated, int | float) or abs(stated - value) > 1e-6:
            found.problems.append(
                f"credits.{name}: {_said(stated)} in the statement, "
                f"{_said(_round(value))} from the ledger"
            )


def _compare_entry(
    number: int, row: Sequence[Any], entry: Mapping[str, Any], found: Verification
) -> None:
    for index, name in enumerate(ENTRY_FIELDS):
        if row[index] != entry[name] or isinstance(row[index], bool) != isinstance(
            entry[name], bool
        ):
            found.problems.append(
                f"ledger entry {number}: {name} is {_said(row[index])} in the statement, "
                f"{_said(entry[name])} in the ledger"
            )
