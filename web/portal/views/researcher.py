"""Researchers' pages: the dashboard of my projects, my jobs, submitting, a job's page,
statements, verifying a statement, requesting a project."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from web.db import read_session
from web.models import ProjectPublic
from web.portal.deps import Page, SignedIn
from web.services import projects

router = APIRouter()


@router.get("/")
async def dashboard(page: SignedIn) -> Response:
    mine = await run_in_threadpool(_my_projects, page)
    return page.render("dashboard.html", projects=mine)


def _my_projects(page: Page) -> list[ProjectPublic]:
    """The projects the user belongs to (admins and operators: those they belong to too;
    the whole pool is on their own pages)."""
    who = page.who
    with read_session(page.pool.engine) as session:
        rows = projects.list_projects(session, who, None)
        return projects.public_projects(session, [p for p in rows if p.name in who.memberships])
