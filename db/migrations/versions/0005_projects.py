"""projects and memberships: every dataset belongs to a project; users are its annotators or leads

Existing datasets move into a project named "default", and every existing non-admin user becomes an annotator
of it, so nobody loses access in the upgrade. Datasets gain a display name (the name stays the URL slug).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        sa.UniqueConstraint("name", name=op.f("uq_projects_name")),
    )
    op.create_table(
        "project_members",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_project_members_project_id_projects"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_project_members_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("project_id", "user_id", name=op.f("pk_project_members")),
    )
    with op.batch_alter_table("project_members", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_project_members_user_id"), ["user_id"], unique=False)
    op.execute(
        "INSERT INTO projects (id, name, display_name, created_at) "
        "VALUES (1, 'default', 'Default project', CURRENT_TIMESTAMP)"
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":  # the explicit id above leaves the sequence behind
        op.execute("SELECT setval(pg_get_serial_sequence('projects', 'id'), 1)")
    op.execute(
        "INSERT INTO project_members (project_id, user_id, role, created_at) "
        "SELECT 1, id, 'annotator', CURRENT_TIMESTAMP FROM users WHERE role != 'admin'"
    )
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("project_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("display_name", sa.String(length=200), nullable=True))
    op.execute("UPDATE datasets SET project_id = 1, display_name = name")
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.alter_column("project_id", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("display_name", existing_type=sa.String(length=200), nullable=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_datasets_project_id_projects"), "projects", ["project_id"], ["id"], ondelete="RESTRICT"
        )
        batch_op.create_index(batch_op.f("ix_datasets_project_id"), ["project_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_datasets_project_id"))
        batch_op.drop_constraint(batch_op.f("fk_datasets_project_id_projects"), type_="foreignkey")
        batch_op.drop_column("display_name")
        batch_op.drop_column("project_id")
    with op.batch_alter_table("project_members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_project_members_user_id"))
    op.drop_table("project_members")
    op.drop_table("projects")
