"""The FastAPI application: routers under /api/v1, error mapping, request size limit, CORS closed by default."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import (
    HEAD_SCOPE_KEY,
    IMPORT_JOB_PATH,
    OWN_WRITE_POST,
    READ_ONLY_POST,
    AuthFailureLimiter,
    bearer,
    current_user,
    known_query,
    require_admin,
)
from api.errors import install_error_handlers, operational_response
from api.routes import (
    augment,
    datasets,
    health,
    impact,
    jobs,
    projects,
    review_work,
    reviews,
    tokens,
    training,
    variants,
)
from api.schemas import ErrorRead
from core import __version__
from core.settings import Settings, get_settings
from db.session import get_engine, readonly_engine, session_scope

API_PREFIX = "/api/v1"
ROUTERS: list[Any] = [
    projects.router,
    datasets.router,
    jobs.router,
    tokens.router,
    reviews.router,
    review_work.router,
    training.router,
    augment.router,
    impact.router,
    variants.router,
]


class BodySizeLimit:
    """Refuse bodies over the limit with 413 before reading them (Content-Length) or while streaming them. An
    import job's upload (IMPORT_JOB_PATH) may reach AUGLOOP_MAX_UPLOAD_BYTES; every other body is read into memory
    and keeps the ordinary limit."""

    def __init__(self, app: ASGIApp, max_bytes: int, upload_max_bytes: int | None = None) -> None:
        self.app = app
        self.default_max_bytes = max_bytes
        self.upload_max_bytes = upload_max_bytes or max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = IMPORT_JOB_PATH.match(scope.get("path", "")) is not None
        max_bytes = self.upload_max_bytes if upload else self.default_max_bytes
        for key, value in scope.get("headers", []):
            if key == b"content-length" and value.isdigit() and int(value) > max_bytes:
                await self._reject(send, max_bytes)
                return
        seen = 0
        too_big = False

        async def limited_receive():  # type: ignore[no-untyped-def]
            nonlocal seen, too_big
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    too_big = True
                    raise _TooLarge
            return message

        rejected = False

        async def guarded_send(message):  # type: ignore[no-untyped-def]
            # Whatever the app makes of the aborted read (FastAPI turns it into a 400), the client gets 413.
            nonlocal rejected
            if not too_big:
                await send(message)
            elif not rejected:
                rejected = True
                await self._reject(send, max_bytes)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            if not rejected:
                await self._reject(send, max_bytes)

    async def _reject(self, send: Send, max_bytes: int) -> None:
        body = json.dumps({"detail": f"request body exceeds {max_bytes} bytes", "field": "body"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class NulInUrl:
    """Refuse a NUL character (%00) in the path or a query parameter with 422 naming it, before any route runs.

    No text in augloop may hold one (core.textnorm.text_problem): Postgres refuses it in a text value, so a search
    for it (`?q=%00`) or a name holding one reached the database and came back as a 422 naming no field."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            field = None
            if "\x00" in scope.get("path", ""):
                field = "path"
            else:
                query = scope.get("query_string", b"").decode("latin-1")
                params = parse_qsl(query, keep_blank_values=True, encoding="utf-8", errors="replace")
                field = next((name for name, value in params if "\x00" in name + value), None)
            if field is not None:
                body = json.dumps({"detail": f"{field}: holds a NUL character", "field": field}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 422,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class HeadAsGet:
    """HEAD is answered wherever GET is, without the body (RFC 9110; `curl -I` and uptime checks got 405):
    FastAPI's routes take the methods they name, and GET does not bring HEAD with it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await send(message)

        # marked (api/deps.py is_head): a route whose body costs work skips it, the rest send a body dropped here
        await self.app({**scope, "method": "GET", HEAD_SCOPE_KEY: True}, receive, headers_only)


class AuthorizedFirst:
    """A request with a body is authenticated before a byte of its body is read: without a valid token the client
    gets the route's own 401 or 429 at once, not after the server has read, parsed and held its body (a 50 MiB
    JSON body without a token cost the API about 360 MB before its 401, and six at once 2.5 GB), and no body of
    an unknown client ever waits in SQLiteWriteQueue's buffer or for its lock (two such connections, sending
    their bodies and stopping, held every annotator's writes; an attacker's finds). An import upload (up to
    AUGLOOP_MAX_UPLOAD_BYTES, spooled to disk as it arrives) is authorized too: an admin's, or the route's 403.
    The route's dependency checks the same token again (api/deps.py: one code path decides)."""

    BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if scope["type"] == "http" and scope.get("method") in self.BODY_METHODS and path.startswith(API_PREFIX + "/"):
            request = Request(scope)
            credentials = await bearer(request)
            upload = scope.get("method") == "POST" and IMPORT_JOB_PATH.match(path)

            def authorize() -> None:
                with session_scope(readonly_engine(request.app.state.engine)) as session:
                    user = current_user(request, session, credentials)
                    if upload:
                        require_admin(user)

            try:
                await run_in_threadpool(authorize)
            except HTTPException as err:
                response = JSONResponse({"detail": err.detail}, status_code=err.status_code, headers=err.headers)
                await response(scope, receive, send)
                return
            except OperationalError as err:  # nothing is read; answered as the route's failure would be
                await operational_response(err, scope.get("method", "POST"))(scope, receive, send)
                return
            except SQLAlchemyError:
                response = JSONResponse({"detail": ERROR_RESPONSES[503]}, status_code=503)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class SQLiteWriteQueue:
    """On SQLite, let one writing request at a time into the app; the others wait on the event loop.

    SQLite admits one writer anyway (every write transaction begins with BEGIN IMMEDIATE). Without this, under
    load every thread of the pool ends up blocked in SQLite's busy wait while the request holding the lock waits
    for a free thread to commit: a starvation that lasted until the 30 s busy timeout (measured with
    bench/load.py). Reads (GET) pass straight through: they never take the write lock, and so do import-job
    uploads, which may take minutes to arrive and write one short enqueue at the end, ensembles, which read and
    combine their members first and write in a short transaction at the end (OWN_WRITE_POST), and the POSTs that only
    compute (READ_ONLY_POST: a prediction, a training estimate), which may run a model for seconds.

    A request's body is read before it queues: a client that sends its body slowly (or never finishes it) holds
    its own connection, not every other user's writes. BodySizeLimit, outside this, bounds each body, and
    AuthorizedFirst lets in only authenticated requests; the bodies waiting together are held in memory up to
    BUFFERED_BYTES in all, past which a request is answered 503 (retry) before it queues, so no number of large
    bodies sent at once fills memory, and none waits for the lock with its body unread (such a request read its
    body holding the lock: two connections sending 66 MiB and stopping held every other write)."""

    BUFFERED_BYTES = 64 * 1024 * 1024

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.lock = asyncio.Lock()
        self.buffered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope.get("method") in ("GET", "HEAD", "OPTIONS")
            or OWN_WRITE_POST.match(path)
            or READ_ONLY_POST.match(path)
        ):
            await self.app(scope, receive, send)
            return
        received: list[Message] = []
        held = 0
        try:
            complete = False
            while self.buffered < self.BUFFERED_BYTES:
                message = await receive()
                received.append(message)
                size = len(message.get("body", b""))
                held += size
                self.buffered += size
                if message["type"] != "http.request" or not message.get("more_body", False):
                    complete = True
                    break
            if not complete:
                response = JSONResponse(
                    {"detail": "the server holds as many request bodies as it may; nothing was saved; retry"},
                    status_code=503,
                    headers={"Retry-After": "1"},
                )
                await response(scope, receive, send)
                return

            async def replay() -> Message:
                return received.pop(0) if received else await receive()

            async with self.lock:
                await self.app(scope, replay, send)
        finally:
            self.buffered -= held


