"""Request dependencies: a database session per request, and the authenticated user with a role check."""

from __future__ import annotations

import re
import threading
import time
import types
from collections import OrderedDict, deque
from collections.abc import Iterator
from typing import Annotated, Any, Union, get_args, get_origin

from fastapi import Depends, HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BeforeValidator
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.errors import ValidationFailed
from core.inputs import MAX_ID
from core.settings import Settings
from db.models import Role, User
from db.session import readonly_engine, session_scope
from services.tokens import authenticate

# set on the scope of a HEAD, which HeadAsGet (api/main.py) answers through the route of its GET
HEAD_SCOPE_KEY = "augloop.head"


def is_head(request: Request) -> bool:
    """Whether the request is a HEAD answered by its GET route: a route whose body costs work to make (an export)
    answers the GET's status and headers without making it."""
    return bool(request.scope.get(HEAD_SCOPE_KEY))


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_engine_dep(request: Request) -> Engine:
    return request.app.state.engine


# POSTs that write nothing (their body is too large or structured for a query string): a model's predictions, a
# training estimate, an impact report's estimate. They read as GETs do (no write lock), and pass the SQLite write
# queue (api/main.py).
READ_ONLY_POST = re.compile(r"^/api/v1/(models/[^/]+/predict|training-estimates|datasets/[^/]+/impact-estimates)$")
# Import jobs take files of any size (AUGLOOP_MAX_UPLOAD_BYTES): the upload streams to disk, and the job reads it
# in chunks. The request reads as a GET does while the file is kept (minutes for gigabytes) and writes its job in
# a short transaction of its own at the end (services/datasets.py queue_import).
IMPORT_JOB_PATH = re.compile(r"^/api/v1/datasets/[^/]+/imports$")
# POSTs that read (and compute) first under a read-only session, then commit their write in a short transaction of
# their own: an import job (above), an ensemble (its members' predictions read and combined, seconds for 32 runs
# of 10,000 val texts: services/ensembles.py create_ensemble_briefly). They pass the SQLite write queue too.
OWN_WRITE_POST = re.compile(r"^/api/v1/(datasets/[^/]+/imports|ensembles)$")


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back when it raises.

    The dependency has the "function" scope (SessionDep below): FastAPI runs its exit, and so the commit, after
    the route has returned and before the response is sent. A success therefore means the write is committed,
    and a commit that fails reaches the client as an error (api/errors.py), never after a 200.

    GET requests read only: on SQLite they begin a deferred transaction, so reads never queue behind the
    write lock that every other request takes at BEGIN IMMEDIATE."""
    engine = request.app.state.engine
    path = request.url.path
    if request.method in ("GET", "HEAD") or READ_ONLY_POST.match(path) or OWN_WRITE_POST.match(path):
        engine = readonly_engine(engine)
    with session_scope(engine) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
HeadRequest = Annotated[bool, Depends(is_head)]
DIGITS = re.compile(r"[0-9]{1,19}")


def _plain_id(value: object) -> object:
    """An id in a path is written in ASCII digits: pydantic's lax parsing read `1.0`, `+1`, `1_0`, ` 1` and a
    full-width one (U+FF11) as the id 1, so one resource answered at many addresses (an attacker's find)."""
    if isinstance(value, str) and not DIGITS.fullmatch(value):
        raise ValueError("an id is a positive whole number written in digits 0-9")
    return value


# Integer ids in paths and bodies: bounded so that no value overflows the databases' 64-bit integers.
ResourceId = Annotated[int, BeforeValidator(_plain_id), Path(ge=1, le=MAX_ID, description="A positive integer id")]
EngineDep = Annotated[Engine, Depends(get_engine_dep)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

bearer = HTTPBearer(auto_error=False, description="An API token from `augloop token create`")


class AuthFailureLimiter:
    """Failed authentications in a sliding minute, counted per client address; past the limit, 429.

    Per address, so that many users behind one address (the review UI's server, an office NAT) are not locked
    out by one person's typos when the UI passes on its browser's address (trusted only from
    AUGLOOP_TRUSTED_PROXIES). Not per token: a token's secret is 256 random bits (db/auth.py), so no rate of
    guessing from any number of addresses comes near it, while its first characters are public (token lists
    show them): a count keyed on them let anyone lock a token's owner out by sending wrong tokens that start
    alike. Memory is bounded: at most `max_keys` keys, the least recently failed ones dropped first."""

    def __init__(self, per_minute: int, max_keys: int = 10_000) -> None:
        self.per_minute = per_minute
        self.max_keys = max_keys
        self.failures: OrderedDict[str, deque[float]] = OrderedDict()
        self.lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        q = self.failures.get(key)
        if q is None:
            return None
        while q and now - q[0] > 60:
            q.popleft()
        if not q:
            del self.failures[key]
            return None
        return q

    def blocked(self, *keys: str) -> bool:
        now = time.monotonic()
        with self.lock:
            return any(len(self._recent(k, now) or ()) >= self.per_minute for k in keys)

    def record(self, *keys: str) -> None:
        now = time.monotonic()
        with self.lock:
            for key in keys:
                q = self._recent(key, now) or deque()
                q.append(now)
                self.failures[key] = q
                self.failures.move_to_end(key)
            while len(self.failures) > self.max_keys:
                self.failures.popitem(last=False)


def client_address(request: Request, trusted_proxies: list[str]) -> str:
    """The caller's address: the peer's, or, when the peer is a trusted proxy (the review UI's server, a load
    balancer), the right-most address of X-Forwarded-For that is not itself a trusted proxy. A header from
    anyone else is ignored: it would let a client choose which address its failures count against."""
    peer = request.client.host if request.client else "unknown"
    if peer not in trusted_proxies:
        return peer
    forwarded = [a.strip() for a in request.headers.get("x-forwarded-for", "").split(",") if a.strip()]
    for address in reversed(forwarded):
        if address not in trusted_proxies:
            return address
    return peer


def current_user(
    request: Request, session: SessionDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> User:
    limiter: AuthFailureLimiter = request.app.state.auth_limiter
    settings: Settings = request.app.state.settings
    client = "client:" + client_address(request, settings.trusted_proxies)
    if limiter.blocked(client):
        raise HTTPException(429, "too many failed authentications; wait a minute", headers={"Retry-After": "60"})
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            401, "missing bearer token (Authorization: Bearer <token>)", headers={"WWW-Authenticate": "Bearer"}
        )
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


def _takes_many(annotation: Any) -> bool:
    """Whether a query parameter's type is a list (it may be repeated: `?x=a&x=b`)."""
    origin = get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    if origin is Annotated:
        return _takes_many(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return any(_takes_many(arg) for arg in get_args(annotation))
    return False


def _route_queries(route: Any) -> dict[str, bool]:
    """The query parameters a route takes (its own and its dependencies'), each with whether it may repeat; kept
    on the route itself (an id() key outlived its route, and a new app's route could reuse the id and read
    another route's parameters)."""
    found: dict[str, bool] | None = getattr(route, "_augloop_query_names", None)
    if found is None:
        found, stack = {}, [route.dependant]
        while stack:
            node = stack.pop()
            for field in node.query_params:
                found[field.alias] = _takes_many(field.field_info.annotation)
            stack.extend(node.dependencies)
        route._augloop_query_names = found
    return found


async def known_query(request: Request) -> None:
    """Every route's query string names only parameters it takes, each once unless it takes a list: an unknown
    name was ignored (`?metod=wordnet` showed the whole queue, `?formt=jsonl` exported CSV, `DELETE
    …?dry_run=1` deleted) and a repeated one kept its last value (`?include=original&include=approved`, what
    clients send for a list, exported no originals); 422 naming the parameter (attackers' finds), as bodies
    and forms refuse unknown and repeated keys. The token is checked first: a client without a valid one gets
    401 (or 429), not the route's parameters, and its failure counts against it."""
    route = request.scope.get("route")
    if getattr(route, "dependant", None) is None or not request.url.path.startswith("/api/"):  # /healthz: ?t=…
        return
    problem = _query_problem(request, route)
    if problem is None:
        return
    if _needs_user(route):
        credentials = await bearer(request)

        def check() -> None:
            with session_scope(readonly_engine(request.app.state.engine)) as session:
                current_user(request, session, credentials)

        await run_in_threadpool(check)
    raise problem


def _query_problem(request: Request, route: Any) -> ValidationFailed | None:
    takes = _route_queries(route)
    for name in dict.fromkeys(request.query_params.keys()):
        if name not in takes:
            known = ", ".join(sorted(takes)) or "none"
            said = f"unknown query parameter {name[:60]!r}; this route takes: {known}"
            return ValidationFailed(said, field=name[:60])
        if not takes[name] and (n := len(request.query_params.getlist(name))) > 1:
            return ValidationFailed(
                f"query parameter {name!r} is given {n} times; give it once (several values comma-separated, where "
                "it takes several)",
                field=name,
            )
    return None


def _needs_user(route: Any) -> bool:
    """Whether the route authenticates its caller (current_user among its dependencies, at any depth)."""
    stack = [route.dependant]
    while stack:
        node = stack.pop()
        if node.call is current_user:
            return True
        stack.extend(node.dependencies)
    return False
