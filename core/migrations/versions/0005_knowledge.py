"""knowledge base: documents, their chunks, a revision counter that invalidates indexes, and drafts' passages

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "knowledgedocument",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("brand", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("products", sa.JSON(), nullable=False),
        sa.Column("source_path", sa.Text(), nullable=True),
        sa.Column("content_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("chars", sa.Integer(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("brand", "name"),
        sqlite_autoincrement=True,  # ids never reused: drafts keep the passage ids they were grounded on
    )
    revisions = op.create_table(
        "knowledgerevision",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # the one counter row exists from the start, so concurrent first adds only ever UPDATE it
    op.bulk_insert(revisions, [{"id": 1, "revision": 0, "updated_at": datetime.now(UTC)}])
    op.create_table(
        "knowledgechunk",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["document_id"], ["knowledgedocument.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("knowledgechunk") as batch:
        batch.create_index(batch.f("ix_knowledgechunk_document_id"), ["document_id"], unique=False)
    op.create_table(
        "draftgrounding",
        sa.Column("draft_id", sa.Integer(), nullable=False),
        sa.Column("grounding", sa.JSON(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["draft_id"], ["draft.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("draft_id"),
    )


def downgrade() -> None:
    op.drop_table("draftgrounding")
    with op.batch_alter_table("knowledgechunk") as batch:
        batch.drop_index(batch.f("ix_knowledgechunk_document_id"))
    op.drop_table("knowledgechunk")
    op.drop_table("knowledgerevision")
    op.drop_table("knowledgedocument")
