"""The ledger: every movement of credits, with the usage behind it, append-only and
hash-chained.

Entry n's hash is sha256(entry n-1's hash + entry n's canonical JSON), the first entry's
previous hash 64 zeros (GENESIS). The canonical JSON is the entry's fields but `hash`, keys
sorted, no spaces, floats as Python writes them (the shortest text that reads back as the
same double on SQLite and PostgreSQL alike). Changing, removing or reordering any entry
breaks every hash after it: `check_chain` says which entry first.

Entries are appended in the transaction of the change they record (an attempt's end, a
grant), after locking the one `ledger_head` row: appends from several servers line up, and
a crash cannot leave a change without its entry or an entry without its change. The same
transaction keeps each project's totals (credits granted, used, earned) equal to the sums
of its entries: the balance the scheduler enforces is the ledger's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlmodel import Session

from web.models import LedgerEntry, LedgerHead, Project

GENESIS = "0" * 64
LEDGER = LedgerEntry.__table__  # type: ignore[attr-defined]
HEAD = LedgerHead.__table__  # type: ignore[attr-defined]
PROJECTS = Project.__table__  # type: ignore[attr-defined]
# Every field of an entry but its hash, in the order the canonical JSON sorts them anyway.
CANONICAL_FIELDS = tuple(sorted(name for name in LedgerEntry.model_fields if name != "hash"))
KINDS = ("grant", "charge", "refund", "reward")
# Which project total each kind moves (see Project): grants credits, charges and refunds
# credits_used (a charge's amount is negative: used grows by -amount), rewards credits_earned.
TOTALS = {
    "grant": ("credits", 1.0),
    "charge": ("credits_used", -1.0),
    "refund": ("credits_used", -1.0),
    "reward": ("credits_earned", 1.0),
}


# canonical()'s encoder, made once (check_chain's loop).
_CANONICAL_ENCODE = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def canonical(entry: Mapping[str, Any]) -> bytes:
    """The bytes an entry's hash covers (see the module docstring)."""
    fields = {name: entry[name] for name in CANONICAL_FIELDS}
    text = json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode()


def entry_hash(prev_hash: str, entry: Mapping[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(entry)).hexdigest()


def append(session: Session, entries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Append entries (their fields but id, prev_hash and hash) in this transaction, in
    order; the entries as stored. Locks the chain's head until the transaction ends."""
    rows = [dict(entry) for entry in entries]
    if not rows:
        return []
    for row in rows:
        if row["kind"] not in KINDS:
            raise ValueError(f"unknown ledger entry kind {row['kind']!r}")
    head = session.execute(select(HEAD).where(HEAD.c.id == 1).with_for_update()).first()
    last_id, last_hash = (0, GENESIS) if head is None else (head.last_id, head.last_hash)
    defaults = {name: field.default for name, field in LedgerEntry.model_fields.items()}
    for row in rows:
        for name in CANONICAL_FIELDS:
            if name not in row:
                row[name] = defaults[name]
            elif type(row[name]) is float:
                # -0.0 + 0.0 is 0.0: SQLite gives -0.0 back as 0.0, which would hash apart.
                row[name] = row[name] + 0.0
        last_id += 1
        row["id"], row["prev_hash"] = last_id, last_hash
        row["hash"] = last_hash = entry_hash(last_hash, row)
    session.execute(LEDGER.insert(), rows)
    if head is None:
        session.execute(HEAD.insert().values(id=1, last_id=last_id, last_hash=last_hash))
    else:
        session.execute(
            update(HEAD).where(HEAD.c.id == 1).values(last_id=last_id, last_hash=last_hash)
        )
    _move_totals(session, rows)
    return rows


def _move_totals(session: Session, rows: list[dict[str, Any]]) -> None:
    moves: dict[tuple[str, str], float] = {}
    for row in rows:
        column, sign = TOTALS[row["kind"]]
        key = (row["project"], column)
        moves[key] = moves.get(key, 0.0) + sign * row["amount"]
    for (project, column), amount in moves.items():
        # A project without a budget (credits NULL) gets one with its first grant.
        value = func.coalesce(PROJECTS.c[column], 0.0) + amount
        session.execute(update(PROJECTS).where(PROJECTS.c.name == project).values({column: value}))


@dataclass(frozen=True, slots=True)
class ChainProblem:
    entry: int  # the first entry whose check fails
    what: str

    def __str__(self) -> str:
        return f"ledger entry {self.entry}: {self.what}"


def check_chain(
    entries: Iterable[Mapping[str, Any]], after: tuple[int, str] = (0, GENESIS)
) -> ChainProblem | None:
    """Check entries given in id order, continuing the chain from `after` (id, hash): each
    id follows the last, each prev_hash is the last hash, each hash covers the entry. The
    first problem, or None."""
    last_id, last_hash = after
    encode, sha256, fields = _CANONICAL_ENCODE, hashlib.sha256, CANONICAL_FIELDS
    for entry in entries:
        number = int(entry["id"])
        if number != last_id + 1:
            what = "missing" if number > last_id + 1 else "out of order"
            return ChainProblem(
                last_id + 1 if number > last_id + 1 else number,
                f"{what} (after entry {last_id} comes entry {number})",
            )
        if entry["prev_hash"] != last_hash:
            return ChainProblem(
                number,
                f"its prev_hash is not entry {last_id}'s hash (entries removed, inserted or "
                "reordered)",
            )
        # entry_hash(last_hash, entry) inlined, with the encoder made once (json.dumps makes
        # one per call): the same bytes, a quarter faster.
        text = last_hash + encode({name: entry[name] for name in fields})
        if sha256(text.encode()).hexdigest() != entry["hash"]:
            return ChainProblem(
                number, "its hash does not match its content (the entry was changed)"
            )
        last_id, last_hash = number, entry["hash"]
    return None


def stream(session: Session, batch: int = 10_000) -> Iterator[dict[str, Any]]:
    """Every entry in id order, as dicts, a batch at a time."""
    last = 0
    while True:
        rows = (
            session.execute(
                select(LEDGER).where(LEDGER.c.id > last).order_by(LEDGER.c.id).limit(batch)
            )
            .mappings()
            .all()
        )
        if not rows:
            return
        for row in rows:
            yield dict(row)
        last = rows[-1]["id"]
