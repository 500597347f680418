"""Seal scripts, logs, released outputs, joint specs, review text and TOTP secrets at rest;
agents' retired signing keys

Existing values are sealed in place with the controller's keyring (compute/sealing.py):
jobs.script, jobs.log, job_outputs.content, job_outputs.justification, output_reviews.comment,
people.totp_secret, joint_jobs.spec. The text columns become binary columns. A database with such rows needs the keyring to upgrade (the one
`sandbox init-db` loads); an empty one does not.

Revision ID: 0010_sealed_at_rest
Revises: 0014_oidc_identities
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import context, op

from compute.errors import SealingError
from compute.sealing import Keyring, open_sealed, seal

revision = '0010_sealed_at_rest'
down_revision = '0014_oidc_identities'
branch_labels = None
depends_on = None

# (table, column, row-key columns, how the plaintext is encoded to bytes)
SEALED: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ('jobs', 'script', ('id',), 'bytes'),
    ('jobs', 'log', ('id',), 'text'),
    ('job_outputs', 'content', ('job_id', 'name'), 'bytes'),
    ('joint_jobs', 'spec', ('id',), 'json'),
    ('job_outputs', 'justification', ('job_id', 'name'), 'text'),
    ('output_reviews', 'comment', ('output_id', 'reviewer_id'), 'text'),
    ('people', 'totp_secret', ('id',), 'text'),
)
# Row-key columns that are not strings.
KEY_TYPES: dict[str, Any] = {'output_id': sa.Integer()}
# Text columns that become binary: (table, column, PostgreSQL cast, nullable).
RETYPED: tuple[tuple[str, str, str, bool], ...] = (
    ('jobs', 'log', "convert_to(log, 'UTF8')", True),
    ('joint_jobs', 'spec', "convert_to(spec::text, 'UTF8')", False),
    ('job_outputs', 'justification', "convert_to(justification, 'UTF8')", True),
    ('output_reviews', 'comment', "convert_to(comment, 'UTF8')", False),
    ('people', 'totp_secret', "convert_to(totp_secret, 'UTF8')", True),
)


def _keys() -> Keyring:
    attrs = context.config.attributes
    keys = attrs.get('sealing_keys')
    if keys is None:
        loader: Callable[[], Keyring] | None = attrs.get('sealing_keys_loader')
        if loader is None:
            raise SealingError('sealing existing rows needs the key-encryption keys: '
                               'upgrade with `sandbox init-db`')
        keys = attrs['sealing_keys'] = loader()
    assert isinstance(keys, Keyring)
    return keys


def _raw(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    return bytes(value)


def _rows(table: str, column: str, key: tuple[str, ...]) -> tuple[sa.TableClause, list[Any]]:
    t = sa.table(table, *(sa.column(k, KEY_TYPES.get(k, sa.String())) for k in key),
                 sa.column(column, sa.LargeBinary()))
    rows = op.get_bind().execute(
        sa.select(*(t.c[k] for k in key), t.c[column]).where(t.c[column].is_not(None))).all()
    return t, list(rows)


def _where(t: sa.TableClause, key: tuple[str, ...], row: Any) -> Any:
    return sa.and_(*(t.c[k] == row[i] for i, k in enumerate(key)))


def _retype(table: str, column: str, type_: Any, pg_using: str, nullable: bool) -> None:
    """Change a column's type, keeping its values.

    SQLite: add, copy, drop, rename; never a batch copy of the table, whose DROP TABLE
    would run into the foreign keys that point at it (jobs is referenced by job_outputs).
    """
    if op.get_bind().dialect.name != 'sqlite':
        op.alter_column(table, column, type_=type_, postgresql_using=pg_using)
        return
    cast = 'BLOB' if isinstance(type_, sa.LargeBinary) else 'TEXT'
    # SQLite adds a NOT NULL column only with a default; every row is copied over it.
    default = None if nullable else sa.text("x''" if cast == 'BLOB' else "'{}'")
    op.add_column(table, sa.Column(f'{column}_new', type_, nullable=nullable,
                                   server_default=default))
    # Names are this migration's constants, never input.
    op.execute(f'UPDATE {table} SET {column}_new = CAST({column} AS {cast})')  # noqa: S608
    op.drop_column(table, column)
    op.execute(f'ALTER TABLE {table} RENAME COLUMN {column}_new TO {column}')


def upgrade() -> None:
    op.create_table(
        'agent_retired_keys',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('agent_id', sa.String(length=40), nullable=False),
        sa.Column('public_key', sa.String(length=64), nullable=False),
        sa.Column('valid_from', sa.DateTime(timezone=True), nullable=False),
        sa.Column('retired_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('retired_by', sa.String(length=40), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], ),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('agent_retired_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agent_retired_keys_agent_id'), ['agent_id'],
                              unique=False)
    if op.get_bind().dialect.name == 'sqlite':
        # Cells overwritten below are zeroed in the file, not left in free space.
        op.execute('PRAGMA secure_delete=ON')
    for table, column, pg_using, nullable in RETYPED:
        _retype(table, column, sa.LargeBinary(), pg_using, nullable)
    for table, column, key, kind in SEALED:
        t, rows = _rows(table, column, key)
        for row in rows:
            plain = _raw(row[-1])
            if kind == 'json':
                plain = json.dumps(json.loads(plain), sort_keys=True,
                                   separators=(',', ':')).encode()
            place = (table, column, *(str(v) for v in row[:-1]))
            op.get_bind().execute(sa.update(t).where(_where(t, key, row))
                                  .values({column: seal(_keys(), place, plain)}))


def downgrade() -> None:
    for table, column, key, _kind in SEALED:
        t, rows = _rows(table, column, key)
        for row in rows:
            _, plain = open_sealed(_keys(), _raw(row[-1]), f'{table}.{column}')
            op.get_bind().execute(sa.update(t).where(_where(t, key, row))
                                  .values({column: plain}))
    _retype('people', 'totp_secret', sa.String(length=64),
            "convert_from(totp_secret, 'UTF8')", True)
    _retype('output_reviews', 'comment', sa.Text(), "convert_from(comment, 'UTF8')", False)
    _retype('job_outputs', 'justification', sa.Text(), "convert_from(justification, 'UTF8')",
            True)
    _retype('joint_jobs', 'spec', sa.JSON(), "convert_from(spec, 'UTF8')::json", False)
    _retype('jobs', 'log', sa.Text(), "convert_from(log, 'UTF8')", True)
    with op.batch_alter_table('agent_retired_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agent_retired_keys_agent_id'))
    op.drop_table('agent_retired_keys')
