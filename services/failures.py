"""What project members read of a failure (a job's error, a run's).

The exception's class and words, with the server's paths taken out (services.access.without_server_paths). A
database error says what happened instead of the driver's words, which name the database's host, port and user
and carry the statement: whether SQLAlchemy wrapped it, the driver raised it (an import's COPY), another
exception was raised from it, or a session reports it later (PendingRollbackError). The worker's log keeps the
driver's words for the operator, and `augloop train` prints them. The API's answers to database errors
(api/errors.py) read the same kinds."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from services.access import without_server_paths

DatabaseTrouble = Literal[
    "disk_full", "read_only", "disk_error", "refused", "locked", "conflicted", "unreachable", "failed"
]

_SAID: dict[DatabaseTrouble, str] = {
    "disk_full": "the database's disk is full",
    "read_only": "the database is read-only for the worker",
    "disk_error": "the database's disk failed a read or write (a disk I/O error)",
    "refused": "the database refused a write that conflicts with what it holds",
    "locked": "the database was busy with another write past its busy timeout",
    "conflicted": "the database cancelled the write for a concurrent one (a deadlock or a serialization failure)",
    "unreachable": "the database was busy or unreachable",
    "failed": "the database failed a statement",
}
# What passes by itself: a database restarting or failing over, a write lock held past the busy timeout, a write
# cancelled for a concurrent one. A full disk, a read-only file, a refused write or a failed statement does not.
_PASSING: frozenset[DatabaseTrouble] = frozenset({"unreachable", "locked", "conflicted"})
_DRIVERS = ("sqlite3", "psycopg", "psycopg2")
_CHAIN_LIMIT = 20


def _is_a(err: BaseException, name: str) -> bool:
    """Whether `err` is of a DB-API class called `name` (the drivers and SQLAlchemy share the standard names)."""
    return any(cls.__name__ == name for cls in type(err).__mro__)


def _driver_error(err: BaseException) -> BaseException:
    return err.orig if isinstance(err, DBAPIError) and err.orig is not None else err


def driver_words(err: BaseException) -> str:
    """The first line of the driver's own message (for the log), or its error's class name."""
    orig = _driver_error(err)
    said = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return said or type(orig).__name__


def database_trouble(err: BaseException) -> DatabaseTrouble:
    """What went wrong, in the kinds an answer or a job's error tells apart: `err` is SQLAlchemy's error or the
    driver's own."""
    orig = _driver_error(err)
    said = driver_words(err)
    # SQLite's "database or disk is full", Postgres' disk_full (SQLSTATE 53100): no retry helps until space is freed
    if "disk is full" in said or getattr(orig, "sqlstate", None) == "53100":
        return "disk_full"
    if "readonly" in said or "read-only" in said:
        return "read_only"
    if _is_a(err, "IntegrityError") or _is_a(orig, "IntegrityError"):
        return "refused"
    sqlstate = str(getattr(orig, "sqlstate", None) or "")
    if sqlstate:  # Postgres says which: a lost connection (08…), a server shutting down (57P0…), short of
        # resources (53…: memory, connections; disk full is above), a system or I/O error (58…), a session ended
        # for idling in a transaction (25P03)
        if sqlstate.startswith(("08", "57P0", "53", "58")) or sqlstate == "25P03":
            return "unreachable"
        if sqlstate in ("40001", "40P01"):
            return "conflicted"
        if sqlstate in ("55P03", "57014"):  # lock_not_available, query_canceled (a lock or statement timeout)
            return "locked"
        return "failed"
    if "locked" in said or "busy" in said:
        return "locked"
    # SQLite's own: a file it cannot open or read; its other OperationalErrors (no such table, too many SQL
    # variables) are statements that fail the same way every time. A connection refused or lost before any
    # statement (the driver names no SQLSTATE) is unreachable.
    # SQLite's "disk I/O error": a write its file system refused (a file size limit, a failing disk, space gone
    # at the wrong moment); it was read as "busy or unreachable; retry", and retried by workers as an outage
    if "disk I/O error" in said:
        return "disk_error"
    if "unable to open" in said or "connection" in said.lower():
        return "unreachable"
    if type(orig).__module__.split(".")[0] != "sqlite3" and any(
        _is_a(e, n) for e in (err, orig) for n in ("OperationalError", "InterfaceError")
    ):
        return "unreachable"
    return "failed"


def _from_driver(err: BaseException) -> bool:
    """A driver's error, or SQLAlchemy's wrapper of one."""
    return isinstance(err, DBAPIError) or type(err).__module__.split(".")[0] in _DRIVERS


def constraint_violated(err: IntegrityError) -> tuple[str, str]:
    """(kind, constraint) of an integrity error, by the driver's codes, not its (translatable) words: kind
    `foreign_key`, `unique` or `other`; the constraint's name (Postgres) or the columns (SQLite's message)."""
    orig = err.orig
    sqlstate = getattr(orig, "sqlstate", None)  # psycopg 3
    if sqlstate is not None:
        diag = getattr(orig, "diag", None)
        name = str(getattr(diag, "constraint_name", None) or "")
        return {"23503": "foreign_key", "23505": "unique"}.get(sqlstate, "other"), name
    code = getattr(orig, "sqlite_errorname", "")  # sqlite3, Python 3.11+
    said = str(orig or err)
    columns = said.split("failed:", 1)[-1].strip() if "failed:" in said else ""
    kinds = {"SQLITE_CONSTRAINT_FOREIGNKEY": "foreign_key", "SQLITE_CONSTRAINT_UNIQUE": "unique"}
    return kinds.get(code, "other"), columns


def database_error_in(err: BaseException) -> BaseException | None:
    """The database error that `err` is or was raised from (its cause or context, a few links deep), if any."""
    link: BaseException | None = err
    for _ in range(_CHAIN_LIMIT):
        if link is None:
            return None
        if _from_driver(link):
            return link
        if isinstance(link, SQLAlchemyError) and ("[SQL:" in str(link) or "Original exception was" in str(link)):
            return link  # a statement's error reported again (PendingRollbackError): no driver error to read
        # `raise X from None` says its error stands alone: a database error it was raised while handling is not it
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)
    return None


def database_outage(err: BaseException) -> bool:
    """Whether `err` is, or was raised from, a driver's database error that passes by itself (the database
    restarting, locked, or cancelling a write for a concurrent one): the same work may well succeed later."""
    found = database_error_in(err)
    return found is not None and _from_driver(found) and database_trouble(found) in _PASSING


def failure_text(err: BaseException) -> str:
    """A failure as a job's or a run's error shows it to the project's members: storable in any database and
    answerable as JSON (a NUL or a lone surrogate quoted from a file made the failure itself fail to be stored,
    and the worker process with it)."""
    found = database_error_in(err)
    if found is None:
        said = without_server_paths(f"{type(err).__name__}: {err}")
        return said.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    trouble = database_trouble(found) if _from_driver(found) else "failed"
    return f"{type(err).__name__}: {_SAID[trouble]} (the log of the process that ran it has the driver's message)"


def worker_silent(status: str, lease_until: datetime | None, now: datetime) -> bool:
    """A running job whose worker stopped renewing its lease (killed, its machine gone): it is re-queued, or ends
    on its last attempt, only when a worker (or the CLI) next looks for work, so until then it reads "running"
    though nothing runs it. Reads say so rather than write (a GET ends no job). `now`: the database's clock, the
    one leases are read from (db.queue.db_now)."""
    return status == "running" and lease_until is not None and lease_until < now
