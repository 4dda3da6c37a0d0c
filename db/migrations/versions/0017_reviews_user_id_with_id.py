"""ix_reviews_user_id holds the id: a user's reviews in id order, what "my latest decision" walks newest first.

`db/reviews.latest_votes_of` reads the user's reviews newest first and stops after a batch of candidates. In
SQLite an index on user_id holds each entry's rowid, the id, so a range of it was in id order already; in
Postgres the entries for one user follow their place in the table, and the planner, told by statistics from
before a bulk decision that the user had no reviews, read and sorted the whole history (probing each review's
variant) instead of a batch. With the id in the index the walk is the index's range backward on both, with or
without statistics.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-09
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def _make(columns: list[str]) -> None:
    if op.get_bind().dialect.name == "postgresql":
        # built beside it first (a SHARE lock: reads go on), then swapped: the DROP's exclusive lock is held for
        # the swap alone, not for the build
        op.create_index("ix_reviews_user_id_new", "reviews", columns)
        op.drop_index("ix_reviews_user_id", table_name="reviews")
        op.execute("ALTER INDEX ix_reviews_user_id_new RENAME TO ix_reviews_user_id")
        return
    op.drop_index("ix_reviews_user_id", table_name="reviews")  # SQLite's readers are not blocked by a writer
    op.create_index("ix_reviews_user_id", "reviews", columns)


def upgrade() -> None:
    _make(["user_id", "id"])


def downgrade() -> None:
    _make(["user_id"])
