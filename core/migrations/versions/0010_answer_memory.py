"""answer memory: exchanges marked outdated, and which past exchanges each draft's prompt carried

Revision ID: 0010
Revises: 0009
Create Date: 2027-01-10
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "memoryoutdated",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("review_id", sa.Integer(), nullable=False),
        sa.Column("actor", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["review_id"], ["review.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("review_id"),
    )
    op.create_table(
        "memoryuse",
        sa.Column("draft_id", sa.Integer(), nullable=False),
        sa.Column("review_id", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["draft_id"], ["draft.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["review_id"], ["review.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("draft_id", "review_id"),
    )
    with op.batch_alter_table("memoryuse") as batch:
        batch.create_index(batch.f("ix_memoryuse_review_id"), ["review_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("memoryuse") as batch:
        batch.drop_index(batch.f("ix_memoryuse_review_id"))
    op.drop_table("memoryuse")
    op.drop_table("memoryoutdated")
