"""Bring a database to the latest Alembic revision (what every command does on first use)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from filelock import FileLock
from sqlalchemy import Connection, Engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The text search's index (migration 0006) is SQL the models cannot state: SQLite's FTS5 table with its shadow
# tables, and Postgres' pg_trgm index. Autogenerate and the schema comparison leave them alone.
TEXT_SEARCH_TABLE = "samples_text_fts"
TEXT_SEARCH_INDEX = "ix_samples_text_trgm"
# The review queue's order indexes that migration 0016 makes again on Postgres in the queue's NULL order with the
# id (NULLS FIRST, which SQLite refuses in an index): the models state them as SQLite has them, so they are
# compared on SQLite only.
POSTGRES_ORDER_INDEXES = frozenset(
    {
        "ix_samples_queue_family",
        "ix_samples_queue_similarity",
        "ix_samples_queue_consistency",
        "ix_samples_queue_semantic",
        "ix_samples_queue_flagged",
    }
)


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's `include_name` hook: whether a reflected table or index is one the models describe."""
    if type_ == "table":
        return not (name or "").startswith(TEXT_SEARCH_TABLE)
    if type_ == "index":
        return name != TEXT_SEARCH_INDEX
    return True


def comparison_hooks(dialect: str) -> dict[str, Any]:
    """Alembic's hooks for comparing the models with a database of `dialect` (migrations' context, the schema
    tests): what the models do not describe is left out."""

    def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
        return not (dialect == "postgresql" and type_ == "index" and name in POSTGRES_ORDER_INDEXES)

    return {"include_name": include_name, "include_object": include_object}


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


# Postgres: the session-level advisory lock every migrating process takes (an arbitrary 63-bit key).
MIGRATION_LOCK_KEY = 0x61756704C00B


@contextmanager
def migration_lock(engine: Engine) -> Iterator[None]:
    """One process migrates a database at a time. Every command migrates on first use, so `augloop serve` and
    `augloop worker` started together on an old database both planned the same steps from the same revision,
    and one died on the other's work ("duplicate column name"). The second now waits, then reads the revision
    again and finds nothing to do. SQLite: a lock file beside the database (none for one in memory);
    Postgres: an advisory lock."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:") or database.startswith("file:") or url.query.get("mode") == "memory":
            yield
            return
        # An existing file is connected to first: one it refuses (not a database, a directory: db.session) is
        # refused before the lock file is made beside it, where a refused command left an empty
        # `<db>.migrate-lock`. A new database's folder is asked of the lock file (below: SQLite's own words for a
        # folder where no file can be made, "unable to open database file", read as an outage).
        if Path(database).expanduser().exists():
            engine.connect().close()
        lock = f"{Path(database).expanduser()}.migrate-lock"
        # filelock retries for ever where the file cannot be created at all (a data directory under /proc): the
        # operating system's refusal is said at once (an OSError naming the file: exit 2 in the CLI)
        os.close(os.open(lock, os.O_RDWR | os.O_CREAT, 0o600))
        with FileLock(lock):
            yield
        return
    if url.get_backend_name() != "postgresql":
        yield
        return
    with engine.connect() as holder:
        holder.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")
        holder.commit()
        try:
            yield
        finally:
            try:
                holder.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")
                holder.commit()
            except Exception:  # a lost connection released the lock with its session: the migration's own
                # outcome (or error) is what the caller must see. One still open (a timeout) is closed rather
                # than pooled, so that its session's lock goes with it.
                logging.getLogger(__name__).warning("could not release the migration lock", exc_info=True)
                holder.invalidate()


def upgrade_to_head(engine: Engine) -> None:
    cfg = alembic_config()
    with migration_lock(engine), engine.connect() as connection:
        check_upgradable(connection, cfg)
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
        connection.commit()


def extension_tables(connection: Connection) -> set[str]:
    """Postgres: the current schema's tables that belong to an extension (PostGIS' spatial_ref_sys in a fresh
    database of the postgis image): they make a database no other application's."""
    if connection.dialect.name != "postgresql":
        return set()
    return set(
        connection.exec_driver_sql(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e' "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
        ).scalars()
    )


def check_upgradable(connection: Connection, cfg: Config) -> None:
    """Refuse, naming why, a database this augloop must not migrate: one at a revision it does not know (a newer
    augloop's: every command ended in Alembic's traceback), and one holding another application's tables and no
    augloop schema (each command added augloop's 23 tables beside them, or failed on a table of the same name)."""
    from alembic.script import ScriptDirectory
    from sqlalchemy import inspect

    from core.errors import ValidationFailed

    tables = set(inspect(connection).get_table_names()) - extension_tables(connection)
    problem = None
    if "alembic_version" in tables:
        current = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all()
        known = {revision.revision for revision in ScriptDirectory.from_config(cfg).walk_revisions()}
        if unknown := [revision for revision in current if revision not in known]:
            problem = (
                f"is at schema revision {unknown[0]!r}, which this augloop does not know: a newer augloop's "
                "database (upgrade augloop), or another application's (use another database)"
            )
    elif tables:
        shown = ", ".join(sorted(tables)[:5]) + (", …" if len(tables) > 5 else "")
        problem = (
            f"holds another application's tables ({shown}) and no augloop schema: use an empty database, or one "
            "augloop made"
        )
    if problem is not None:
        raise ValidationFailed(f"the database (AUGLOOP_DATABASE_URL) {problem}", field="database_url")
    connection.rollback()  # the check's read transaction: Alembic begins its own
