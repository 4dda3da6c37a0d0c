"""training_runs.snapshot_path / snapshot_size: a run's snapshot (every sample id and content hash it trained
on) is a Parquet file beside its artifacts, no longer one JSON row; older runs keep theirs in `snapshot`

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("training_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("snapshot_path", sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column("snapshot_size", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("training_runs", schema=None) as batch_op:
        batch_op.drop_column("snapshot_size")
        batch_op.drop_column("snapshot_path")
