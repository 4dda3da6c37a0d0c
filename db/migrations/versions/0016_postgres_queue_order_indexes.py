"""Postgres: the review queue's order indexes in the queue's NULL order, with the id that breaks ties.

The queue sorts unscored variants first when ascending and last when descending (`db/review_access._order`:
SQLite's own NULL order, asked of Postgres too), and breaks ties by id. Postgres' B-tree indexes put NULLs last
when ascending, so neither a forward nor a backward walk of `ix_samples_queue_family`, `_similarity`,
`_consistency`, `_semantic` or `_flagged` yields `ORDER BY x ASC NULLS FIRST, id` or `x DESC NULLS LAST, id DESC`:
every page of those sorts read and sorted the whole status (160,000 pending rows of 200,000 variants: 70–100 ms
a page on an idle machine, p95 of the page 592 ms in bench/review_latency.py --backend postgres). Indexes with
`NULLS FIRST` and a trailing id yield both directions (forward and backward), and a page reads its rows.
On Postgres each is made again under its name in that order (kept beside the old ones, each decision would
have updated both); SQLite has no NULLS FIRST in an index (and needs none: it is its default order), and there
nothing changes. The models state them as SQLite has them, so the schema comparison leaves these names alone on
Postgres (`db/migrate.POSTGRES_ORDER_INDEXES`). The planner picks them with or without statistics (a LIMIT walk
in the asked order costs less than a sort of the status either way).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-08
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# name → (ordered column, partial index condition, the columns before 0016); a migration keeps its own copy
# (db/migrate.py has the names)
INDEXES = {
    "ix_samples_queue_family": ("parent_id", None, "parent_id, id"),
    "ix_samples_queue_similarity": ("similarity", None, "similarity"),
    "ix_samples_queue_consistency": ("label_consistency", None, "label_consistency"),
    "ix_samples_queue_semantic": ("semantic_similarity", None, "semantic_similarity"),
    "ix_samples_queue_flagged": ("label_consistency", "label_flag IS true", "label_flag, label_consistency"),
}


def _make(shapes: dict[str, tuple[str, str | None]]) -> None:
    """Each index of `shapes` (name → its columns after dataset and status, partial condition) built beside the
    one it replaces, then swapped in: the builds take a SHARE lock (writes wait, reads go on), and the DROPs'
    exclusive lock is held for the swaps alone."""
    for name, (columns, where) in shapes.items():
        op.execute(
            f"CREATE INDEX {name}_new ON samples (dataset_id, review_status, {columns})"
            + (f" WHERE {where}" if where else "")
        )
    for name in shapes:
        op.execute(f"DROP INDEX IF EXISTS {name}")
        op.execute(f"ALTER INDEX {name}_new RENAME TO {name}")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _make({name: (f"{column} NULLS FIRST, id", where) for name, (column, where, _) in INDEXES.items()})


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _make({name: (before, where) for name, (_, where, before) in INDEXES.items()})
