"""SQLite: ids of jobs, samples, reviews, training runs and impact reports are never handed out again (AUTOINCREMENT)

Without it SQLite gives a new row the largest id in the table plus one: delete a dataset whose rows hold the
largest ids, and the next import's job, variants and runs take those ids again. A client polling job 5 (the
CLI's --wait, the UI's progress) would then follow another job, and a reviewer's stale sample id and version
could meet a new text; the largest review id, which tells whether decisions were made since, could go back.
Postgres' sequences never go back. The tables are rebuilt (batch mode: copy, drop,
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

TABLES = ("jobs", "training_runs", "impact_reports", "reviews", "samples")


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
    # 0009's downgrade rebuilt `samples` too, and made the text search again the same way: its own code.
    spec = importlib.util.spec_from_file_location("variants_0009", Path(__file__).with_name("0009_variants.py"))
    assert spec is not None and spec.loader is not None
    variants = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(variants)
    variants._restore_text_search()
