"""GPU nodes: registration, listing, drain and undrain; their agents' tokens; what their
agents last reported and the per-minute history."""

from __future__ import annotations

import math
import secrets
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from sqlalchemy import case, func
from sqlmodel import Session, col, select

from web.models import (
    Allocation,
    Flavor,
    FlavorPublic,
    GpuMinute,
    GpuMinutePublic,
    GpuStatusPublic,
    Node,
    NodeCreate,
    NodeGpusPublic,
    NodePublic,
    NodeStateName,
    NodeTelemetry,
    NodeToken,
    NodeTokenCreated,
    NodeTokenPublic,
    Role,
)
from web.services.auth import Principal, digest
from web.services.changes import record_change
from web.services.errors import Conflict, NotFound, Unauthenticated

NODE_TOKEN_PREFIX = "gpn_"


def register_node(session: Session, asker: Principal, spec: NodeCreate, now: float) -> Node:
    """Add a node, or update one that registers again (same name)."""
    asker.require(Role.OPERATOR, Role.ADMIN)
    if session.get(Flavor, spec.flavor) is None:
        session.add(Flavor(name=spec.flavor))
        record_change(session, asker.name, f"flavor:{spec.flavor}", "created", "", "1.0", now)
    node = session.get(Node, spec.name)
    if node is None:
        node = Node(**spec.model_dump(), registered_at=now)
        record_change(
            session,
            asker.name,
            f"node:{spec.name}",
            "registered",
            "",
            f"{spec.gpus} x {spec.flavor}",
            now,
        )
    else:
        for key in ("flavor", "gpus", "group"):
            if getattr(node, key) != getattr(spec, key):
                record_change(
                    session,
                    asker.name,
                    f"node:{spec.name}",
                    key,
                    getattr(node, key),
                    getattr(spec, key),
                    now,
                )
                setattr(node, key, getattr(spec, key))
    session.add(node)
    return node


def list_nodes(session: Session, asker: Principal) -> list[NodePublic]:
    return public_nodes(session, session.exec(select(Node).order_by(col(Node.name))).all())


def public_nodes(session: Session, nodes: Sequence[Node]) -> list[NodePublic]:
    """Nodes as callers see them, with the GPUs allocated on each now and when its agent
    last reported."""
    names = [n.name for n in nodes]
    allocated = dict(
        session.exec(
            select(Allocation.node, func.sum(Allocation.gpus))
            .where(col(Allocation.end).is_(None))
            .where(col(Allocation.node).in_(names))
            .group_by(col(Allocation.node))
        ).all()
    )
    heard = dict(
        session.exec(
            select(NodeTelemetry.node, NodeTelemetry.received_at).where(
                col(NodeTelemetry.node).in_(names)
            )
        ).all()
    )
    return [
        NodePublic.model_validate(
            n.model_dump()
            | {"allocated": int(allocated.get(n.name) or 0), "last_heartbeat": heard.get(n.name)}
        )
        for n in nodes
    ]


def get_node(session: Session, name: str) -> Node:
    node = session.get(Node, name)
    if node is None:
        raise NotFound(f"no node {name!r}", field="node")
    return node


# --- agents' tokens -------------------------------------------------------------------------


def issue_node_token(
    session: Session, asker: Principal, name: str, label: str, now: float
) -> NodeTokenCreated:
    """A token for node `name`'s agent: it may report for that node and nothing else."""
    asker.require(Role.OPERATOR, Role.ADMIN)
    get_node(session, name)
    secret = NODE_TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = NodeToken(
        node=name,
        label=label,
        prefix=secret[:12],
        digest=digest(secret),
        created_at=now,
        created_by=asker.name,
    )
    session.add(row)
    session.flush()
    record_change(session, asker.name, f"node:{name}", "agent token", "", row.prefix, now, label)
    return NodeTokenCreated(**NodeTokenPublic.model_validate(row).model_dump(), token=secret)


def list_node_tokens(session: Session, asker: Principal, name: str) -> list[NodeToken]:
    asker.require(Role.OPERATOR, Role.ADMIN)
    get_node(session, name)
    query = select(NodeToken).where(NodeToken.node == name).order_by(col(NodeToken.id))
    return list(session.exec(query).all())


def revoke_node_token(
    session: Session, asker: Principal, name: str, token_id: int, now: float
) -> NodeToken:
    asker.require(Role.OPERATOR, Role.ADMIN)
    row = session.get(NodeToken, token_id)
    if row is None or row.node != name:
        raise NotFound(f"node {name!r} has no token {token_id}", field="token")
    if row.revoked_at is None:
        row.revoked_at = now
        session.add(row)
        record_change(session, asker.name, f"node:{name}", "agent token", row.prefix, "", now)
    return row


