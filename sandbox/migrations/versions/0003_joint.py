"""joint jobs

Revision ID: 0003_joint
Revises: 0002_authz
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003_joint'
down_revision = '0002_authz'
branch_labels = None
depends_on = None

def upgrade() -> None:

    op.create_table('joint_jobs',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('permit_id', sa.String(length=40), nullable=False),
    sa.Column('requester_id', sa.String(length=40), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('public_context', sa.LargeBinary(), nullable=False),
    sa.Column('context_fingerprint', sa.String(length=64), nullable=False),
    sa.Column('min_providers', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('aggregate', sa.LargeBinary(), nullable=True),
    sa.Column('aggregate_sha256', sa.String(length=64), nullable=True),
    sa.Column('ledger_index', sa.Integer(), nullable=True),
    sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['permit_id'], ['permits.id'], ),
    sa.ForeignKeyConstraint(['requester_id'], ['parties.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('joint_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_joint_jobs_requester_id'), ['requester_id'], unique=False)

    with op.batch_alter_table('permits', schema=None) as batch_op:
        batch_op.add_column(sa.Column('epsilon_budget', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('epsilon_spent', sa.Float(), nullable=False,
                                      server_default='0'))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('joint_id', sa.String(length=40), nullable=True))
        batch_op.create_index(batch_op.f('ix_jobs_joint_id'), ['joint_id'], unique=False)
        batch_op.create_foreign_key("fk_jobs_joint_id", 'joint_jobs', ['joint_id'], ['id'])

def downgrade() -> None:
    with op.batch_alter_table('permits', schema=None) as batch_op:
        batch_op.drop_column('epsilon_spent')
        batch_op.drop_column('epsilon_budget')

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint("fk_jobs_joint_id", type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_jobs_joint_id'))
        batch_op.drop_column('joint_id')

    with op.batch_alter_table('joint_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_joint_jobs_requester_id'))

    op.drop_table('joint_jobs')

