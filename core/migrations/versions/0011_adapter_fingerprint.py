"""adapter versions keep the fingerprint vLLM answered with when the version was first loaded

Revision ID: 0011
Revises: 0010
Create Date: 2027-01-17
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("adapterversion") as batch:
        batch.add_column(sa.Column("fingerprint", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("adapterversion") as batch:
        batch.drop_column("fingerprint")
