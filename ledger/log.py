"""The transparency log over SQL: serialized appends, stored subtrees, O(log n) proofs."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, insert, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ledger.entry import ZERO_HASH_HEX, encode_entry
from ledger.errors import EntryNotFoundError, LedgerError, ProofRequestError
from ledger.merkle import EMPTY_ROOT, leaf_hash, node_hash
from ledger.store import checkpoints_t, entries_t, head_t, nodes_t
from ledger.treemath import consistency_ranges, inclusion_ranges, perfect_subtrees

if TYPE_CHECKING:
    from ledger.checkpoint import CheckpointSigner

HEAD_ID = 1
# The reads every ledger page makes, built once: building a statement and its cache key
# cost more than running it.
_SIZE = select(head_t.c.size).where(head_t.c.id == HEAD_ID)
_ENTRIES = (select(entries_t.c.idx, entries_t.c.data)
            .where(entries_t.c.idx >= bindparam("start"), entries_t.c.idx < bindparam("end"))
            .order_by(entries_t.c.idx))
_EPOCH_TS = "1970-01-01T00:00:00.000000Z"


@dataclass(frozen=True)
class AppendResult:
    index: int
    leaf_hash: bytes
    timestamp: str


@dataclass(frozen=True)
class Head:
    size: int
    last_hash: bytes
    last_ts: str
    frontier: list[bytes]


def fold_right(hashes: list[bytes]) -> bytes:
    """MTH of consecutive perfect subtrees, left to right (RFC 9162 §2.1.1 recursion)."""
    if not hashes:
        return EMPTY_ROOT
    h = hashes[-1]
    for left in reversed(hashes[:-1]):
        h = node_hash(left, h)
    return h


def now_ts() -> str:
    """Current UTC time as fixed-width RFC 3339 with microseconds (see ledger.entry)."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1e6) % 1_000_000:06d}Z"


_SQLITE_SQL = {
    # SQLite: make_engine's BEGIN IMMEDIATE already holds the write lock, no FOR UPDATE.
    "lock": "SELECT size, last_hash, last_ts, frontier FROM ledger_head WHERE id = :id",
    "entry": "INSERT INTO ledger_entries (idx, leaf_hash, data) VALUES (:idx, :leaf_hash, :data)",
    "node": "INSERT INTO ledger_nodes (level, idx, hash) VALUES (:level, :idx, :hash)",
    "head": "UPDATE ledger_head SET size = :size, last_hash = :last_hash, last_ts = :last_ts, "
            "frontier = :frontier WHERE id = :id",
}
_PG_SQL = {k: re.sub(r":(\w+)", r"%(\1)s", v) for k, v in _SQLITE_SQL.items()}
_PG_SQL["lock"] += " FOR UPDATE"
# PostgreSQL: entry, nodes and head in one statement (one round trip; DML in WITH).
_PG_SQL["write"] = (
    "WITH e AS (INSERT INTO ledger_entries (idx, leaf_hash, data) "
    "SELECT * FROM unnest(%(idx)s::bigint[], %(leaf_hash)s::bytea[], %(data)s::bytea[])), "
    "n AS (INSERT INTO ledger_nodes (level, idx, hash) "
    "SELECT * FROM unnest(%(n_level)s::smallint[], %(n_idx)s::bigint[], %(n_hash)s::bytea[])) "
    "UPDATE ledger_head SET size = %(size)s, last_hash = %(last_hash)s, "
    "last_ts = %(last_ts)s, frontier = %(frontier)s WHERE id = %(id)s"
)
_DRIVER_SQL = {"sqlite": _SQLITE_SQL, "postgresql": _PG_SQL}
Item = tuple[str, str, Mapping[str, Any]]


def _split_frontier(raw: bytes) -> list[bytes]:
    return [raw[i:i + 32] for i in range(0, len(raw), 32)]


