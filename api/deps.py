"""Request dependencies: a database session per request, and the authenticated user with a role check."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.settings import Settings
from db.models import Role, User
from db.session import readonly_engine, session_scope
from services.tokens import authenticate


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_engine_dep(request: Request) -> Engine:
    return request.app.state.engine


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back when it raises.

    The dependency has the "function" scope (SessionDep below): FastAPI runs its exit, and so the commit, after
    the route has returned and before the response is sent. A success therefore means the write is committed,
    and a commit that fails reaches the client as an error (api/errors.py), never after a 200.

    GET requests read only: on SQLite they begin a deferred transaction, so reads never queue behind the
    write lock that every other request takes at BEGIN IMMEDIATE."""
    engine = request.app.state.engine
    if request.method in ("GET", "HEAD"):
        engine = readonly_engine(engine)
    with session_scope(engine) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
# Integer ids in paths and bodies: bounded so that no value overflows the databases' 64-bit integers.
MAX_ID = 2**63 - 1
ResourceId = Annotated[int, Path(ge=1, le=MAX_ID, description="A positive integer id")]
EngineDep = Annotated[Engine, Depends(get_engine_dep)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

bearer = HTTPBearer(auto_error=False, description="An API token from `augloop token create`")


class AuthFailureLimiter:
    """Failed authentications per client address in a sliding minute; past the limit, 429."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.failures: dict[str, deque[float]] = defaultdict(deque)
        self.lock = threading.Lock()

    def _prune(self, key: str, now: float) -> deque[float]:
        q = self.failures[key]
        while q and now - q[0] > 60:
            q.popleft()
        return q

    def blocked(self, key: str) -> bool:
        with self.lock:
            return len(self._prune(key, time.monotonic())) >= self.per_minute

    def record(self, key: str) -> None:
        with self.lock:
            self._prune(key, time.monotonic()).append(time.monotonic())


def current_user(request: Request, session: SessionDep,
                 credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> User:
    limiter: AuthFailureLimiter = request.app.state.auth_limiter
    client = request.client.host if request.client else "unknown"
    if limiter.blocked(client):
        raise HTTPException(429, "too many failed authentications; wait a minute",
                            headers={"Retry-After": "60"})
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "missing bearer token (Authorization: Bearer <token>)",
                            headers={"WWW-Authenticate": "Bearer"})
    user = authenticate(session, credentials.credentials)
    if user is None:
        limiter.record(client)
        raise HTTPException(401, "invalid, expired or revoked token", headers={"WWW-Authenticate": "Bearer"})
    return user


def require_admin(user: Annotated[User, Depends(current_user)]) -> User:
    if user.role != Role.admin:
        raise HTTPException(403, "this action needs the admin role")
    return user


CurrentUser = Annotated[User, Depends(current_user)]
AdminUser = Annotated[User, Depends(require_admin)]
