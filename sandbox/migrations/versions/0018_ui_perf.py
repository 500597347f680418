"""The provider's usage report: jobs indexed by provider and submission time (its pages),
and a rollup of jobs per provider, requester and day (its charts; authz/usage.py)

Revision ID: 0018_ui_perf
Revises: 0015_web_review
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0018_ui_perf'
down_revision = '0015_web_review'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_jobs_provider_submitted', 'jobs',
                    ['provider_id', 'submitted_at', 'id'], unique=False)
    op.create_table(
        'usage_days',
        sa.Column('provider_id', sa.String(length=40), nullable=False),
        sa.Column('day', sa.String(length=10), nullable=False),
        sa.Column('requester_id', sa.String(length=40), nullable=False),
        sa.Column('jobs', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('provider_id', 'day', 'requester_id'))
    # Count the jobs already there, by their submission day in UTC.
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("INSERT INTO usage_days (provider_id, day, requester_id, jobs) "
                   "SELECT provider_id, to_char(submitted_at AT TIME ZONE 'UTC', "
                   "'YYYY-MM-DD') AS day, requester_id, count(*) FROM jobs "
                   "GROUP BY provider_id, day, requester_id")
    else:  # SQLite keeps the UTC timestamp as text, "YYYY-MM-DD HH:MM:SS.ffffff"
        op.execute("INSERT INTO usage_days (provider_id, day, requester_id, jobs) "
                   "SELECT provider_id, substr(submitted_at, 1, 10) AS day, requester_id, "
                   "count(*) FROM jobs GROUP BY provider_id, day, requester_id")


def downgrade() -> None:
    op.drop_table('usage_days')
    op.drop_index('ix_jobs_provider_submitted', table_name='jobs')
