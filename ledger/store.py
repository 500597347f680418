"""Tables of the transparency log (SQLAlchemy 2). Mirrored by migration 0001_ledger.

- ``ledger_entries``: one row per leaf: index, RFC 9162 leaf hash, canonical entry bytes.
- ``ledger_nodes``: hash of every complete aligned subtree above the leaves, keyed by
  (level >= 1, index at that level); written at append so proofs read O(log n) rows.
- ``ledger_head``: the single row appends lock; holds the size, the last leaf hash (the
  hash chain), the last timestamp (kept non-decreasing) and the compact-range frontier
  (the perfect subtrees of the current tree, 32 bytes each, largest first).
- ``ledger_checkpoints``: every signed checkpoint note, with cosignatures once collected.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer, LargeBinary, SmallInteger, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class LedgerBase(DeclarativeBase):
    pass


class LedgerEntry(LedgerBase):
    __tablename__ = "ledger_entries"

    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class LedgerNode(LedgerBase):
    __tablename__ = "ledger_nodes"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LedgerHead(LedgerBase):
    __tablename__ = "ledger_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    last_ts: Mapped[str] = mapped_column(String(32))
    frontier: Mapped[bytes] = mapped_column(LargeBinary)


class LedgerCheckpoint(LedgerBase):
    __tablename__ = "ledger_checkpoints"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    cosigned_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[str] = mapped_column(String(32))


entries_t = LedgerBase.metadata.tables["ledger_entries"]
nodes_t = LedgerBase.metadata.tables["ledger_nodes"]
head_t = LedgerBase.metadata.tables["ledger_head"]
checkpoints_t = LedgerBase.metadata.tables["ledger_checkpoints"]
