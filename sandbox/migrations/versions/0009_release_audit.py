"""job_outputs.findings: what re-deriving a held output found, for its output checkers

Revision ID: 0009_release_audit
Revises: 0013_web_sessions
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009_release_audit'
down_revision = '0013_web_sessions'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing outputs were never re-derived: no findings.
    op.add_column('job_outputs', sa.Column('findings', sa.JSON(), nullable=False,
                                           server_default='[]'))


def downgrade() -> None:
    # In place, not a batch copy: output_reviews points at job_outputs.
    op.drop_column('job_outputs', 'findings')
