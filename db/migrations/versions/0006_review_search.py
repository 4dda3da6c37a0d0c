"""review search: a trigram index over samples.text; queue indexes for the family order and flagged variants

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

The review queue's free-text search (`q`) is a case-insensitive substring match. Without an index it reads every
row of the queue. SQLite gets an FTS5 table with the trigram tokenizer (SQLite >= 3.34), external-content over
samples.text and kept in step by triggers; Postgres gets a pg_trgm GIN index, which serves ILIKE '%…%' itself
(pg_trgm ships with Debian's postgresql package and is a trusted extension: a database owner may create it).
A later migration that rebuilds `samples` on SQLite (batch mode: copy, drop, rename) drops the triggers with the
old table and must create them again.

The family order (the review page's default) gets its own index by dataset and status, as the score orders have:
a page of one status is then one index range read in order, however many datasets and statuses the table holds.
Flagged variants get a partial index in consistency order: the flag goes with a low score, so along the
consistency index they all sit at one end and a page of them sorted by consistency read most of the queue.
Reviews are looked up by (sample_id, user_id): "has this user voted on this variant" is one index probe.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# The same names are in db/text_search.py (which reads the table) and db/migrate.py (whose schema comparison
# skips them); a migration keeps its own copy so that it never changes with the code.
FTS_TABLE = "samples_text_fts"
TRIGRAM_INDEX = "ix_samples_text_trgm"


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.create_index(
            "ix_samples_queue_family", ["dataset_id", "review_status", "parent_id", "id"], unique=False
        )
        batch_op.create_index(
            "ix_samples_queue_flagged",
            ["dataset_id", "review_status", "label_flag", "label_consistency"],
            unique=False,
            sqlite_where=sa.text("label_flag IS 1"),
            postgresql_where=sa.text("label_flag IS true"),
        )
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.drop_index("ix_reviews_sample_id")
        batch_op.create_index("ix_reviews_sample_id_user_id", ["sample_id", "user_id"], unique=False)
    if dialect == "sqlite":
        _create_sqlite_fts()
    elif dialect == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute(f"CREATE INDEX {TRIGRAM_INDEX} ON samples USING gin (text gin_trgm_ops)")


def _create_sqlite_fts() -> None:
    # External content: the table stores only the trigram index; the text stays in samples. The triggers are
    # the documented way to keep such a table in step (https://sqlite.org/fts5.html#external_content_tables).
    # detail=none keeps only which rows hold each trigram, not where: a third of the size of the full index
    # (43 MB instead of 140 MB for 205,000 samples) and faster to write. A query then asks for rows holding all
    # of q's trigrams, in any order, and LIKE decides (db/text_search.py).
    op.execute(
        f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5("
        f"text, content='samples', content_rowid='id', tokenize='trigram', detail='none')"
    )
    op.execute(
        f"CREATE TRIGGER {FTS_TABLE}_insert AFTER INSERT ON samples BEGIN "
        f"INSERT INTO {FTS_TABLE}(rowid, text) VALUES (new.id, new.text); END"
    )
    op.execute(
        f"CREATE TRIGGER {FTS_TABLE}_delete AFTER DELETE ON samples BEGIN "
        f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text) VALUES ('delete', old.id, old.text); END"
    )
    op.execute(
        f"CREATE TRIGGER {FTS_TABLE}_update AFTER UPDATE OF text ON samples BEGIN "
        f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text) VALUES ('delete', old.id, old.text); "
        f"INSERT INTO {FTS_TABLE}(rowid, text) VALUES (new.id, new.text); END"
    )
    op.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')")  # index the rows already there


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS {FTS_TABLE}_{trigger}")
        op.execute(f"DROP TABLE IF EXISTS {FTS_TABLE}")
    elif dialect == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {TRIGRAM_INDEX}")  # the extension stays: others may use it
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.drop_index("ix_reviews_sample_id_user_id")
        batch_op.create_index(batch_op.f("ix_reviews_sample_id"), ["sample_id"], unique=False)
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.drop_index("ix_samples_queue_flagged")
        batch_op.drop_index("ix_samples_queue_family")
