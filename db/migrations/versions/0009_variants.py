"""variants worth a reviewer's minute: semantic similarity, novelty and the automatic decision per variant,
automatic reviews, per-dataset variant settings, protected terms

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

import importlib.util
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.add_column(sa.Column("semantic_similarity", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("novelty", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("auto_decision", sa.String(length=16), nullable=True))
        batch_op.create_index(
            "ix_samples_queue_semantic", ["dataset_id", "review_status", "semantic_similarity"], unique=False
        )
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.add_column(sa.Column("automatic", sa.Boolean(), nullable=False, server_default=sa.false()))
    # A database downgraded below this revision and upgraded again holds the automatic reviewer's decisions
    # (users of role `system`, db/auth.py): they stay automatic, never a person's vote towards k reviews.
    reviews = sa.table("reviews", sa.column("user_id", sa.Integer()), sa.column("automatic", sa.Boolean()))
    users = sa.table("users", sa.column("id", sa.Integer()), sa.column("role", sa.String()))
    op.execute(
        reviews.update()
        .where(reviews.c.user_id.in_(sa.select(users.c.id).where(users.c.role == "system")))
        .values(automatic=True)
    )
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("variant_settings", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
    op.create_table(
        "protected_terms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("term", sa.String(length=100), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("task", sa.String(length=100), nullable=True),
        sa.Column("label", sa.String(length=100), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_protected_terms_dataset_id_datasets"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_protected_terms_created_by_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_protected_terms")),
        sa.UniqueConstraint("dataset_id", "term", name=op.f("uq_protected_terms_dataset_id_term")),
    )


def downgrade() -> None:
    op.drop_table("protected_terms")
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_column("variant_settings")
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.drop_column("automatic")
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.drop_index("ix_samples_queue_semantic")
        batch_op.drop_column("auto_decision")
        batch_op.drop_column("novelty")
        batch_op.drop_column("semantic_similarity")
    if op.get_bind().dialect.name == "sqlite":
        _restore_text_search()


def _restore_text_search() -> None:
    """The rebuild of `samples` above (batch mode: copy, drop, rename) dropped migration 0006's triggers with
    the old table: the text index would stop following the texts. Made again by 0006's own code, with the index
    rebuilt from the rows."""
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
