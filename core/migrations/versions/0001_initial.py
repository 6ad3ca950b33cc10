"""conversations, drafts, reviews and the adapter registry

Revision ID: 0001
Revises: 
Create Date: 2026-11-25
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('adapterevent',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
    sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('adapterevent', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_adapterevent_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_adapterevent_version'), ['version'], unique=False)

    op.create_table('conversation',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('external_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('customer_ref', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('mode', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
    sa.Column('content_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('channel', 'external_id')
    )
    with op.batch_alter_table('conversation', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_conversation_channel'), ['channel'], unique=False)
        batch_op.create_index(batch_op.f('ix_conversation_content_hash'), ['content_hash'], unique=False)
        batch_op.create_index(batch_op.f('ix_conversation_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_conversation_external_id'), ['external_id'], unique=False)

    op.create_table('trainingrun',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('step', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    sa.Column('progress', sa.Float(), nullable=False),
    sa.Column('params', sa.JSON(), nullable=True),
    sa.Column('metrics', sa.JSON(), nullable=True),
    sa.Column('log', sa.Text(), server_default='', nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('adapter_version', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    sa.Column('started_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('finished_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('trainingrun', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_trainingrun_status'), ['status'], unique=False)

    op.create_table('adapterversion',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('base_model', sa.Text(), nullable=False),
    sa.Column('base_model_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('dataset_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('canary_share', sa.Float(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=True),
    sa.Column('manifest', sa.JSON(), nullable=True),
    sa.Column('training_run_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['training_run_id'], ['trainingrun.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('version')
    )
    with op.batch_alter_table('adapterversion', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_adapterversion_status'), ['status'], unique=False)

    op.create_table('draft',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('conversation_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('prompt', sa.JSON(), nullable=True),
    sa.Column('adapter_version', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    sa.Column('latency_ms', sa.Float(), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('claimed_by', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('claimed_until', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversation.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('draft', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_draft_adapter_version'), ['adapter_version'], unique=False)
        batch_op.create_index(batch_op.f('ix_draft_conversation_id'), ['conversation_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_draft_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_draft_status'), ['status'], unique=False)

    op.create_table('message',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('conversation_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('draft_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversation.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['draft_id'], ['draft.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('conversation_id', 'position')
    )
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_message_conversation_id'), ['conversation_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_message_draft_id'), ['draft_id'], unique=False)

    op.create_table('review',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('draft_id', sa.Integer(), nullable=False),
    sa.Column('decision', sa.String(length=20), nullable=False),
    sa.Column('final_text', sa.Text(), nullable=True),
    sa.Column('agent_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('edit_distance', sa.Float(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['draft_id'], ['draft.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('draft_id')
    )
    with op.batch_alter_table('review', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_review_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_review_decision'), ['decision'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('review', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_review_decision'))
        batch_op.drop_index(batch_op.f('ix_review_created_at'))

    op.drop_table('review')
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_message_draft_id'))
        batch_op.drop_index(batch_op.f('ix_message_conversation_id'))

    op.drop_table('message')
    with op.batch_alter_table('draft', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_draft_status'))
        batch_op.drop_index(batch_op.f('ix_draft_created_at'))
        batch_op.drop_index(batch_op.f('ix_draft_conversation_id'))
        batch_op.drop_index(batch_op.f('ix_draft_adapter_version'))

    op.drop_table('draft')
    with op.batch_alter_table('adapterversion', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_adapterversion_status'))

    op.drop_table('adapterversion')
    with op.batch_alter_table('trainingrun', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_trainingrun_status'))

    op.drop_table('trainingrun')
    with op.batch_alter_table('conversation', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_conversation_external_id'))
        batch_op.drop_index(batch_op.f('ix_conversation_created_at'))
        batch_op.drop_index(batch_op.f('ix_conversation_content_hash'))
        batch_op.drop_index(batch_op.f('ix_conversation_channel'))

    op.drop_table('conversation')
    with op.batch_alter_table('adapterevent', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_adapterevent_version'))
        batch_op.drop_index(batch_op.f('ix_adapterevent_created_at'))

    op.drop_table('adapterevent')
