"""training_runs.config: runs created before `variant_sampling` existed say `all`, what they were created to do.

The trainer's default became `one_per_source` (one text of each original's family per epoch). A run stored
without the key would otherwise read as the new default: a queued or retried run would train otherwise than it
was asked to, and a finished one would show a config it did not train with. Transformer runs only (kind
`single`): TF-IDF members and ensembles have no such key.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

runs = sa.table(
    "training_runs", sa.column("id", sa.Integer), sa.column("kind", sa.String), sa.column("config", sa.JSON)
)


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(runs.c.id, runs.c.config).where(runs.c.kind == "single")).all()
    for run_id, config in rows:
        if isinstance(config, dict) and "variant_sampling" not in config:
            bind.execute(runs.update().where(runs.c.id == run_id).values(config={**config, "variant_sampling": "all"}))


def downgrade() -> None:
    pass  # the key stays: the code of 0011 knows it (it came before this migration)
