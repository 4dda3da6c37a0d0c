"""Alembic environment: runs against the connection handed over by db.migrate, or the configured URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic import context
from sqlalchemy import Connection, create_engine

from db.migrate import include_name
from db.models import Base

config = context.config
target_metadata = Base.metadata


@contextmanager
def sqlite_foreign_keys_off(connection: Connection) -> Iterator[None]:
    """SQLite: a batch migration recreates a table (copy, DROP, rename), and with foreign keys on, DROP TABLE
    first deletes every row, cascading to the rows that reference them (ON DELETE CASCADE: a dataset's
    samples). So they are off while migrating (a PRAGMA that only takes effect outside a transaction), the
    references are checked once the migration is done, and they are on again."""
    if connection.dialect.name != "sqlite":
        yield
        return
    if connection.in_transaction():
        connection.commit()
    raw = connection.connection.driver_connection
    assert raw is not None, "an open connection has its driver's connection"
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            connection.rollback()
            raise RuntimeError(f"the migration left rows referencing missing rows: {broken[:5]}")
        if connection.in_transaction():
            connection.commit()
    finally:
        raw.execute("PRAGMA foreign_keys=ON")


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,
            include_name=include_name,
        )
        with sqlite_foreign_keys_off(connection), context.begin_transaction():
            context.run_migrations()
        return
    from core.settings import get_settings

    url = config.get_main_option("sqlalchemy.url") or get_settings().resolved_database_url
    engine = create_engine(url)
    with engine.connect() as conn:
        context.configure(
            connection=conn, target_metadata=target_metadata, render_as_batch=True, include_name=include_name
        )
        with sqlite_foreign_keys_off(conn), context.begin_transaction():
            context.run_migrations()
        conn.commit()


run_migrations()