class NodeTokenDirectory:
    """Every agent token's digest -> (node, revoked), read whole from the database at most
    every `ttl_s` (and at once after clear()): each of thousands of agents reports every few
    seconds with its own token, so looking each one up would cost a query per report.
    A token revoked on another server stops working within `ttl_s`; one made since the
    last read is found by reading again, at most once every `miss_reload_s` (so that bad
    tokens cannot make every request read the table)."""

    def __init__(self, ttl_s: float = 5.0, miss_reload_s: float = 1.0) -> None:
        self.ttl_s, self.miss_reload_s = ttl_s, miss_reload_s
        self._tokens: dict[str, tuple[str, bool]] = {}
        self._loaded_at = -math.inf
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._loaded_at = -math.inf

    def needs_reading(self, token: str, now: float) -> bool:
        """Whether authenticate() would read the database for `token` now."""
        if now - self._loaded_at >= self.ttl_s:
            return True
        return digest(token) not in self._tokens and now - self._loaded_at >= self.miss_reload_s

    def authenticate(
        self, session_of: Callable[[], AbstractContextManager[Session]], token: str, now: float
    ) -> str:
        """The node an agent's token names; Unauthenticated if it names none."""
        if not token.startswith(NODE_TOKEN_PREFIX):
            raise Unauthenticated(
                f"invalid token: agents use a node token ({NODE_TOKEN_PREFIX}..., made by "
                "`gpupool nodes token NODE`)"
            )
        key = digest(token)
        if self.needs_reading(token, now):
            with self._lock:
                if self.needs_reading(token, now):
                    with session_of() as session:
                        rows = session.exec(
                            select(NodeToken.digest, NodeToken.node, NodeToken.revoked_at)
                        ).all()
                    self._tokens = {d: (node, revoked is not None) for d, node, revoked in rows}
                    self._loaded_at = now
        found = self._tokens.get(key)
        if found is None:
            raise Unauthenticated("invalid node token")
        node, revoked = found
        if revoked:
            raise Unauthenticated("this node token was revoked")
        return node


# --- what the agents reported -----------------------------------------------------------------


def node_gpus(session: Session, asker: Principal, name: str) -> NodeGpusPublic:
    """The node's GPUs as its agent last reported them (none yet: an empty list). For
    operators and admins: it shows every job's processes on the node."""
    asker.require(Role.OPERATOR, Role.ADMIN)
    node = get_node(session, name)
    return _gpus_public(node, session.get(NodeTelemetry, name))


def _gpus_public(node: Node, row: NodeTelemetry | None) -> NodeGpusPublic:
    if row is None:
        return NodeGpusPublic(node=node.name, state=NodeStateName(node.state), gpus=[])
    return NodeGpusPublic.model_validate(
        {
            "node": node.name,
            "state": node.state,
            "state_reason": node.state_reason,
            "reader": row.reader,
            "driver_version": row.driver_version,
            "at": row.at,
            "received_at": row.received_at,
            "gpus": [_gpu_public(position, gpu) for position, gpu in enumerate(row.gpus or [])],
        }
    )


# A GPU's stored sample that cannot be shown as one (stored before the agents' reports were
# bounded, or edited by hand): listed as unreadable, never failing the page or the list.
UNREADABLE = "the stored sample cannot be read; it is shown as unreadable until the next report"
_FLOAT_FIELDS = ("util_gpu_pct", "util_mem_pct", "power_w", "temp_c")


def _gpu_public(position: int, stored: object) -> GpuStatusPublic:
    if isinstance(stored, dict):
        # Infinity and NaN (JSON on SQLite can hold them): unknown, as a field not read.
        cleaned = {
            key: None if key in _FLOAT_FIELDS and not _finite(value) else value
            for key, value in stored.items()
        }
        try:
            return GpuStatusPublic.model_validate(cleaned)
        except ValueError:
            pass
        index, uuid = stored.get("index"), stored.get("uuid")
    else:
        index = uuid = None
    return GpuStatusPublic(
        index=index if isinstance(index, int) and not isinstance(index, bool) else position,
        uuid=uuid if isinstance(uuid, str) else f"unreadable-{position}",
        errors={"sample": UNREADABLE},
    )


def _finite(value: object) -> bool:
    """Not a float that is infinite or NaN (None and the others pass as they are)."""
    return not isinstance(value, float) or math.isfinite(value)


def _mean(total: float, count: int) -> float | None:
    """total / count; None when there is none, or the stored sums overflowed (infinity,
    NaN: sums written before the agents' numbers were bounded)."""
    if count <= 0 or not math.isfinite(total):
        return None
    mean = total / count
    return mean if math.isfinite(mean) else None


@dataclass(frozen=True, slots=True)
class NodeWithGpus:
    node: NodePublic
    gpus: NodeGpusPublic


