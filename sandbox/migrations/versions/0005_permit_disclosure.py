"""permits.disclosure: the statistical disclosure settings the providers approved

Revision ID: 0005_permit_disclosure
Revises: 0004_claim_key
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005_permit_disclosure'
down_revision = '0004_claim_key'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('permits', schema=None) as batch_op:
        batch_op.add_column(sa.Column('disclosure', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('permits', schema=None) as batch_op:
        batch_op.drop_column('disclosure')
