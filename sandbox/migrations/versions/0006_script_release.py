"""permits.script_release: whether the providers accept automatic release of script outputs

Revision ID: 0006_script_release
Revises: 0005_permit_disclosure
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006_script_release'
down_revision = '0005_permit_disclosure'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing permits get the fail-closed value: script outputs are held for review.
    with op.batch_alter_table('permits', schema=None) as batch_op:
        batch_op.add_column(sa.Column('script_release', sa.String(length=20), nullable=False,
                                      server_default='review'))


def downgrade() -> None:
    with op.batch_alter_table('permits', schema=None) as batch_op:
        batch_op.drop_column('script_release')
