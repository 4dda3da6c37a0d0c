"""SQLite: ids of jobs, samples, training runs and impact reports are never handed out again (AUTOINCREMENT)

Without it SQLite gives a new row the largest id in the table plus one: delete a dataset whose rows hold the
largest ids, and the next import's job, variants and runs take those ids again. A client polling job 5 (the
CLI's --wait, the UI's progress) would then follow another job, and a reviewer's stale sample id and version
could meet a new text. Postgres' sequences never go back. The tables are rebuilt (batch mode: copy, drop,
rename) with the rows and ids they hold; the rebuild of `samples` drops migration 0006's text-search triggers
with the old table, so they are made again and the index rebuilt from the rows, as 0009's downgrade does.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

import importlib.util
from pathlib import Path

from alembic import op

revision = "0013"
down_revision = "0012"

TABLES = ("jobs", "training_runs", "impact_reports", "samples")


def upgrade() -> None:
    _rebuild(autoincrement=True)


def downgrade() -> None:
    _rebuild(autoincrement=False)


def _rebuild(*, autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}):
            pass
    spec = importlib.util.spec_from_file_location(
        "review_search_0006", Path(__file__).with_name("0006_review_search.py")
    )
    assert spec is not None and spec.loader is not None
    review_search = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(review_search)
    for trigger in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER IF EXISTS {review_search.FTS_TABLE}_{trigger}")
    op.execute(f"DROP TABLE IF EXISTS {review_search.FTS_TABLE}")
    review_search._create_sqlite_fts()
