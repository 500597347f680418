"""Agent health: when each agent last polled for work, its container runtime and its slots

Revision ID: 0015_web_review
Revises: 0009_release_audit
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0015_web_review'
down_revision = '0009_release_audit'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('agents', sa.Column('last_seen_at', sa.DateTime(timezone=True),
                                      nullable=True))
    op.add_column('agents', sa.Column('runtime', sa.String(length=100), nullable=True))
    op.add_column('agents', sa.Column('slots', sa.Integer(), nullable=True))


def downgrade() -> None:
    # drop_column, not a batch copy: other tables point at agents.
    op.drop_column('agents', 'slots')
    op.drop_column('agents', 'runtime')
    op.drop_column('agents', 'last_seen_at')
