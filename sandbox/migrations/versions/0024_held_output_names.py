"""job_outputs.script_name (the script's own name of an output the requester sees by
position: held for review, blocked or withheld)

Revision ID: 0024_held_output_names
Revises: 0023_cell_holders
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0024_held_output_names'
down_revision = '0023_cell_holders'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Outputs recorded before kept the script's name in ``name``: nothing to move.
    op.add_column('job_outputs', sa.Column('script_name', sa.String(length=200),
                                           nullable=True))


def downgrade() -> None:
    # In place, not a batch copy: output_reviews.output_id points at job_outputs.
    op.drop_column('job_outputs', 'script_name')
