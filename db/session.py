"""Engines and sessions. SQLite gets WAL, foreign keys and a busy timeout; every engine is migrated on first use."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Result, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from core.files import delete_path
from core.settings import Settings, get_settings

log = logging.getLogger("augloop.db")

_lock = threading.Lock()
WRITE_LOCK_SINCE = "augloop_write_lock_since"  # Connection.info: time.monotonic() at BEGIN IMMEDIATE (SQLite)
# SQLite: a BEGIN IMMEDIATE that waited this long for the write lock (or was refused it at the busy timeout) found
# another connection holding it; the process notes when (write_lock_blocked_within).
WRITE_LOCK_WAIT_NOTED_SECONDS = 2.0
_write_lock_blocked_at: float | None = None


def _note_blocked() -> None:
    global _write_lock_blocked_at
    _write_lock_blocked_at = time.monotonic()


def write_lock_blocked_within(seconds: float) -> bool:
    """Whether a connection of this process waited long for SQLite's write lock (or was refused it) in the last
    `seconds`: while one connection held it, no other could write, heartbeats included."""
    blocked = _write_lock_blocked_at
    return blocked is not None and time.monotonic() - blocked < seconds


_engines: dict[str, Engine] = {}
_migrated: set[str] = set()


def make_engine(url: str, settings: Settings | None = None) -> Engine:
    settings = settings or get_settings()
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            # Private even when created by a library caller that did not set a umask (the CLI sets 077).
            Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # hide_parameters: a statement's values (a dataset's texts, token hashes) stay out of error messages and
        # logs; a failed insert of an augment job's variants logged 560,000 characters of them.
        engine = create_engine(
            url, connect_args={"timeout": settings.sqlite_busy_timeout_ms / 1000}, hide_parameters=True
        )
        busy_ms = settings.sqlite_busy_timeout_ms

        @event.listens_for(engine, "do_connect")
        def _sqlite_file_check(dialect, _record, cargs, cparams):  # type: ignore[no-untyped-def]
            if path and path != ":memory:":
                return _connect_checked(Path(path), lambda: dialect.connect(*cargs, **cparams))
            return None

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # pysqlite's own transaction handling would defer BEGIN; take control so that the claim
            # and other read-modify-write steps start with BEGIN IMMEDIATE where they ask for it.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA mmap_size=268435456")  # full scans of a big review queue ran ~20% faster
            cur.close()
            if path and path != ":memory:" and Path(path).exists():
                _owner_only(Path(path))

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # type: ignore[no-untyped-def]
            # Writers serialise in SQLite anyway; taking the write lock at BEGIN avoids the
            # deadlock-prone upgrade from a read lock that makes busy_timeout useless.
            readonly = conn.get_execution_options().get("readonly", False)
            started = time.monotonic()
            try:
                conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")
            except DBAPIError:
                if not readonly:  # refused at the busy timeout: another connection held the lock all along
                    _note_blocked()
                raise
            if not readonly and time.monotonic() - started >= WRITE_LOCK_WAIT_NOTED_SECONDS:
                _note_blocked()
            # when this connection took the write lock (db/queue.py gives the time it held it back to leases)
            conn.info[WRITE_LOCK_SINCE] = None if readonly else time.monotonic()

        _watch_commits(engine)
        return engine
    engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, hide_parameters=True)
    _watch_commits(engine)
    return engine


# Connection.info: its COMMIT is under way (set as it is sent, cleared as the connection's next transaction begins).
_COMMITTING = "augloop_committing"
# On the error of a COMMIT (commit_outcome_unknown reads whether it lost the connection).
_IN_COMMIT = "augloop_error_in_commit"


def _watch_commits(engine: Engine) -> None:
    """Mark the error of a COMMIT lost with its connection (commit_outcome_unknown). The server may have received
    it and committed before the connection went: a request answered 503 "nothing was saved; retry" had been
    stored (a token issued that nobody held, a job queued twice when the client retried)."""

    @event.listens_for(engine, "commit")
    def _committing(conn):  # type: ignore[no-untyped-def]
        conn.info[_COMMITTING] = True

    @event.listens_for(engine, "begin", insert=True)  # before SQLite's BEGIN IMMEDIATE, which may fail
    def _begun(conn):  # type: ignore[no-untyped-def]
        conn.info.pop(_COMMITTING, None)

    @event.listens_for(engine, "handle_error")
    def _failed_in_commit(context):  # type: ignore[no-untyped-def]
        conn = context.connection
        if conn is not None and conn.info.pop(_COMMITTING, False) and context.sqlalchemy_exception is not None:
            setattr(context.sqlalchemy_exception, _IN_COMMIT, True)


def commit_outcome_unknown(err: BaseException) -> bool:
    """Whether `err` is a COMMIT that lost its connection as it was sent: committed or not, nobody here knows.
    (Whether it was a disconnect is read from the error raised, once every handle_error listener had its say.)"""
    return bool(getattr(err, _IN_COMMIT, False)) and bool(getattr(err, "connection_invalidated", False))


SQLITE_HEADER = b"SQLite format 3\x00"


def _refuse_non_database(db_file: Path) -> None:
    """SQLite takes a file shorter than its 100-byte header for an empty database and writes over it: a 1-byte
    note or a short CSV named by AUGLOOP_DATABASE_URL by mistake was lost. A file that has content and does not
    begin with SQLite's header is refused as SQLite refuses a longer one (an empty file is a new database), naming
    the file, as is a directory (SQLite said only "unable to open database file", read as an outage)."""
    import sqlite3

    if db_file.is_dir():
        raise sqlite3.DatabaseError(f"{db_file} is a directory, not a database file")
    try:
        with db_file.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return
    except OSError:  # unreadable: SQLite's own error says why
        return
    if head and head != SQLITE_HEADER:
        raise sqlite3.DatabaseError(f"file is not a database: {db_file} does not begin with SQLite's header")


# (device, inode) of the database files this process has checked and opened. SQLite's locks are POSIX advisory
# locks, which belong to the process and all go when it closes any descriptor of the file: the header check,
# run for every new connection of the pool, released the locks its open connections held, so another process
# (a worker, the CLI) closing the last connection it believed there was checkpointed the WAL and deleted it and
# the shared-memory file under them. The next write of this process went to the deleted WAL: committed and read
# back here, never seen by another process, and gone when this one exited ("database disk image is malformed"
# in the API meanwhile). A file is checked once per process, before SQLite holds anything on it.
_checked_files: set[tuple[int, int]] = set()
_checked_lock = threading.Lock()


def _file_key(db_file: Path) -> tuple[int, int] | None:
    try:
        found = db_file.stat()  # a stat opens no descriptor
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _connect_checked(db_file: Path, connect: Callable[[], Any]) -> Any:
    """The do_connect hook: the first connection of this process to `db_file` is made after the header check
    (`_refuse_non_database`), under a lock, so that no check opens and closes the file while a connection of
    this process holds SQLite's locks on it; later ones (None: SQLAlchemy's own connect) check nothing."""
    key = _file_key(db_file)
    if key is not None and key in _checked_files:
        return None
    with _checked_lock:
        key = _file_key(db_file)
        if key is not None and key in _checked_files:
            return None
        _refuse_non_database(db_file)
        connection = connect()
        if (key := _file_key(db_file)) is not None:  # SQLite creates a new database's file as it connects
            _checked_files.add(key)
        return connection


def _owner_only(db_file: Path) -> None:
    """0600 for the database, its WAL and shared-memory files (SQLite creates those with the file's mode)."""
    for f in (db_file, db_file.with_name(db_file.name + "-wal"), db_file.with_name(db_file.name + "-shm")):
        try:
            if f.exists() and f.stat().st_mode & 0o077:
                f.chmod(0o600)
        except OSError:  # not ours to change (a shared volume): leave it
            pass


def get_engine(url: str | None = None, *, migrate: bool = True) -> Engine:
    """The process-wide engine for `url` (default: the configured database), brought to the latest schema."""
    url = url or get_settings().resolved_database_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url)
        if migrate and url not in _migrated:
            from db.migrate import upgrade_to_head

            upgrade_to_head(engine)
            _migrated.add(url)
    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A unit of work: commit on success, roll back on error."""
    session = Session(bind=engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


_UNCOMMITTED_FILES = "augloop_uncommitted_files"


def discard_unless_committed(session: Session, path: Path) -> None:
    """Delete `path` (a file or a folder) if the transaction it was written in ends without committing: a file
    written for a row that was never stored (a failed commit, an error after the write) is not left behind, nor
    found later by the row that takes the same id. Written inside a savepoint, it goes when that savepoint rolls
    back (its rows went with it) or the whole transaction does; a savepoint released is not a commit."""
    if not session.in_transaction():
        session.begin()  # no statement yet: without a transaction, a rollback would end nothing and say nothing
    owner = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_UNCOMMITTED_FILES, []).append((owner, path))


_FILES_TO_DELETE = "augloop_files_to_delete"


def delete_when_committed(session: Session, path: Path) -> None:
    """Delete `path` (a file or a folder) once the transaction commits: the rows that named it are gone for good.
    If the transaction (or the savepoint it was asked in) rolls back, the file stays with the rows that name it."""
    if not session.in_transaction():
        session.begin()
    owner = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_FILES_TO_DELETE, []).append((owner, path))


@event.listens_for(Session, "after_commit")
def _keep_files(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint released: the transaction may still roll back
        return
    session.info.pop(_UNCOMMITTED_FILES, None)
    for _owner, path in session.info.pop(_FILES_TO_DELETE, []):
        try:
            delete_path(path)
        except OSError as err:  # the rows are gone for good: the workers' sweep tries again (leftover_files)
            log.warning("could not delete %s after its rows were deleted: %s", path, err)


@event.listens_for(Session, "after_transaction_end")
def _forget_deletions(session: Session, transaction: Any) -> None:
    """A root transaction ended without a commit or a rollback the session saw (Session.close): the deletions it
    asked are called off, never carried into the session's next transaction."""
    if transaction.parent is None and not transaction.nested:
        session.info.pop(_FILES_TO_DELETE, None)


