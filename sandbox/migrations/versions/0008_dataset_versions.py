"""datasets.version: a dataset code may be registered again, as its next version;
permits.mock_returns: runs given back after a failure on mock data

Revision ID: 0008_dataset_versions
Revises: 0010_sealed_at_rest
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008_dataset_versions'
down_revision = '0010_sealed_at_rest'
branch_labels = None
depends_on = None

# SQLite keeps the unnamed UNIQUE(code) of 0002 without a name: the batch copy names it
# by this convention so it can be dropped.
NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _old_unique() -> str:
    # PostgreSQL named the unnamed constraint itself.
    return 'datasets_code_key' if op.get_bind().dialect.name == 'postgresql' \
        else 'uq_datasets_code'


def _defer_foreign_keys() -> None:
    # SQLite's batch mode copies the table and drops the old one; rows of other tables
    # pointing at it (request items, jobs) would fail that drop. Deferred, the keys are
    # checked at commit, when the copy holds every row again under the same ids.
    if op.get_bind().dialect.name == 'sqlite':
        op.execute('PRAGMA defer_foreign_keys = ON')


def upgrade() -> None:
    _defer_foreign_keys()
    # Every dataset registered so far is its code's first version.
    with op.batch_alter_table('datasets', schema=None, naming_convention=NAMING) as batch_op:
        batch_op.add_column(sa.Column('version', sa.Integer(), nullable=False,
                                      server_default='1'))
        batch_op.drop_constraint(_old_unique(), type_='unique')
        batch_op.create_unique_constraint('uq_datasets_code_version', ['code', 'version'])
    with op.batch_alter_table('permits', schema=None) as batch_op:
        batch_op.add_column(sa.Column('mock_returns', sa.Integer(), nullable=False,
                                      server_default='0'))


def downgrade() -> None:
    _defer_foreign_keys()
    with op.batch_alter_table('permits', schema=None) as batch_op:
        batch_op.drop_column('mock_returns')
    with op.batch_alter_table('datasets', schema=None, naming_convention=NAMING) as batch_op:
        batch_op.drop_constraint('uq_datasets_code_version', type_='unique')
        batch_op.create_unique_constraint(_old_unique(), ['code'])
        batch_op.drop_column('version')
