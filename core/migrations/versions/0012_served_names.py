"""shared replicas: the fleet's vLLM name of each live or canary version, and the names each service still uses

Revision ID: 0012
Revises: 0011
Create Date: 2027-01-24
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("adapterversion") as batch:
        batch.add_column(sa.Column("vllm_name", sa.Text(), nullable=True))
    op.create_table(
        "servednames",
        sa.Column("holder", sa.String(length=200), primary_key=True),
        sa.Column("names", sa.Text(), nullable=False),
        sa.Column("expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("servednames")
    with op.batch_alter_table("adapterversion") as batch:
        batch.drop_column("vllm_name")
