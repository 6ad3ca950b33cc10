"""privacy: redacted text beside the raw text, the platform's known values, placeholders, retention, audit log

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversation") as batch:
        batch.add_column(sa.Column("known_values", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("placeholders", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("raw_purged_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    with op.batch_alter_table("message") as batch:
        batch.add_column(sa.Column("redacted_content", sa.Text(), nullable=True))
    with op.batch_alter_table("draft") as batch:
        batch.add_column(sa.Column("redacted_content", sa.Text(), nullable=True))
    with op.batch_alter_table("review") as batch:
        batch.add_column(sa.Column("redacted_final_text", sa.Text(), nullable=True))
    op.create_table(
        "workermark",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "auditevent",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("action", sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
        sa.Column("actor", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_auditevent_action", "auditevent", ["action"])
    op.create_index("ix_auditevent_created_at", "auditevent", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_auditevent_created_at", table_name="auditevent")
    op.drop_index("ix_auditevent_action", table_name="auditevent")
    op.drop_table("auditevent")
    op.drop_table("workermark")
    with op.batch_alter_table("review") as batch:
        batch.drop_column("redacted_final_text")
    with op.batch_alter_table("draft") as batch:
        batch.drop_column("redacted_content")
    with op.batch_alter_table("message") as batch:
        batch.drop_column("redacted_content")
    with op.batch_alter_table("conversation") as batch:
        batch.drop_column("raw_purged_at")
        batch.drop_column("placeholders")
        batch.drop_column("known_values")