class TransparencyLog:
    """One append-only log. Stateless: every method works inside the caller's session.

    ``append`` never commits: the controller commits its state change and the entry that
    records it together, and the head-row lock it took is held until then.
    """

    def __init__(self, origin: str, signer: CheckpointSigner | None = None) -> None:
        if not origin or "\n" in origin:
            raise LedgerError("origin must be a non-empty single line")
        self.origin = origin
        self.signer = signer

    # -- writing -------------------------------------------------------------------------

    def _lock_head(self, session: Session) -> Head:
        stmt = select(head_t.c.size, head_t.c.last_hash, head_t.c.last_ts, head_t.c.frontier) \
            .where(head_t.c.id == HEAD_ID).with_for_update()
        row = session.execute(stmt).one_or_none()
        if row is None:
            dialect = session.get_bind().dialect.name
            values = {"id": HEAD_ID, "size": 0, "last_hash": bytes(32), "last_ts": _EPOCH_TS,
                      "frontier": b""}
            # Two first appends may race to create the head: only one insert wins, the
            # other then waits on the winner's row lock below.
            if dialect == "postgresql":
                session.execute(postgresql.insert(head_t).values(values).on_conflict_do_nothing())
            elif dialect == "sqlite":
                session.execute(sqlite.insert(head_t).values(values).on_conflict_do_nothing())
            else:
                session.execute(insert(head_t).values(values))
            row = session.execute(stmt).one()
        return Head(row.size, row.last_hash, row.last_ts, _split_frontier(row.frontier))

    def append(
        self, session: Session, kind: str, actor: str, body: Mapping[str, Any]
    ) -> AppendResult:
        return self.append_many(session, [(kind, actor, body)])[0]

    def append_many(self, session: Session, items: Iterable[Item]) -> list[AppendResult]:
        """Append several (kind, actor, body) entries in order, under one head lock.

        Like ``append`` it never commits; the entries commit (or roll back) together with
        the caller's transaction. One lock, one write per table: for callers that record
        several events in one transaction.
        """
        items = list(items)
        if not items:
            return []
        conn = session.connection()
        sql = _DRIVER_SQL.get(conn.dialect.name)
        if sql is None:
            return self._append_core(session, items)
        # The DB-API cursor of the session's own connection, inside its transaction:
        # SQLAlchemy's per-statement execution machinery cost more than the statements.
        cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cur.execute(sql["lock"], {"id": HEAD_ID})
            row = cur.fetchone()
            if row is None:
                self._lock_head(session)
                cur.execute(sql["lock"], {"id": HEAD_ID})
                row = cur.fetchone()
                if row is None:
                    raise LedgerError("ledger head row missing after creating it")
            index, last_hash, last_ts = int(row[0]), bytes(row[1]), str(row[2])
            frontier = _split_frontier(bytes(row[3]))
            results, entries, nodes = self._next_many(index, last_hash, last_ts, frontier,
                                                      items)
            head = {"id": HEAD_ID, "size": index + len(items), "last_hash": results[-1].leaf_hash,
                    "last_ts": results[-1].timestamp, "frontier": b"".join(frontier)}
            if "write" in sql:
                cur.execute(sql["write"], {
                    **head, "idx": [e[0] for e in entries], "leaf_hash": [e[1] for e in entries],
                    "data": [e[2] for e in entries], "n_level": [n[0] for n in nodes],
                    "n_idx": [n[1] for n in nodes], "n_hash": [n[2] for n in nodes]})
            else:
                cur.executemany(sql["entry"], [{"idx": i, "leaf_hash": lh, "data": data}
                                               for i, lh, data in entries])
                if nodes:
                    cur.executemany(sql["node"], [{"level": lv, "idx": i, "hash": h}
                                                  for lv, i, h in nodes])
                cur.execute(sql["head"], head)
        finally:
            cur.close()
        return results

    @staticmethod
    def _next_many(index: int, last_hash: bytes, last_ts: str, frontier: list[bytes],
                   items: list[Item]
                   ) -> tuple[list[AppendResult], list[tuple[int, bytes, bytes]],
                              list[tuple[int, int, bytes]]]:
        """The entries after the head and the subtree hashes they complete (frontier too)."""
        results: list[AppendResult] = []
        entries: list[tuple[int, bytes, bytes]] = []
        nodes: list[tuple[int, int, bytes]] = []
        for kind, actor, body in items:
            last_ts = max(now_ts(), last_ts)
            prev = last_hash.hex() if index else ZERO_HASH_HEX
            data = encode_entry(index, last_ts, kind, actor, prev, body)
            h = last_hash = leaf_hash(data)
            results.append(AppendResult(index, h, last_ts))
            entries.append((index, h, data))
            count, level = index + 1, 0
            while count & 1 == 0:  # the subtrees this leaf completes, smallest first
                h = node_hash(frontier.pop(), h)
                count >>= 1
                level += 1
                nodes.append((level, index >> level, h))
            frontier.append(h)
            index += 1
        return results, entries, nodes

    def _append_core(self, session: Session, items: list[Item]) -> list[AppendResult]:
        head = self._lock_head(session)
        results, entries, nodes = self._next_many(head.size, head.last_hash, head.last_ts,
                                                  head.frontier, items)
        session.execute(insert(entries_t), [{"idx": i, "leaf_hash": lh, "data": data}
                                            for i, lh, data in entries])
        if nodes:
            session.execute(insert(nodes_t), [{"level": lv, "idx": i, "hash": h}
                                              for lv, i, h in nodes])
        session.execute(
            update(head_t).where(head_t.c.id == HEAD_ID).values(
                size=head.size + len(items), last_hash=results[-1].leaf_hash,
                last_ts=results[-1].timestamp, frontier=b"".join(head.frontier))
        )
        return results

    # -- reading -------------------------------------------------------------------------

    def size(self, session: Session) -> int:
        # On the session's connection (its transaction, if any): a Core statement needs
        # none of the ORM's execution path.
        got = session.connection().execute(_SIZE).scalar()
        return int(got or 0)

    def entries(self, session: Session, start: int, end: int) -> list[bytes]:
        if start < 0 or end < start:
            raise ProofRequestError(f"bad entry range {start}..{end}")
        rows = session.connection().execute(_ENTRIES, {"start": start, "end": end}).all()
        return [bytes(r.data) for r in rows]

    def find_index(self, session: Session, leaf_hash: bytes) -> int:
        got = session.execute(
            select(entries_t.c.idx).where(entries_t.c.leaf_hash == leaf_hash)
        ).scalar()
        if got is None:
            raise EntryNotFoundError(f"no entry with leaf hash {leaf_hash.hex()}")
        return int(got)

    def _nodes(self, session: Session, keys: Iterable[tuple[int, int]]) -> dict[
            tuple[int, int], bytes]:
        """Fetch stored subtree hashes; level 0 lives in ``ledger_entries``."""
        keys = set(keys)
        leaves = [i for lvl, i in keys if lvl == 0]
        inner = [(lvl, i) for lvl, i in keys if lvl > 0]
        out: dict[tuple[int, int], bytes] = {}
        if leaves:
            for r in session.execute(select(entries_t.c.idx, entries_t.c.leaf_hash)
                                     .where(entries_t.c.idx.in_(leaves))):
                out[(0, r.idx)] = bytes(r.leaf_hash)
        if inner:
            for r in session.execute(select(nodes_t.c.level, nodes_t.c.idx, nodes_t.c.hash)
                                     .where(tuple_(nodes_t.c.level, nodes_t.c.idx).in_(inner))):
                out[(r.level, r.idx)] = bytes(r.hash)
        if len(out) != len(keys):
            raise LedgerError("stored tree is missing subtree hashes: the database is damaged")
        return out

    def _range_hashes(self, session: Session, ranges: list[tuple[int, int]]) -> list[bytes]:
        plans = [perfect_subtrees(lo, hi) for lo, hi in ranges]
        nodes = self._nodes(session, (k for plan in plans for k in plan))
        return [fold_right([nodes[k] for k in plan]) for plan in plans]

    def _check_size(self, session: Session, size: int) -> None:
        current = self.size(session)
        if not 0 <= size <= current:
            raise ProofRequestError(f"size {size} outside 0..{current}")

    def root(self, session: Session, size: int | None = None) -> bytes:
        if size is None:
            size = self.size(session)
        self._check_size(session, size)
        if size == 0:
            return EMPTY_ROOT
        return self._range_hashes(session, [(0, size)])[0]

    def inclusion_proof(self, session: Session, index: int, size: int) -> list[bytes]:
        self._check_size(session, size)
        if not 0 <= index < size:
            raise ProofRequestError(f"index {index} outside tree of size {size}")
        return self._range_hashes(session, inclusion_ranges(index, size))

    def consistency_proof(self, session: Session, old_size: int, new_size: int) -> list[bytes]:
        self._check_size(session, new_size)
        if not 0 <= old_size <= new_size:
            raise ProofRequestError(f"old size {old_size} outside 0..{new_size}")
        return self._range_hashes(session, consistency_ranges(old_size, new_size))

    # -- checkpoints ---------------------------------------------------------------------

    def latest_checkpoint(self, session: Session) -> tuple[int, str] | None:
        """(size, note) of the newest stored checkpoint, cosigned version when there is one."""
        row = session.execute(
            select(checkpoints_t.c.size, checkpoints_t.c.note, checkpoints_t.c.cosigned_note)
            .order_by(checkpoints_t.c.size.desc()).limit(1)
        ).one_or_none()
        if row is None:
            return None
        return int(row.size), str(row.cosigned_note or row.note)


def bulk_load(conn: Connection, entries: list[bytes]) -> None:
    """Rebuild-free fast path for benchmarks/tests: write an empty log from given entries.

    The caller supplies well-formed entries; nodes and head are derived here.
    """
    frontier: list[bytes] = []
    rows, node_rows = [], []
    last, last_ts = bytes(32), _EPOCH_TS
    for index, data in enumerate(entries):
        lh = leaf_hash(data)
        rows.append({"idx": index, "leaf_hash": lh, "data": data})
        h, count, level = lh, index + 1, 0
        while count & 1 == 0:
            h = node_hash(frontier.pop(), h)
            count >>= 1
            level += 1
            node_rows.append({"level": level, "idx": index >> level, "hash": h})
        frontier.append(h)
        last = lh
    if entries:
        last_ts = str(json.loads(entries[-1])["ts"])
    conn.execute(insert(entries_t), rows)
    if node_rows:
        conn.execute(insert(nodes_t), node_rows)
    conn.execute(insert(head_t).values(id=HEAD_ID, size=len(entries), last_hash=last,
                                       last_ts=last_ts, frontier=b"".join(frontier)))