@event.listens_for(Session, "after_soft_rollback")
def _discard_files(session: Session, previous_transaction: Any) -> None:
    """The files written within the transaction or savepoint that rolled back (or a savepoint inside it) go. A
    failed flush reports the rollback of its own step, not of the savepoint or transaction it runs in, which it
    nevertheless undoes: it counts as theirs."""
    while previous_transaction.parent is not None and not previous_transaction.nested:
        previous_transaction = previous_transaction.parent
    gone: list[Path] = []
    kept: list[tuple[Any, Path]] = []
    for owner, path in session.info.pop(_UNCOMMITTED_FILES, []):
        if _within(owner, previous_transaction):
            gone.append(path)
        else:
            kept.append((owner, path))
    if kept:
        session.info[_UNCOMMITTED_FILES] = kept
    for path in gone:
        try:
            delete_path(path)
        except OSError as err:
            log.warning("could not delete %s, written for rows that were rolled back: %s", path, err)
    # Deletions asked within it are called off: the rows that name those files are back.
    still = [(o, p) for o, p in session.info.pop(_FILES_TO_DELETE, []) if not _within(o, previous_transaction)]
    if still:
        session.info[_FILES_TO_DELETE] = still


def _within(transaction: Any, ended: Any) -> bool:
    while transaction is not None:
        if transaction is ended:
            return True
        transaction = transaction.parent
    return False


def readonly_engine(engine: Engine) -> Engine:
    """The same pool, for read-only sessions: on SQLite they begin without taking the write lock."""
    return engine.execution_options(readonly=True)


def snapshot_engine(engine: Engine) -> Engine:
    """readonly_engine whose transactions read one snapshot throughout: REPEATABLE READ on Postgres, where READ
    COMMITTED let an export paged by id write half a dataset's rows before a class rename committed and half
    after (two classes in one file). SQLite's read transaction is one snapshot already."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(readonly=True, isolation_level="REPEATABLE READ")
    return readonly_engine(engine)


def insert_for(session: Session) -> Any:
    """The dialect's INSERT construct (Postgres' or SQLite's), which takes ON CONFLICT DO NOTHING."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def affected_rows(result: Result[Any]) -> int:
    """The rows an UPDATE or DELETE without RETURNING matched. Session.execute returns a CursorResult for those,
    though its signature promises only a Result (sqlalchemy#12913)."""
    return cast("CursorResult[Any]", result).rowcount


def dispose_all() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _migrated.clear()
