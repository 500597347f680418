"""OIDC sign-in: identities at an OpenID Connect provider linked to people, and sign-ins
started but not yet finished

Revision ID: 0014_oidc_identities
Revises: 0012_release_review
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014_oidc_identities'
down_revision = '0012_release_review'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'oidc_identities',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('issuer', sa.String(length=500), nullable=False),
        sa.Column('subject', sa.String(length=255), nullable=False),
        sa.Column('person_id', sa.String(length=40), nullable=False),
        sa.Column('linked_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['person_id'], ['people.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('issuer', 'subject'),
    )
    with op.batch_alter_table('oidc_identities', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oidc_identities_person_id'), ['person_id'],
                              unique=False)
    op.create_table(
        'oidc_logins',
        sa.Column('state_digest', sa.String(length=64), nullable=False),
        sa.Column('browser_digest', sa.String(length=64), nullable=False),
        sa.Column('nonce', sa.String(length=200), nullable=False),
        sa.Column('code_verifier', sa.String(length=200), nullable=False),
        sa.Column('token_days', sa.Integer(), nullable=True),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('state_digest'),
    )
    with op.batch_alter_table('oidc_logins', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oidc_logins_expires_at'), ['expires_at'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('oidc_logins', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oidc_logins_expires_at'))
    op.drop_table('oidc_logins')
    with op.batch_alter_table('oidc_identities', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oidc_identities_person_id'))
    op.drop_table('oidc_identities')
