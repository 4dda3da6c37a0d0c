"""samples (dataset_id, split, id): a dataset's rows of one split in id order. Reading val/test or training texts
a batch at a time after the last id becomes a seek instead of a scan of the whole split per batch (a million
val/test texts took 54 s to read, now 8 s: bench/leak_guard_doors.py), and the leak guard's freshness key, the
largest id per split, is read in about a millisecond instead of counting every val/test row at each check

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_samples_split_id", "samples", ["dataset_id", "split", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_samples_split_id", table_name="samples")
