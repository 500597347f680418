"""joint_jobs.mask_keys (signed pairwise-mask key announcements per joint job) and
joint_jobs.psi_messages (a PSI job's blinded messages in flight)

Revision ID: 0011_joint_masks
Revises: 0008_dataset_versions
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011_joint_masks'
down_revision = '0008_dataset_versions'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Joint jobs from before masking announced no keys: an empty list, and they cannot be
    # combined under the masked protocol (they fail on their next part's result).
    with op.batch_alter_table('joint_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('mask_keys', sa.JSON(), nullable=False,
                                      server_default='[]'))
        batch_op.add_column(sa.Column('psi_messages', sa.JSON(), nullable=False,
                                      server_default='{}'))


def downgrade() -> None:
    # In place, not a batch copy: jobs.joint_id points at joint_jobs.
    op.drop_column('joint_jobs', 'psi_messages')
    op.drop_column('joint_jobs', 'mask_keys')
