"""run rows remember the job lock holder they ran under, so a dead holder's rows can be closed as failed

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trainingrun") as batch:
        batch.add_column(sa.Column("holder", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))
        batch.create_index(batch.f("ix_trainingrun_holder"), ["holder"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("trainingrun") as batch:
        batch.drop_index(batch.f("ix_trainingrun_holder"))
        batch.drop_column("holder")
