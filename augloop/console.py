"""What every `augloop` command shares: the consoles, the database engine, and the one place where domain
errors become exit code 2 with a message (ErrorMappingGroup)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

# Plain text by default: what the commands print is mostly the users' own (dataset, task, label, run and user
# names, texts, error messages quoting them), and rich would read "[/]" or "[link=…]" in it as markup (a run named
# "[/]" made `augloop runs list` fail). A line styled on purpose passes markup=True, its data through escape().


class PipedConsole(Console):
    """A console whose reader may go away (`augloop import … 2>&1 | head -1`): rich then exits with code 1, as a
    failure would; it stops as every command of augloop does when its reader has gone (reader_gone)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        reader_gone()


PIPED_WIDTH = 200


def _width(stream: Any) -> int | None:
    """A terminal's own width (or COLUMNS); piped into a file, a pager or a log, 200 columns: rich's 80 broke
    lines mid-sentence and folded table cells ("datase/t", "runnin/g" in `augloop runs list | cat`)."""
    if os.environ.get("COLUMNS") or (hasattr(stream, "isatty") and stream.isatty()):
        return None
    return PIPED_WIDTH


console = PipedConsole(markup=False, width=_width(sys.stdout))
err_console = PipedConsole(stderr=True, markup=False, width=_width(sys.stderr))


def fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)
    raise typer.Exit(code)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (`timeout`, `kill`, a closed terminal), raised where the command is, as Ctrl-C is: every
    cleanup an interrupt runs (an export's temporary file, an import's staging, a run recorded as cancelled)
    runs for them too, instead of the process dying with its files half-written and its runs left queued."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _terminate(signum: int, _frame: Any) -> None:
    raise Terminated(signum)


@contextmanager
def terminations_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise Terminated while the command runs, where nothing else handles them (the worker,
    the API server and the demo install their own handlers, which replace these)."""
    previous = {}
    if threading.current_thread() is not threading.main_thread():  # handlers are set from the main thread only
        yield
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            previous[signum] = signal.signal(signum, _terminate)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class ErrorMappingGroup(TyperGroup):
    """The top-level command group: a domain error (bad input, not found, conflict), a trainer error, an
    operating system's refusal (a path too long, a file it cannot read or write), a number out of the database's
    range (an id of 20 digits) or a database URL that is malformed or does not answer, raised anywhere below a
    command, exits with code 2 and its message, never with a traceback; SIGTERM and SIGHUP stop it as Ctrl-C
    does, with code 128 + the signal's number."""

    def invoke(self, ctx: Any) -> Any:
        from sqlalchemy.exc import ArgumentError, DatabaseError, IntegrityError, NoSuchModuleError

        from core.errors import DomainError
        from trainer.errors import TrainerError

        try:
            with terminations_interrupt():
                return super().invoke(ctx)
        except (DomainError, TrainerError) as err:
            fail(err.message)
        except Terminated as err:
            err_console.print(f"stopped by {signal.Signals(err.signum).name}", highlight=False)
            raise typer.Exit(128 + err.signum) from None
        except BrokenPipeError as err:
            if output_closed():
                reader_gone()
            fail(f"{err.strerror or err}")  # a pipe of something else (a subprocess, a socket): a failure
        except OSError as err:
            where = f" ({err.filename})" if err.filename else ""
            fail(f"{err.strerror or err}{where}")
        except OverflowError as err:  # an id past 64 bits: SQLite's driver cannot even send it
            fail(f"a number is out of range: {err}")
        except (ArgumentError, NoSuchModuleError) as err:
            fail(f"AUGLOOP_DATABASE_URL is not a database URL augloop can use (SQLite or Postgres): {err}")
        except ModuleNotFoundError as err:
            if err.name not in DATABASE_DRIVERS:
                raise
            fail(f"AUGLOOP_DATABASE_URL names a database augloop does not support (SQLite or Postgres): {err}")
        except IntegrityError as err:  # another process wrote the same row meanwhile (two imports of one name)
            said = str(err.orig or err).strip().splitlines()[0][:300]
            fail(f"the database refused the write: another process changed the same data meanwhile; retry ({said})")
        except DatabaseError as err:
            fail(database_problem(err))


