"""Bring a database to the latest Alembic revision (what every command does on first use)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The text search's index (migration 0006) is SQL the models cannot state: SQLite's FTS5 table with its shadow
# tables, and Postgres' pg_trgm index. Autogenerate and the schema comparison leave them alone.
TEXT_SEARCH_TABLE = "samples_text_fts"
TEXT_SEARCH_INDEX = "ix_samples_text_trgm"


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's `include_name` hook: whether a reflected table or index is one the models describe."""
    if type_ == "table":
        return not (name or "").startswith(TEXT_SEARCH_TABLE)
    if type_ == "index":
        return name != TEXT_SEARCH_INDEX
    return True


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade_to_head(engine: Engine) -> None:
    cfg = alembic_config()
    with engine.connect() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
        connection.commit()
