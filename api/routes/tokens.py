"""Who am I, and token management (admins)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import AdminUser, CurrentUser, ResourceId, SessionDep
from api.json_body import StrictJSONRoute
from api.schemas import TokenCreate, TokenIssued, TokenRead, UserRead, UserRoleChanged, UserRoleUpdate
from services import tokens as token_service

router = APIRouter(tags=["tokens"], route_class=StrictJSONRoute)


@router.get("/me", response_model=UserRead)
def me(user: CurrentUser) -> UserRead:
    """The user behind the token (the UI uses it to pick the pages a role sees)."""
    return UserRead(id=user.id, name=user.name, role=user.role)


@router.get("/tokens", response_model=list[TokenRead])
def list_tokens(session: SessionDep, _admin: AdminUser) -> list[TokenRead]:
    """Every token, without the token itself (never stored); admins."""
    return [
        TokenRead(
            id=t.id,
            name=t.user.name,
            role=t.user.role,
            prefix=t.prefix,
            state=token_service.token_state(t),
            created_at=t.created_at,
            expires_at=t.expires_at,
            revoked_at=t.revoked_at,
            last_used_at=t.last_used_at,
        )
        for t in token_service.all_tokens(session)
    ]


@router.post("/tokens", response_model=TokenIssued, status_code=201)
def create_token(body: TokenCreate, session: SessionDep, _admin: AdminUser) -> TokenIssued:
    """Issue a token for a (new or existing) user; the response is the only time it is shown (admins)."""
    issued = token_service.issue(session, body.name, body.role, body.expires_in_days)
    return TokenIssued(
        id=issued.token_id,
        name=issued.user.name,
        role=issued.user.role,
        token=issued.token,
        expires_at=issued.expires_at,
    )


@router.post("/tokens/{token_id}/revoke", response_model=dict)
def revoke_token(token_id: ResourceId, session: SessionDep, admin: AdminUser) -> dict:
    """Revoke a token; requests with it get 401 from now on (admins). 409 for the last active admin token."""
    return {"revoked": token_service.revoke(session, token_id, by=admin)}


@router.patch("/users/{name:path}", response_model=UserRoleChanged)  # a user name may hold "/"
def change_role(name: str, body: UserRoleUpdate, session: SessionDep, admin: AdminUser) -> UserRoleChanged:
    """Change a user's role; their tokens keep working under the new role (admins), and the review statuses that
    read it are recomputed (`status_changes`). 409 for the last admin with an active token."""
    changed = token_service.change_role(session, name, body.role, by=admin)
    user = changed.user
    return UserRoleChanged(id=user.id, name=user.name, role=user.role, status_changes=changed.status_changes)
