"""API tokens: issue, list, revoke. Only a token's SHA-256 is stored; the token is shown once."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from db import auth
from db.models import APIToken, User, utcnow


def issue(session: Session, name: str, role: str, expires_in_days: float | None = None) -> auth.IssuedToken:
    """A token for a (new or existing) user."""
    expires = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    return auth.create_token(session, name, role, expires)


def all_tokens(session: Session) -> list[APIToken]:
    return auth.list_tokens(session)


def revoke(session: Session, token_id: int | None = None, *, user_name: str | None = None) -> int:
    return auth.revoke_token(session, token_id, user_name=user_name)


def authenticate(session: Session, token: str) -> User | None:
    """The user behind a valid (not revoked, not expired) token, or None."""
    return auth.authenticate(session, token)