ERROR_RESPONSES = {
    401: "Missing, invalid, expired or revoked token",
    403: "The token's role may not do this",
    404: "Not found",
    409: "Conflict: stale version or duplicate",
    413: "Request body or file too large",
    422: "Invalid input; `field` names what is wrong",
    429: "Too many failed authentications",
    503: "The database did not complete the request; nothing was saved; retry",
}


def install_error_schema(app: FastAPI) -> None:
    """Document the one error shape api/errors.py returns, in place of FastAPI's default 422 body."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            components = schema.get("components", {}).get("schemas", {})
            if "HTTPValidationError" in components:
                components["HTTPValidationError"] = {"$ref": "#/components/schemas/ErrorRead"}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_local_docs(app: FastAPI) -> None:
    """/docs with Swagger UI's files served by the API itself (swagger-ui-bundle), so the page works on a
    machine without internet. Like /openapi.json it needs no token: it describes the API, it holds no data."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> Any:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="augloop API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="augloop",
        version=__version__,
        description="Augment minority classes, review the variants, train on approved data.",
        docs_url=None,  # served below with local assets: the default page loads Swagger UI from a CDN
        redoc_url=None,
        responses={code: {"model": ErrorRead, "description": text} for code, text in ERROR_RESPONSES.items()},
        dependencies=[Depends(known_query)],
        redirect_slashes=False,  # `/jobs/` was a 307 to http://<the Host header>/jobs: a 404 now, JSON as all
    )
    install_error_schema(app)
    app.state.settings = settings
    app.state.engine = engine or get_engine(settings.resolved_database_url)
    app.state.auth_limiter = AuthFailureLimiter(settings.auth_failures_per_minute)
    install_error_handlers(app)
    install_local_docs(app)
    app.include_router(health.router)
    for router in ROUTERS:
        app.include_router(router, prefix=API_PREFIX)
    # The last added runs first: CORS outermost, so that the refusals of the others (413, a NUL's 422) carry its
    # headers and a browser on another origin can read them.
    if app.state.engine.dialect.name == "sqlite":
        app.add_middleware(SQLiteWriteQueue)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes, upload_max_bytes=settings.max_upload_bytes)
    app.add_middleware(AuthorizedFirst)
    app.add_middleware(NulInUrl)
    app.add_middleware(HeadAsGet)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app