@dataclass(frozen=True, slots=True)
class NodePage:
    items: list[NodeWithGpus]
    total: int
    limit: int
    offset: int


# Down nodes first, then draining ones: what an operator looks at first.
_STATE_ORDER = case(
    (col(Node.state) == NodeStateName.DOWN.value, 0),
    (col(Node.state) == NodeStateName.DRAINING.value, 1),
    else_=2,
)


def node_page(
    session: Session,
    asker: Principal,
    *,
    state: NodeStateName | None = None,
    flavor: str | None = None,
    group: str | None = None,
    search: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> NodePage:
    """One page of nodes (down, then draining, then up; by name), each with its GPUs as
    its agent last reported them (node_gpus for a page: one query for the nodes and
    their reports, two for what public_nodes adds), filtered by state, flavor, group and
    a part of the name."""
    asker.require(Role.OPERATOR, Role.ADMIN)
    query = select(Node, NodeTelemetry).outerjoin(
        NodeTelemetry, col(NodeTelemetry.node) == col(Node.name)
    )
    counted = select(func.count()).select_from(Node)
    where = []
    if state is not None:
        where.append(col(Node.state) == state.value)
    if flavor is not None:
        where.append(col(Node.flavor) == flavor)
    if group is not None:
        where.append(col(Node.group) == group)
    if search:
        where.append(col(Node.name).contains(search.lower(), autoescape=True))
    for condition in where:
        query, counted = query.where(condition), counted.where(condition)
    total = session.exec(counted).one()
    rows = session.exec(
        query.order_by(_STATE_ORDER, col(Node.name)).limit(limit).offset(offset)
    ).all()
    publics = public_nodes(session, [node for node, _ in rows])
    items = [
        NodeWithGpus(public, _gpus_public(node, report))
        for public, (node, report) in zip(publics, rows, strict=True)
    ]
    return NodePage(items, int(total), limit, offset)


def node_groups(session: Session) -> list[str]:
    """The nodes' topology groups (racks, switches), those with a name."""
    rows = session.exec(
        select(Node.group).where(col(Node.group) != "").distinct().order_by(col(Node.group))
    ).all()
    return list(rows)


def node_history(
    session: Session, asker: Principal, name: str, since: float, until: float
) -> list[GpuMinutePublic]:
    """One row per GPU of the node per minute in [since, until)."""
    asker.require(Role.OPERATOR, Role.ADMIN)
    get_node(session, name)
    rows = session.exec(
        select(GpuMinute)
        .where(GpuMinute.node == name)
        .where(col(GpuMinute.minute) >= int(since // 60))
        .where(col(GpuMinute.minute) < int(until // 60))
        .order_by(col(GpuMinute.minute), col(GpuMinute.gpu_index), col(GpuMinute.uuid))
    ).all()
    return [
        GpuMinutePublic.model_validate(
            {
                "uuid": r.uuid,
                "node": r.node,
                "gpu_index": r.gpu_index,
                "minute": r.minute * 60,
                "util_gpu_pct": _mean(r.util_gpu_sum, r.util_gpu_samples),
                "util_mem_pct": _mean(r.util_mem_sum, r.util_gpu_samples),
                "power_w": _mean(r.power_w_sum, r.power_samples),
                "mem_used_bytes": r.mem_used_max,
                "temp_c": r.temp_max if r.temp_max is not None and _finite(r.temp_max) else None,
            }
        )
        for r in rows
    ]


def set_drain(
    session: Session, asker: Principal, name: str, draining: bool, reason: str, now: float
) -> Node:
    """Drain (no new jobs; running ones finish) or return a node to service."""
    asker.require(Role.OPERATOR, Role.ADMIN)
    node = get_node(session, name)
    if node.state == NodeStateName.DOWN.value:
        raise Conflict(
            f"node {name!r} is down ({node.state_reason or 'no reason given'}); it returns to "
            "service by itself once it is back"
        )
    target = NodeStateName.DRAINING if draining else NodeStateName.UP
    record_change(
        session, asker.name, f"node:{name}", "state", node.state, target.value, now, reason
    )
    node.state = target.value
    node.state_reason = reason if draining else ""
    session.add(node)
    return node


def list_flavors(session: Session) -> list[FlavorPublic]:
    sizes = {
        f: (int(n), int(g or 0))
        for f, n, g in session.exec(
            select(Node.flavor, func.count(), func.sum(Node.gpus)).group_by(col(Node.flavor))
        ).all()
    }
    return [
        FlavorPublic(
            name=f.name,
            credit_rate=f.credit_rate,
            nodes=sizes.get(f.name, (0, 0))[0],
            gpus=sizes.get(f.name, (0, 0))[1],
        )
        for f in session.exec(select(Flavor).order_by(col(Flavor.name))).all()
    ]
