"""jobs.claim_key: the idempotency key of the agent's claim that dispatched the job

Revision ID: 0004_claim_key
Revises: 0003_joint
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004_claim_key'
down_revision = '0003_joint'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claim_key', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('claim_key')
