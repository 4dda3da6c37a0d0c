"""Users and API tokens. A token is 256 random bits shown once; only its SHA-256 is stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, exists, or_, select, update
from sqlalchemy.orm import Session

from core.errors import ConflictError, NotFoundError
from db.models import APIToken, Role, User, utcnow
from db.session import affected_rows, insert_for

TOKEN_PREFIX = "aug_"
AUTO_REVIEWER = "auto"  # signs automatic decisions (role `system`)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass
class IssuedToken:
    token: str  # the only time the plain token exists
    token_id: int
    user: User
    expires_at: datetime | None = None


def user_named(session: Session, name: str) -> User | None:
    return session.scalar(select(User).where(User.name == name))


def get_or_create_user(session: Session, name: str, role: str) -> User:
    """The user `name`, made with `role` where there is none (services.tokens.issue checks the name and role)."""
    user = user_named(session, name)
    if user is None:
        user = User(name=name, role=role)
        session.add(user)
        session.flush()
    return user


def automatic_reviewer(session: Session) -> User:
    """The user that signs automatic decisions (role `system`: no token can be issued for it)."""
    user = session.scalar(select(User).where(User.name == AUTO_REVIEWER))
    if user is None:
        # Two jobs' first automatic decisions at once: the second insert waits for the first and does nothing
        # (before, its unique-name violation failed the job's attempt, and the retry generated everything again).
        session.execute(
            insert_for(session)(User)
            .values(name=AUTO_REVIEWER, role=Role.system.value)
            .on_conflict_do_nothing(index_elements=[User.name])
        )
        user = session.scalars(select(User).where(User.name == AUTO_REVIEWER)).one()
    if user.role != Role.system:
        raise ConflictError(
            f"a {user.role} named {AUTO_REVIEWER!r} exists; automatic decisions are signed by that name: "
            "revoke that user's tokens and rename it",
            field="name",
        )
    return user


def create_token(session: Session, name: str, role: str, expires_at: datetime | None = None) -> IssuedToken:
    user = get_or_create_user(session, name, role)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = APIToken(user_id=user.id, token_hash=hash_token(token), prefix=token[:10], expires_at=expires_at)
    session.add(row)
    session.flush()
    return IssuedToken(token=token, token_id=row.id, user=user, expires_at=expires_at)


def authenticate(session: Session, token: str) -> User | None:
    """The user behind a valid (not revoked, not expired) token, or None."""
    row = valid_token(session, token)
    return row.user if row is not None else None


def valid_token(session: Session, token: str) -> APIToken | None:
    """The token's row when the token is valid (not revoked, not expired), else None."""
    if not token:
        return None
    digest = hash_token(token)
    row = session.scalar(select(APIToken).where(APIToken.token_hash == digest))
    # The lookup is by hash (a timing leak reveals nothing about the token); compare again in constant time.
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    if token_state(row) != "active":
        return None
    return row


def token_state(row: APIToken, now: datetime | None = None) -> str:
    """active, expired or revoked (revoked wins: it was a deliberate act)."""
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= (now or utcnow()):
        return "expired"
    return "active"


def has_active_token(user_id: Any, now: datetime) -> ColumnElement[bool]:
    """SQL: the user (a column or a value) holds a token that is neither revoked nor expired at `now`:
    token_state's "active", for a query."""
    return exists(
        select(APIToken.id).where(
            APIToken.user_id == user_id,
            APIToken.revoked_at.is_(None),
            or_(APIToken.expires_at.is_(None), APIToken.expires_at > now),
        )
    )


def mark_used(session: Session, token_id: int, when: datetime) -> None:
    session.execute(
        update(APIToken)
        .where(APIToken.id == token_id)
        .values(last_used_at=when)
        .execution_options(synchronize_session=False)
    )


def get_user(session: Session, name: str) -> User:
    user = user_named(session, name)
    if user is None:
        raise NotFoundError(f"user {name!r} not found", field="name")
    return user


def set_role(session: Session, user: User, role: str) -> User:
    user.role = role
    session.flush()
    return user


def list_tokens(session: Session) -> list[APIToken]:
    return list(session.scalars(select(APIToken).order_by(APIToken.id)))


def revoke_token(session: Session, token_id: int | None = None, *, user_name: str | None = None) -> int:
    """Revoke one token by id, or every token of a user (one of them given). Returns how many were revoked."""
    stmt = update(APIToken).where(APIToken.revoked_at.is_(None))
    if token_id is not None:
        stmt = stmt.where(APIToken.id == token_id)
    elif user_name is not None:
        stmt = stmt.where(APIToken.user_id == get_user(session, user_name).id)
    else:
        raise ValueError("revoke_token takes a token id or a user name")  # services.tokens.revoke asks for one
    n = affected_rows(session.execute(stmt.values(revoked_at=utcnow()).execution_options(synchronize_session=False)))
    if not n and token_id is not None and session.get(APIToken, token_id) is None:
        raise NotFoundError(f"token {token_id} not found", field="token_id")
    return n or 0
