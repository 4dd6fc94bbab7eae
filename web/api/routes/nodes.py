"""Nodes and flavors: the pool's hardware."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from web.api.deps import CurrentUser, IdPath, PoolDep, ReadSessionDep, SessionDep
from web.api.errors import refusals
from web.models import (
    FlavorPublic,
    GpuMinutePublic,
    NodeCreate,
    NodeDrain,
    NodeGpusPublic,
    NodePublic,
    NodeTokenCreate,
    NodeTokenCreated,
    NodeTokenPublic,
)
from web.services import nodes

router = APIRouter(tags=["nodes"])


@router.get("/nodes", response_model=list[NodePublic])
def list_nodes(session: ReadSessionDep, user: CurrentUser) -> list[NodePublic]:
    return nodes.list_nodes(session, user)


@router.post(
    "/nodes",
    response_model=NodePublic,
    status_code=status.HTTP_201_CREATED,
    responses=refusals(403),
)
def register_node(
    spec: NodeCreate, session: SessionDep, user: CurrentUser, pool: PoolDep
) -> NodePublic:
    node = nodes.register_node(session, user, spec, pool.clock.now())
    session.commit()
    pool.pool_changed()
    return nodes.public_nodes(session, [node])[0]


@router.post("/nodes/{name}/drain", response_model=NodePublic, responses=refusals(403, 404, 409))
def drain_node(
    name: str, spec: NodeDrain, session: SessionDep, user: CurrentUser, pool: PoolDep
) -> NodePublic:
    node = nodes.set_drain(session, user, name, True, spec.reason, pool.clock.now())
    session.commit()
    pool.pool_changed()
    return nodes.public_nodes(session, [node])[0]


@router.post("/nodes/{name}/undrain", response_model=NodePublic, responses=refusals(403, 404, 409))
def undrain_node(name: str, session: SessionDep, user: CurrentUser, pool: PoolDep) -> NodePublic:
    node = nodes.set_drain(session, user, name, False, "", pool.clock.now())
    session.commit()
    pool.pool_changed()
    return nodes.public_nodes(session, [node])[0]


@router.get("/nodes/{name}/gpus", response_model=NodeGpusPublic, responses=refusals(403, 404))
def node_gpus(name: str, session: ReadSessionDep, user: CurrentUser) -> NodeGpusPublic:
    """The node's GPUs as its agent last reported them, with the jobs on each."""
    return nodes.node_gpus(session, user, name)


@router.get(
    "/nodes/{name}/history", response_model=list[GpuMinutePublic], responses=refusals(403, 404)
)
def node_history(
    name: str,
    session: ReadSessionDep,
    user: CurrentUser,
    pool: PoolDep,
    minutes: Annotated[int, Query(ge=1, le=7 * 1440, description="how far back")] = 60,
) -> list[GpuMinutePublic]:
    """One row per GPU per minute over the last `minutes` (for charts)."""
    now = pool.clock.now()
    return nodes.node_history(session, user, name, now - minutes * 60, now + 60)


@router.post(
    "/nodes/{name}/tokens",
    response_model=NodeTokenCreated,
    status_code=status.HTTP_201_CREATED,
    responses=refusals(403, 404),
)
def create_node_token(
    name: str, spec: NodeTokenCreate, session: SessionDep, user: CurrentUser, pool: PoolDep
) -> NodeTokenCreated:
    """A token for the node's agent (shown once): it reports for this node, nothing else."""
    created = nodes.issue_node_token(session, user, name, spec.label, pool.clock.now())
    session.commit()
    return created


@router.get(
    "/nodes/{name}/tokens", response_model=list[NodeTokenPublic], responses=refusals(403, 404)
)
def list_node_tokens(
    name: str, session: ReadSessionDep, user: CurrentUser
) -> list[NodeTokenPublic]:
    return [NodeTokenPublic.model_validate(t) for t in nodes.list_node_tokens(session, user, name)]


@router.delete(
    "/nodes/{name}/tokens/{token_id}", response_model=NodeTokenPublic, responses=refusals(403, 404)
)
def revoke_node_token(
    name: str, token_id: IdPath, session: SessionDep, user: CurrentUser, pool: PoolDep
) -> NodeTokenPublic:
    row = nodes.revoke_node_token(session, user, name, token_id, pool.clock.now())
    session.commit()
    pool.identities_changed()
    return NodeTokenPublic.model_validate(row)


@router.get("/flavors", response_model=list[FlavorPublic])
def list_flavors(session: ReadSessionDep, user: CurrentUser) -> list[FlavorPublic]:
    return nodes.list_flavors(session)
