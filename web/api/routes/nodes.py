"""Nodes and flavors: the pool's hardware."""

from __future__ import annotations

from fastapi import APIRouter, status

from web.api.deps import CurrentUser, PoolDep, ReadSessionDep, SessionDep
from web.models import FlavorPublic, NodeCreate, NodeDrain, NodePublic
from web.services import nodes

router = APIRouter(tags=["nodes"])


@router.get("/nodes", response_model=list[NodePublic])
def list_nodes(session: ReadSessionDep, user: CurrentUser) -> list[NodePublic]:
    return nodes.list_nodes(session, user)


@router.post("/nodes", response_model=NodePublic, status_code=status.HTTP_201_CREATED)
def register_node(
    spec: NodeCreate, session: SessionDep, user: CurrentUser, pool: PoolDep
) -> NodePublic:
    node = nodes.register_node(session, user, spec, pool.clock.now())
    session.commit()
    pool.pool_changed()
    return nodes.public_nodes(session, [node])[0]


@router.post("/nodes/{name}/drain", response_model=NodePublic)
def drain_node(
    name: str, spec: NodeDrain, session: SessionDep, user: CurrentUser, pool: PoolDep
) -> NodePublic:
    node = nodes.set_drain(session, user, name, True, spec.reason, pool.clock.now())
    session.commit()
    pool.pool_changed()
    return nodes.public_nodes(session, [node])[0]


@router.post("/nodes/{name}/undrain", response_model=NodePublic)
def undrain_node(name: str, session: SessionDep, user: CurrentUser, pool: PoolDep) -> NodePublic:
    node = nodes.set_drain(session, user, name, False, "", pool.clock.now())
    session.commit()
    pool.pool_changed()
    return nodes.public_nodes(session, [node])[0]


@router.get("/flavors", response_model=list[FlavorPublic])
def list_flavors(session: ReadSessionDep, user: CurrentUser) -> list[FlavorPublic]:
    return nodes.list_flavors(session)
