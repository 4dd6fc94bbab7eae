"""Users, their tokens, and sectors."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from web.api.deps import CurrentUser, IdPath, PoolDep, ReadSessionDep, SessionDep
from web.api.errors import refusals
from web.models import (
    PasswordUpdate,
    SectorPublic,
    SectorUpdate,
    TokenCreate,
    TokenCreated,
    TokenPublic,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from web.services import auth, projects, users
from web.services.auth import WrongCurrentPassword

router = APIRouter(tags=["accounts"])


@router.get("/users/me", response_model=UserPublic)
def who_am_i(session: ReadSessionDep, user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(users.get_user(session, user, user.name).model_dump())


@router.get("/users", response_model=list[UserPublic], responses=refusals(403))
def list_users(session: ReadSessionDep, user: CurrentUser) -> list[UserPublic]:
    return [UserPublic.model_validate(u.model_dump()) for u in users.list_users(session, user)]


@router.post(
    "/users",
    response_model=UserPublic,
    status_code=status.HTTP_201_CREATED,
    responses=refusals(403, 409),
)
def create_user(
    spec: UserCreate, session: SessionDep, user: CurrentUser, pool: PoolDep
) -> UserPublic:
    created = users.create_user(session, user, spec, pool.clock.now())
    session.commit()
    return UserPublic.model_validate(created.model_dump())


@router.get("/users/{name}", response_model=UserPublic, responses=refusals(404))
def get_user(name: str, session: ReadSessionDep, user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(users.get_user(session, user, name).model_dump())


@router.patch("/users/{name}", response_model=UserPublic, responses=refusals(403, 404, 409))
def update_user(
    name: str, change: UserUpdate, session: SessionDep, user: CurrentUser, pool: PoolDep
) -> UserPublic:
    updated = users.update_user(session, user, name, change, pool.clock.now())
    session.commit()
    pool.identities_changed()
    return UserPublic.model_validate(updated.model_dump())


@router.put("/users/{name}/password", response_model=UserPublic, responses=refusals(403, 404, 429))
def set_password(
    name: str,
    spec: PasswordUpdate,
    session: SessionDep,
    user: CurrentUser,
    pool: PoolDep,
    request: Request,
) -> UserPublic:
    """Set a user's portal password (admins for anyone, others for their own) and end the
    user's portal sessions. One's own needs `current_password` once one is set; wrong
    ones are throttled as failed sign-ins are (429 with Retry-After). A password too weak
    (too short, a run or a repetition, containing the user name, or a common one) is
    refused naming the rule."""

    def change() -> UserPublic:
        changed = auth.set_password(
            session, user, name, spec.password, pool.clock.now(), spec.current_password
        )
        session.commit()
        return UserPublic.model_validate(changed.model_dump())

    if name != user.name:
        answer = change()
    else:
        address = request.client.host if request.client else None
        answer = pool.sign_ins.attempt(
            user.name, address, change, wrong=(WrongCurrentPassword,), field="current_password"
        )
    pool.sessions_ended()
    return answer


@router.post(
    "/users/{name}/tokens",
    response_model=TokenCreated,
    status_code=status.HTTP_201_CREATED,
    responses=refusals(403, 404),
)
def create_token(
    name: str, spec: TokenCreate, session: SessionDep, user: CurrentUser, pool: PoolDep
) -> TokenCreated:
    """A new API token. The token is in this answer only; the pool keeps its digest."""
    created = auth.issue_token(
        session, user, name, pool.clock.now(), spec.label, spec.expires_in_days
    )
    session.commit()
    return created


@router.get("/tokens", response_model=list[TokenPublic], responses=refusals(403))
def list_tokens(
    session: ReadSessionDep, user: CurrentUser, owner: str | None = None
) -> list[TokenPublic]:
    """Your tokens; an administrator sees everyone's, or one user's with ?owner=."""
    return [
        TokenPublic.model_validate(t.model_dump()) for t in auth.list_tokens(session, user, owner)
    ]


@router.delete("/tokens/{token_id}", response_model=TokenPublic, responses=refusals(404))
def revoke_token(
    token_id: IdPath, session: SessionDep, user: CurrentUser, pool: PoolDep
) -> TokenPublic:
    row = auth.revoke_token(session, user, token_id, pool.clock.now())
    session.commit()
    pool.identities_changed()
    return TokenPublic.model_validate(row.model_dump())


@router.get("/sectors", response_model=list[SectorPublic])
def list_sectors(session: ReadSessionDep, user: CurrentUser) -> list[SectorPublic]:
    return [SectorPublic.model_validate(s.model_dump()) for s in projects.list_sectors(session)]


@router.put("/sectors/{name}", response_model=SectorPublic, responses=refusals(403))
def set_sector(
    name: str, spec: SectorUpdate, session: SessionDep, user: CurrentUser, pool: PoolDep
) -> SectorPublic:
    sector = projects.set_sector(session, user, name, spec, pool.clock.now())
    session.commit()
    pool.pool_changed()  # the loop weighs sectors afresh
    return SectorPublic.model_validate(sector.model_dump())
