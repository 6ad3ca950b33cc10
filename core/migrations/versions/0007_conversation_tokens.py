"""each widget conversation has a secret only the browser that started it holds; drafts handed to an agent say
why; a probe table for /ready

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversation") as batch:
        batch.add_column(sa.Column("access_token_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
    with op.batch_alter_table("draft") as batch:
        batch.add_column(sa.Column("handoff_reason", sa.Text(), nullable=True))
    op.create_table(
        "healthprobe",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("healthprobe")
    with op.batch_alter_table("draft") as batch:
        batch.drop_column("handoff_reason")
    with op.batch_alter_table("conversation") as batch:
        batch.drop_column("access_token_hash")
