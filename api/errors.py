"""Domain errors → HTTP, in one place. Every error body is JSON with `detail` (and `field` where one is at fault)."""

from __future__ import annotations

import errno
import logging
import os
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError, InvalidRequestError, NoResultFound, OperationalError
from sqlalchemy.orm.exc import ObjectDeletedError, StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from core.errors import DomainError
from db.session import commit_outcome_unknown
from services.failures import constraint_violated, database_trouble, driver_words
from trainer.errors import TrainerError

log = logging.getLogger("augloop.api")


# The answer to a request whose dataset or sample another request deleted meanwhile (404).
GONE = "what this request works on (a dataset or a sample) was deleted by another request meanwhile"


def gone_detail(request: Request) -> str:
    """GONE, and for a write that nothing of it was saved (its transaction was rolled back)."""
    return GONE if request.method in ("GET", "HEAD") else f"{GONE}; nothing was saved"


def operational_response(err: OperationalError, method: str = "POST") -> JSONResponse:
    """The answer to a statement or commit the database failed, by what failed (the API's handler, and a
    middleware that reads the database before the app does: api/main.py AuthorizedFirst). A read (GET, HEAD)
    is not told that "nothing was saved": it asked to save nothing."""
    nothing = "" if method in ("GET", "HEAD") else ", so nothing was saved"
    # The database failed the statement or the commit (locked past the busy timeout, disk full, connection
    # lost): the transaction was rolled back, so nothing of the request was stored. The driver's words stay in
    # the log: they name the database's host and port ("connection to server at …"), no client's business.
    if commit_outcome_unknown(err):  # the database may have committed it: a retry could store it twice
        log.warning("the connection was lost as a commit was sent: %s", driver_words(err))
        detail = (
            "the connection to the database was lost as this request's changes were committed, so they may have "
            "been saved; check before you retry"
        )
        return JSONResponse({"detail": detail}, status_code=503)
    trouble = database_trouble(err)
    if trouble != "failed":  # a failed statement is logged below, with its traceback
        log.warning("database error answered: %s", driver_words(err))
    if trouble == "disk_full":  # no retry helps until space is freed
        detail = f"the database's disk is full{nothing}; the operator must free space"
        return JSONResponse({"detail": detail}, status_code=507)
    if trouble == "read_only":
        detail = f"the database is read-only for the server{nothing}; the operator must fix it"
        return JSONResponse({"detail": detail}, status_code=503)
    if trouble == "disk_error":  # a file size limit, a failing disk: not "busy", and not passing by itself
        detail = (
            f"the database's disk failed a read or write (a disk I/O error){nothing}; the operator must check the "
            "disk (space, file size limits)"
        )
        return JSONResponse({"detail": detail}, status_code=503)
    if trouble == "failed":
        # A statement the database refuses the same way every time (SQLite's "no such table" after a
        # migration was skipped, "too many SQL variables"): "retry" would send the client round in circles.
        log.error("a database statement failed: %s", driver_words(err), exc_info=err)
        detail = f"the database failed a statement of this request{nothing}; the server's log has why"
        return JSONResponse({"detail": detail}, status_code=500)
    if trouble == "conflicted":  # Postgres cancelled it for a concurrent write: at once is fine
        detail = f"the database cancelled this request for a concurrent one{nothing}; retry"
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "1"})
    why = "busy with another write" if trouble == "locked" else "busy or unreachable"
    return JSONResponse(
        {"detail": f"the database is {why} and did not complete the request{nothing}; retry"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


# What an error body repeats of a request at most: a message quoting a 60,000-character query value (an unknown
# status, a dataset name) came back whole, as did a field named by a body's 60,000-character key.
DETAIL_CHARS, FIELD_CHARS, ERRORS_LISTED = 2_000, 200, 20


def shown(text: Any, limit: int) -> Any:
    """`text` cut to `limit` characters (… marks the cut); anything not a string as it is."""
    return text[: limit - 1] + "…" if isinstance(text, str) and len(text) > limit else text


# The methods a route of this API may take (FastAPI's decorators); HEAD goes with GET (api/main.py HeadAsGet).
ROUTE_METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> str:
    """The Allow header of a 405: every method the request's path takes. Starlette's router named the methods of
    the first route matching the path only, and FastAPI makes one route per method (`/datasets/{name}` answered
    a POST with `Allow: GET`, though it takes PATCH and DELETE too). Each method is asked of the app's routes as
    the router asks (an included router's own routes are not listed by the app)."""
    scope = {"type": "http", "path": request.scope["path"], "root_path": request.scope.get("root_path", "")}
    methods = {
        method
        for method in ROUTE_METHODS
        if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in request.app.router.routes)
    }
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(_request: Request, err: DomainError) -> JSONResponse:
        body = {"detail": shown(err.message, DETAIL_CHARS)}
        if err.field:
            body["field"] = shown(err.field, FIELD_CHARS)
        body.update(err.extra)
        retry = getattr(err, "retry_after", None)
        return JSONResponse(
            body, status_code=err.status_code, headers={"Retry-After": str(retry)} if retry is not None else None
        )

    @app.exception_handler(TrainerError)
    async def trainer_error(_request: Request, err: TrainerError) -> JSONResponse:
        # The trainer stands alone and has its own error: a config or data it cannot use.
        body = {"detail": err.message}
        if err.field:
            body["field"] = err.field
        return JSONResponse(body, status_code=422)

    @app.exception_handler(IntegrityError)
    async def integrity_error(request: Request, err: IntegrityError) -> JSONResponse:
        kind, constraint = constraint_violated(err)
        log.warning("integrity error answered %s (%s): %s", kind, constraint, str(err.orig or err).splitlines()[0])
        if kind == "foreign_key":
            # A row the write points at was deleted meanwhile (a dataset deleted while a job was queued into it):
            # a retry meets the same absence, so "retry" would mislead.
            return JSONResponse({"detail": gone_detail(request)}, status_code=404)
        if kind == "unique" and "content_hash" in constraint:
            # The same text written into one dataset twice at once: the check that lost the race names the text.
            return JSONResponse(
                {
                    "detail": "another request stored the same text in this dataset meanwhile; nothing was saved",
                    "field": "text",
                },
                status_code=409,
            )
        # A unique constraint raced past our own checks (two requests at once): a conflict, not a crash.
        return JSONResponse(
            {"detail": "conflicts with existing data (it changed concurrently); retry"}, status_code=409
        )

    @app.exception_handler(OperationalError)
    async def operational_error(request: Request, err: OperationalError) -> JSONResponse:
        return operational_response(err, request.method)

    # A row the request read was deleted by another request before it wrote (an admin deleted the dataset while
    # an annotator decided one of its variants): SQLAlchemy finds no row where it expected one. Each was a 500,
    # and uvicorn closed the client's connection.
    @app.exception_handler(NoResultFound)
    @app.exception_handler(ObjectDeletedError)
    @app.exception_handler(StaleDataError)
    async def deleted_meanwhile(request: Request, err: Exception) -> JSONResponse:
        log.info("answered 404, deleted meanwhile: %s", err)
        return JSONResponse({"detail": gone_detail(request)}, status_code=404)

    @app.exception_handler(InvalidRequestError)
    async def refreshed_after_deletion(request: Request, err: InvalidRequestError) -> JSONResponse:
        if "Could not refresh instance" not in str(err):  # a defect: the 500 it is
            raise err
        log.info("answered 404, deleted meanwhile: %s", err)
        return JSONResponse({"detail": gone_detail(request)}, status_code=404)

    @app.exception_handler(OverflowError)
    async def overflow_error(_request: Request, err: OverflowError) -> JSONResponse:
        # A number the database cannot hold (SQLite raises OverflowError for integers past 64 bits).
        return JSONResponse({"detail": f"a number is out of range: {err}"}, status_code=422)

    @app.exception_handler(DataError)
    async def data_error(_request: Request, err: DataError) -> JSONResponse:
        # The same on Postgres (numeric value out of range, a text too long for its column, invalid text
        # representation): said in the API's words; the database's (they may quote the value) go to the log.
        log.info("answered 422 for a database data error: %s", err.orig)
        said = {
            "22001": "a text is longer than the database holds",
            "22003": "a number is out of range for the database",
        }.get(str(getattr(err.orig, "sqlstate", "") or ""), "a value the database cannot store")
        return JSONResponse({"detail": said}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        errors = err.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", [])]
        if loc and loc[0] in ("body", "query", "path", "header"):  # where it came from, not a field (a field
            loc = loc[1:]  # of the body may itself be named `path` or `query`)
        field = ".".join(loc) or None
        reason = str(first.get("msg", "invalid")).removeprefix("Value error, ")  # a validator's own sentence
        message = f"{field}: {reason}" if field else reason
        if first.get("type") == "json_invalid":  # its loc is the byte offset, not a field
            field, message = "body", f"the body is not valid JSON ({first.get('msg', 'invalid')})"
        elif field is None and tuple(first.get("loc", ())) == ("body",):
            field = "body"
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if first.get("type") == "missing":
                message = "the request needs a JSON body"
            elif content_type and content_type != "application/json":  # curl -d sends form encoding
                message = f"send the body as JSON, with Content-Type: application/json (it came as {content_type[:80]})"
        listed = [
            {"loc": [shown(p, FIELD_CHARS) for p in e.get("loc", [])], "msg": e.get("msg"), "type": e.get("type")}
            for e in errors[:ERRORS_LISTED]
        ]
        return JSONResponse(
            {"detail": shown(message, DETAIL_CHARS), "field": shown(field, FIELD_CHARS), "errors": listed},
            status_code=422,
        )

    @app.exception_handler(OSError)
    async def os_error(request: Request, err: OSError) -> JSONResponse:
        # A file the request reads or writes (an import's upload, an ensemble's predictions) failed: a write's
        # transaction rolled back, and its files went with it. Said without the path (members read this); the
        # operator's log has it, with the traceback.
        log.error("%s %s failed: %s", request.method, request.url.path, err, exc_info=err)
        written = "" if request.method in ("GET", "HEAD") else ", so nothing was saved"
        if isinstance(err, (ConnectionError, TimeoutError)):  # a service the server needs, not a file
            return JSONResponse(
                {"detail": f"a service the server needs did not answer{written}; retry"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            return JSONResponse(
                {"detail": f"the server's storage is full{written}; retry once space is freed"}, status_code=507
            )
        cause = os.strerror(err.errno) if err.errno else type(err).__name__
        return JSONResponse(
            {"detail": f"the server could not read or write a file ({cause}){written}"},
            status_code=503 if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO) else 500,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        body: dict[str, Any] = {"detail": shown(err.detail, DETAIL_CHARS)}
        if (field := getattr(err, "field", None)) is not None:  # api/json_body.py RepeatedBodyKey
            body["field"] = field
        if err.status_code == 400 and request.method in ("POST", "PUT", "PATCH", "DELETE"):
            # a body the server could not read (FastAPI's "There was an error parsing the body": not UTF-8, a
            # Content-Encoding it does not take, nested or numbered past what JSON reading allows; Starlette's
            # multipart parser's own words): said as a body error, naming it, as malformed JSON is
            body["field"] = "body"
            if err.detail == "There was an error parsing the body":
                body["detail"] = (
                    "the body could not be read: send UTF-8 JSON, uncompressed, not nested deeper than a few "
                    "hundred levels"
                )
        headers = err.headers
        # a mount's own 405 (the docs' static files) is asked of routes the app does not list: its Allow stays
        if err.status_code == 405 and "Allow" in (headers or {}) and (methods := allowed_methods(request)):
            headers = {**(headers or {}), "Allow": methods}
        return JSONResponse(body, status_code=err.status_code, headers=headers)
