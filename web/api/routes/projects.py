"""Projects: requests and decisions, members, quotas, credits, history."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, status

from web.api.deps import CurrentUser, PoolDep, ReadSessionDep, SessionDep
from web.api.errors import refusals
from web.api.links import project_links
from web.models import (
    ChangePublic,
    CreditChange,
    MemberCreate,
    ProjectCreate,
    ProjectDecision,
    ProjectPublic,
    ProjectState,
    ProjectUpdate,
    QuotaUpdate,
)
from web.services import projects
from web.services.changes import history

router = APIRouter(prefix="/projects", tags=["projects"])


@router.get("", response_model=list[ProjectPublic])
def list_projects(
    session: ReadSessionDep, user: CurrentUser, state: ProjectState | None = None
) -> list[ProjectPublic]:
    return projects.public_projects(session, projects.list_projects(session, user, state))


@router.post(
    "",
    response_model=ProjectPublic,
    status_code=status.HTTP_201_CREATED,
    responses={201: {"links": project_links("$response.body#/name")}, **refusals(403, 409)},
)
def request_project(
    spec: ProjectCreate, session: SessionDep, user: CurrentUser, pool: PoolDep
) -> ProjectPublic:
    project = projects.request_project(session, user, spec, pool.clock.now())
    session.commit()
    pool.identities_changed()  # the PI is a member now
    return projects.project_public(session, project)


@router.get("/{name}", response_model=ProjectPublic, responses=refusals(404))
def get_project(name: str, session: ReadSessionDep, user: CurrentUser) -> ProjectPublic:
    return projects.project_public(session, projects.get_project(session, user, name))


@router.patch("/{name}", response_model=ProjectPublic, responses=refusals(403, 404))
def update_project(
    name: str, change: ProjectUpdate, session: SessionDep, user: CurrentUser, pool: PoolDep
) -> ProjectPublic:
    project = projects.update_project(session, user, name, change, pool.clock.now())
    session.commit()
    pool.pool_changed()
    return projects.project_public(session, project)


@router.post("/{name}/members", response_model=ProjectPublic, responses=refusals(403, 404, 409))
def add_member(
    name: str, spec: MemberCreate, session: SessionDep, user: CurrentUser, pool: PoolDep
) -> ProjectPublic:
    projects.add_member(session, user, name, spec, pool.clock.now())
    session.commit()
    pool.identities_changed()
    return projects.project_public(session, projects.get_project(session, user, name))


@router.delete(
    "/{name}/members/{member}", response_model=ProjectPublic, responses=refusals(403, 404, 409)
)
def remove_member(
    name: str, member: str, session: SessionDep, user: CurrentUser, pool: PoolDep
) -> ProjectPublic:
    projects.remove_member(session, user, name, member, pool.clock.now())
    session.commit()
    pool.identities_changed()
    return projects.project_public(session, projects.get_project(session, user, name))


@router.put("/{name}/quotas/{flavor}", response_model=ProjectPublic, responses=refusals(403, 404))
def set_quota(
    name: str,
    flavor: str,
    spec: QuotaUpdate,
    session: SessionDep,
    user: CurrentUser,
    pool: PoolDep,
) -> ProjectPublic:
    projects.set_quota(session, user, name, flavor, spec, pool.clock.now())
    session.commit()
    pool.pool_changed()
    return projects.project_public(session, projects.get_project(session, user, name))


@router.post("/{name}/credits", response_model=ProjectPublic, responses=refusals(403, 404))
def change_credits(
    name: str, spec: CreditChange, session: SessionDep, user: CurrentUser, pool: PoolDep
) -> ProjectPublic:
    project = projects.change_credits(session, user, name, spec, pool.clock.now())
    session.commit()
    pool.pool_changed()
    return projects.project_public(session, project)


@router.get("/{name}/history", response_model=list[ChangePublic], responses=refusals(404))
def project_history(name: str, session: ReadSessionDep, user: CurrentUser) -> list[ChangePublic]:
    projects.get_project(session, user, name)
    return [
        ChangePublic.model_validate(c.model_dump()) for c in history(session, f"project:{name}")
    ]


# Last: "/{name}/{action}" would otherwise catch /members, /credits and the rest.
@router.post("/{name}/{action}", response_model=ProjectPublic, responses=refusals(403, 404, 409))
def decide(
    name: str,
    action: Literal["approve", "activate", "deny", "close"],
    decision: ProjectDecision,
    session: SessionDep,
    user: CurrentUser,
    pool: PoolDep,
) -> ProjectPublic:
    """An administrator's decision on a project: approve, activate, deny or close it."""
    project = projects.decide(
        session, user, name, action, pool.clock.now(), decision.note, decision.expires_at
    )
    session.commit()
    pool.pool_changed()
    return projects.project_public(session, project)
