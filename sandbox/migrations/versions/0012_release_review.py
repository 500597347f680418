"""release review: held outputs' justification and decision time, checkers' decisions,
permits.review_quorum; script approval: permits.approve_scripts, script_approvals;
accredited people: people's identity, accreditations, the people a request and permit name

Revision ID: 0012_release_review
Revises: 0007_people
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012_release_review'
down_revision = '0007_people'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('people', schema=None) as batch_op:
        batch_op.add_column(sa.Column('identity_method', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('identity_verified_at', sa.DateTime(timezone=True),
                                      nullable=True))
    op.create_table(
        'accreditations',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('person_id', sa.String(length=40), nullable=False),
        sa.Column('kind', sa.String(length=200), nullable=False),
        sa.Column('awarded_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('recorded_by', sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(['person_id'], ['people.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('accreditations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_accreditations_person_id'), ['person_id'],
                              unique=False)
    # Existing requests and permits name nobody: their requester's service account alone
    # uses them, as before.
    for table in ('access_requests', 'permits'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('people', sa.JSON(), nullable=False,
                                          server_default='[]'))
    with op.batch_alter_table('job_outputs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('justification', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True))
    # Existing permits: one output checker per provider (the two-person rule is opt-in).
    with op.batch_alter_table('permits', schema=None) as batch_op:
        batch_op.add_column(sa.Column('review_quorum', sa.Integer(), nullable=False,
                                      server_default='1'))
        batch_op.add_column(sa.Column('approve_scripts', sa.Boolean(), nullable=False,
                                      server_default='0'))
    op.create_table(
        'script_approvals',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('permit_id', sa.String(length=40), nullable=False),
        sa.Column('script_sha256', sa.String(length=64), nullable=False),
        sa.Column('provider_id', sa.String(length=40), nullable=False),
        sa.Column('approved_by', sa.String(length=40), nullable=False),
        sa.Column('approved_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['permit_id'], ['permits.id']),
        sa.ForeignKeyConstraint(['provider_id'], ['parties.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('permit_id', 'script_sha256', 'provider_id'),
    )
    with op.batch_alter_table('script_approvals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_script_approvals_permit_id'), ['permit_id'],
                              unique=False)
    op.create_table(
        'output_reviews',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('output_id', sa.Integer(), nullable=False),
        sa.Column('provider_id', sa.String(length=40), nullable=False),
        sa.Column('reviewer_id', sa.String(length=40), nullable=False),
        sa.Column('decision', sa.String(length=20), nullable=False),
        sa.Column('comment', sa.Text(), nullable=False),
        sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['output_id'], ['job_outputs.id']),
        sa.ForeignKeyConstraint(['provider_id'], ['parties.id']),
        sa.ForeignKeyConstraint(['reviewer_id'], ['people.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('output_id', 'reviewer_id'),
    )
    with op.batch_alter_table('output_reviews', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_output_reviews_output_id'), ['output_id'],
                              unique=False)


def downgrade() -> None:
    for table in ('access_requests', 'permits'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('people')
    with op.batch_alter_table('accreditations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_accreditations_person_id'))
    op.drop_table('accreditations')
    with op.batch_alter_table('people', schema=None) as batch_op:
        batch_op.drop_column('identity_verified_at')
        batch_op.drop_column('identity_method')
    with op.batch_alter_table('output_reviews', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_output_reviews_output_id'))
    op.drop_table('output_reviews')
    with op.batch_alter_table('script_approvals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_script_approvals_permit_id'))
    op.drop_table('script_approvals')
    with op.batch_alter_table('permits', schema=None) as batch_op:
        batch_op.drop_column('approve_scripts')
        batch_op.drop_column('review_quorum')
    with op.batch_alter_table('job_outputs', schema=None) as batch_op:
        batch_op.drop_column('decided_at')
        batch_op.drop_column('justification')
