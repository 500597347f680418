"""joint_jobs.cell_holders (each provider's signed, masked vector of each cell-holders
round of a joint job)

Revision ID: 0023_cell_holders
Revises: 0022_psi_chunks
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0023_cell_holders'
down_revision = '0022_psi_chunks'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Joint jobs from before had no round: an empty list.
    op.add_column('joint_jobs', sa.Column('cell_holders', sa.JSON(), nullable=False,
                                          server_default='[]'))


def downgrade() -> None:
    # In place, not a batch copy: jobs.joint_id points at joint_jobs.
    op.drop_column('joint_jobs', 'cell_holders')
