"""Alembic environment: runs against the connection handed over by db.migrate, or the configured URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic import context
from sqlalchemy import Connection, create_engine

from db.migrate import comparison_hooks
from db.models import Base

config = context.config
target_metadata = Base.metadata


def _current_revision(connection: Connection) -> str | None:
    if connection.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'").first() is None:
        return None
    return connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def _nothing_to_do(connection: Connection) -> bool:
    """Whether the database is already at the revision asked for (every process start asks for head)."""
    target = context.get_revision_argument()
    if not isinstance(target, str):
        return False
    try:
        script = context.script.get_revision(target)
    except Exception:  # noqa: BLE001 - "base", a range or an unknown name: let Alembic handle (and report) it
        return False
    return script is not None and script.revision == _current_revision(connection)


def _broken_references(connection: Connection) -> set[tuple[object, ...]]:
    """(table, rowid, parent table) of every row whose reference points at no row. Not the constraint's number,
    the check's fourth column: a table rebuilt (0013's batch mode) numbers its foreign keys anew, in no fixed
    order, so a row broken before the rebuild would read as broken by it."""
    return {tuple(row[:3]) for row in connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()}


@contextmanager
def sqlite_foreign_keys_off(connection: Connection) -> Iterator[None]:
    """SQLite: a batch migration recreates a table (copy, DROP, rename), and with foreign keys on, DROP TABLE
    first deletes every row, cascading to the rows that reference them (ON DELETE CASCADE: a dataset's
    samples). So they are off while migrating (a PRAGMA that only takes effect outside a transaction), and on
    again after. SQLite's migrations commit one by one (no transactional DDL), so a migration that left rows
    pointing at missing ones cannot be undone here: it is reported, naming the rows, and only rows it broke
    (references broken before it ran are not its doing, and must not stop every later start)."""
    if connection.dialect.name != "sqlite":
        yield
        return
    if connection.in_transaction():
        connection.commit()
    if _nothing_to_do(connection):
        yield
        return
    before = _broken_references(connection)
    connection.commit()  # the PRAGMA below is a no-op inside a transaction
    raw = connection.connection.driver_connection
    assert raw is not None, "an open connection has its driver's connection"
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
        if connection.in_transaction():
            connection.commit()
        broken = _broken_references(connection) - before
        connection.commit()
        if broken:
            raise RuntimeError(
                f"the migration is committed but left rows referencing missing rows (table, rowid, parent): "
                f"{sorted(broken, key=str)[:5]}; repair or delete them"
            )
    except BaseException:
        if connection.in_transaction():
            connection.rollback()
        raise
    finally:
        raw.execute("PRAGMA foreign_keys=ON")  # outside any transaction, or it would not take effect


def migrate_on(connection: Connection) -> None:
    """Run the migrations on `connection`, in one transaction, with SQLite's foreign keys off meanwhile."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        **comparison_hooks(connection.dialect.name),
    )
    with sqlite_foreign_keys_off(connection), context.begin_transaction():
        context.run_migrations()


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        migrate_on(connection)
        return
    from core.settings import get_settings

    url = config.get_main_option("sqlalchemy.url") or get_settings().resolved_database_url
    engine = create_engine(url, hide_parameters=True)  # as db/session.py: values stay out of errors and logs
    with engine.connect() as conn:
        migrate_on(conn)
        conn.commit()


run_migrations()
