"""jobs.outages: the attempts given back to database outages. A handler that failed because the database was
briefly unreachable, locked or cancelled its write for a concurrent one (a restart, a failover) spent one of its
attempts, so a train job (2 attempts) that met two restarts failed for good; such a failure is now retried
without spending an attempt, up to AUGLOOP_JOB_MAX_OUTAGES times per job, counted here.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("outages", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    # dropping a column rebuilds the table on SQLite: keep the AUTOINCREMENT of migration 0013
    with op.batch_alter_table("jobs", schema=None, table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        batch_op.drop_column("outages")
