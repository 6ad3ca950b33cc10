"""brands: several house styles in one store; existing data becomes the default brand

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BRANDED = ("conversation", "trainingrun", "adapterversion")


def upgrade() -> None:
    brand = op.create_table(
        "brand",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
        sa.Column("company_name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("system_prompt", sa.Text(), nullable=True),
        sa.Column("public_model_name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("golden_path", sa.Text(), nullable=True),
        sa.Column("gate_min_chrf_gain", sa.Float(), nullable=True),
        sa.Column("gate_min_loss_gain", sa.Float(), nullable=True),
        sa.Column("gate_golden_tolerance", sa.Float(), nullable=True),
        sa.Column("refresh_interval_minutes", sa.Float(), nullable=True),
        sa.Column("refresh_min_new_reviews", sa.Integer(), nullable=True),
        sa.Column("refresh_canary_share", sa.Float(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("slug"),
        sa.UniqueConstraint("public_model_name"),
    )
    # the default brand: every setting None, so it speaks with the installation's HOUSESTYLE_* as before
    op.bulk_insert(brand, [{"id": 1, "slug": "default", "created_at": datetime.now(UTC)}])
    if op.get_bind().dialect.name == "postgresql":  # an explicit id does not move the sequence on
        op.execute("SELECT setval(pg_get_serial_sequence('brand', 'id'), (SELECT max(id) FROM brand))")
    for table in BRANDED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("brand_id", sa.Integer(), nullable=False, server_default="1"))
            batch.create_index(batch.f(f"ix_{table}_brand_id"), ["brand_id"], unique=False)
            batch.create_foreign_key(f"fk_{table}_brand_id", "brand", ["brand_id"], ["id"])
    with op.batch_alter_table("apikey") as batch:
        batch.add_column(sa.Column("brands", sa.JSON(), nullable=True))
    # a platform's conversation ids are unique within a brand (two brands' Chatwoot accounts may both have #42)
    _swap_unique(("channel", "external_id"), BRAND_UNIQUE)


BRAND_UNIQUE = ("brand_id", "channel", "external_id")
# SQLite keeps 0001's unique constraint unnamed: a naming convention names it so the batch can drop it
NAMING = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}


def _unique_name(columns: tuple[str, ...]) -> str:
    if op.get_bind().dialect.name == "postgresql" and columns == ("channel", "external_id"):
        return "conversation_channel_external_id_key"  # what Postgres named 0001's constraint
    return "uq_conversation_" + "_".join(columns)


def _swap_unique(old: tuple[str, ...], new: tuple[str, ...]) -> None:
    with op.batch_alter_table("conversation", naming_convention=NAMING, recreate="auto") as batch:
        batch.drop_constraint(_unique_name(old), type_="unique")
        batch.create_unique_constraint(_unique_name(new), list(new))


def downgrade() -> None:
    _swap_unique(BRAND_UNIQUE, ("channel", "external_id"))
    with op.batch_alter_table("apikey") as batch:
        batch.drop_column("brands")
    for table in BRANDED:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"fk_{table}_brand_id", type_="foreignkey")
            batch.drop_index(batch.f(f"ix_{table}_brand_id"))
            batch.drop_column("brand_id")
    op.drop_table("brand")
