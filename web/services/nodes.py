"""GPU nodes: registration, listing, drain and undrain."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func
from sqlmodel import Session, col, select

from web.models import (
    Allocation,
    Flavor,
    FlavorPublic,
    Node,
    NodeCreate,
    NodePublic,
    NodeStateName,
    Role,
)
from web.services.auth import Principal
from web.services.changes import record_change
from web.services.errors import Conflict, NotFound


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
    """Nodes as callers see them, with the GPUs allocated on each now."""
    allocated = dict(
        session.exec(
            select(Allocation.node, func.sum(Allocation.gpus))
            .where(col(Allocation.end).is_(None))
            .where(col(Allocation.node).in_([n.name for n in nodes]))
            .group_by(col(Allocation.node))
        ).all()
    )
    return [
        NodePublic.model_validate(n.model_dump() | {"allocated": int(allocated.get(n.name) or 0)})
        for n in nodes
    ]


def set_drain(
    session: Session, asker: Principal, name: str, draining: bool, reason: str, now: float
) -> Node:
    """Drain (no new jobs; running ones finish) or return a node to service."""
    asker.require(Role.OPERATOR, Role.ADMIN)
    node = session.get(Node, name)
    if node is None:
        raise NotFound(f"no node {name!r}", field="node")
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
