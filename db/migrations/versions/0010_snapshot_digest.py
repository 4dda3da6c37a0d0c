"""training_runs.snapshot_digest: the digest of a run's training set, stored when the run finishes, so that
combining runs into an ensemble no longer reads and sorts every member's snapshot inside the request; runs
recorded before it have none and are digested from their snapshot when first combined

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("training_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("snapshot_digest", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("training_runs", schema=None) as batch_op:
        batch_op.drop_column("snapshot_digest")
