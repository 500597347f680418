"""Versions of each provider's usage rollup: the web dashboard keeps what it read from
the rollup per (provider, version) (authz.models.UsageVersion)

Revision ID: 0020_ui_ratio
Revises: 0018_ui_perf
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0020_ui_ratio'
down_revision = '0018_ui_perf'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Empty: a provider without a row is at version 0, and nothing was kept before.
    op.create_table(
        'usage_versions',
        sa.Column('provider_id', sa.String(length=40), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('provider_id'))


def downgrade() -> None:
    op.drop_table('usage_versions')
