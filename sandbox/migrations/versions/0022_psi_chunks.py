"""A PSI job's relayed messages move from a JSON column of joint_jobs to their own table,
in chunks (authz.models.PsiChunk): a message of millions of points no longer fits one
request, nor one JSON value rewritten on every message

Revision ID: 0022_psi_chunks
Revises: 0020_ui_ratio
"""

from __future__ import annotations

import base64
import json

import sqlalchemy as sa
from alembic import op

revision = '0022_psi_chunks'
down_revision = '0020_ui_ratio'
branch_labels = None
depends_on = None

joint_jobs = sa.table('joint_jobs', sa.column('id', sa.String()),
                      sa.column('psi_messages', sa.JSON()))


def _chunks_table() -> sa.TableClause:
    return sa.table('psi_chunks', sa.column('joint_id', sa.String()),
                    sa.column('name', sa.String()), sa.column('seq', sa.Integer()),
                    sa.column('chunks', sa.Integer()), sa.column('data', sa.LargeBinary()))


def upgrade() -> None:
    op.create_table(
        'psi_chunks',
        sa.Column('joint_id', sa.String(length=40), nullable=False),
        sa.Column('name', sa.String(length=40), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('chunks', sa.Integer(), nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(['joint_id'], ['joint_jobs.id']),
        sa.PrimaryKeyConstraint('joint_id', 'name', 'seq'))
    # Messages of running PSI jobs carry over, each one chunk: nothing in flight is lost.
    conn = op.get_bind()
    rows = []
    for joint_id, messages in conn.execute(sa.select(joint_jobs.c.id,
                                                     joint_jobs.c.psi_messages)):
        held = json.loads(messages) if isinstance(messages, str) else (messages or {})
        rows += [{"joint_id": joint_id, "name": name, "seq": 0, "chunks": 1,
                  "data": base64.b64decode(data)} for name, data in held.items()]
    if rows:
        op.bulk_insert(_chunks_table(), rows)
    op.drop_column('joint_jobs', 'psi_messages')


def downgrade() -> None:
    op.add_column('joint_jobs', sa.Column('psi_messages', sa.JSON(), nullable=False,
                                          server_default='{}'))
    conn = op.get_bind()
    chunks = _chunks_table()
    held: dict[str, dict[str, list[bytes]]] = {}
    for joint_id, name, _seq, data in conn.execute(
            sa.select(chunks.c.joint_id, chunks.c.name, chunks.c.seq, chunks.c.data)
            .order_by(chunks.c.joint_id, chunks.c.name, chunks.c.seq)):
        held.setdefault(joint_id, {}).setdefault(name, []).append(bytes(data))
    for joint_id, messages in held.items():
        conn.execute(sa.update(joint_jobs).where(joint_jobs.c.id == joint_id).values(
            psi_messages={n: base64.b64encode(b"".join(parts)).decode()
                          for n, parts in messages.items()}))
    op.drop_table('psi_chunks')
