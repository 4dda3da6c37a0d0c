"""ix_samples_queue_usefulness: the review queue's "most useful first" walks a dataset's variants of one status
best first by novelty × label preservation (the expected value without its class factor) and stops once no row
further on can reach the page, instead of reading and sorting every pending row for each page (846 ms a page
at 200,000 variants: bench/review_latency.py). An index on an expression, on SQLite and on Postgres alike.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"

USEFULNESS_SQL = "(coalesce(novelty, 1.0 - similarity, 0.5) * coalesce(label_consistency, 1.0))"


def upgrade() -> None:
    op.create_index("ix_samples_queue_usefulness", "samples", ["dataset_id", "review_status", sa.text(USEFULNESS_SQL)])


def downgrade() -> None:
    op.drop_index("ix_samples_queue_usefulness", table_name="samples")