def output_closed() -> bool:
    """Whether what reads this process's standard output or error has closed it (poll says POLLERR on the
    writing end of a pipe whose reader has gone)."""
    import select
    import sys

    poller = select.poll()
    fds = []
    for stream in (sys.stdout, sys.stderr):
        try:
            fds.append(stream.fileno())
        except (AttributeError, OSError, ValueError):  # replaced by an object with no descriptor (a test's capture)
            continue
    for fd in fds:
        poller.register(fd, select.POLLOUT)
    return any(event & (select.POLLERR | select.POLLHUP) for _fd, event in poller.poll(0))


def reader_gone() -> NoReturn:
    """What reads the command's output closed it (`augloop export … -o - | head`): stop quietly, as a program
    that SIGPIPE ends does (128 + 13), not with "error: Broken pipe" and the bad-input code 2. Standard output
    and error go to /dev/null first (either may be the closed pipe), or the last flush at exit would raise again."""
    import os
    import sys

    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (AttributeError, OSError, ValueError):  # no descriptor of its own: nothing will flush into the pipe
            continue
    raise typer.Exit(128 + signal.SIGPIPE)


# The drivers SQLAlchemy imports for the databases augloop does not support: a URL naming one fails with a
# ModuleNotFoundError, which must not be confused with a missing module anywhere else.
DATABASE_DRIVERS = frozenset(
    {"MySQLdb", "pymysql", "mysql", "cx_Oracle", "oracledb", "pyodbc", "pymssql", "psycopg2", "asyncpg", "pg8000"}
)


def database_problem(err: Any) -> str:
    """What a database error at a command means for its operator: a read-only or damaged file is not a database
    that "did not answer"."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from db.session import commit_outcome_unknown
    from services.failures import database_trouble

    said = str(getattr(err, "orig", None) or err).strip()[:300]
    if commit_outcome_unknown(err):  # the server may have committed: running the command again may repeat it
        return (
            "the connection to the database was lost as the command's changes were committed, so they may have "
            f"been saved (AUGLOOP_DATABASE_URL); check before you run it again: {said}"
        )
    trouble = database_trouble(err)
    if trouble == "read_only":
        return f"the database is read-only for this user (AUGLOOP_DATABASE_URL): {said}"
    if trouble == "disk_full":
        return f"the database's disk is full (AUGLOOP_DATABASE_URL); free space and run the command again: {said}"
    if trouble == "disk_error":  # a file size limit, a failing disk: not a database that "did not answer"
        return f"the database's disk failed a read or write (AUGLOOP_DATABASE_URL); check the disk: {said}"
    if type(getattr(err, "orig", None)) is sqlite3.DatabaseError:  # "file is not a database", "malformed"
        return f"the database (AUGLOOP_DATABASE_URL) cannot be read: {said}"
    if isinstance(err, OperationalError):
        return f"the database did not answer (AUGLOOP_DATABASE_URL): {said}"
    return f"the database refused the command (AUGLOOP_DATABASE_URL): {said}"


def engine():  # type: ignore[no-untyped-def]
    """The configured database, brought to the latest schema on first use."""
    from db.session import get_engine

    return get_engine()


def parse_seeds(raw: str | None) -> list[int]:
    """A --seeds option: integers separated by commas (None: none given)."""
    if raw is None:
        return []
    if not raw.strip():  # `--seeds ""` (an unset shell variable): no seed named is a mistake, not the default seed
        fail("--seeds takes integers separated by commas, e.g. 42,43,44; got nothing")
    try:
        return [int(s) for s in raw.split(",")]  # "1,,2" and " " are typos, not fewer seeds
    except ValueError:
        fail(f"--seeds takes integers separated by commas, e.g. 42,43,44; got {raw!r}")


def between(low: float, high: float) -> Callable[[float | None], float | None]:
    """A float option's bounds, checked after NaN (click's own range check came first and told `--poll nan` that
    it should be at most 3600: NaN compares false with every bound)."""

    def check(value: float | None) -> float | None:
        if value is None:
            return value
        if value != value:
            raise typer.BadParameter("must be a number, not NaN")
        if not low <= value <= high:
            raise typer.BadParameter(f"must be from {low:g} to {high:g}; got {value:g}")
        return value

    return check
