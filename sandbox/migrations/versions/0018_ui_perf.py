"""Indexes of the provider's usage report: jobs by provider and submission time, and by
provider and requester (authz/usage.py reads its pages and chart counts from them)

Revision ID: 0018_ui_perf
Revises: 0015_web_review
"""

from __future__ import annotations

from alembic import op

revision = '0018_ui_perf'
down_revision = '0015_web_review'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_jobs_provider_submitted', 'jobs',
                    ['provider_id', 'submitted_at', 'id'], unique=False)
    op.create_index('ix_jobs_provider_requester', 'jobs', ['provider_id', 'requester_id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_jobs_provider_requester', table_name='jobs')
    op.drop_index('ix_jobs_provider_submitted', table_name='jobs')
