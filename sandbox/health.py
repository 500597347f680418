"""What readiness and the metrics look at: the database, the log's checkpoints, witnesses.

Readiness probes the database through a connection of its own, opened for each probe and
never pooled: a pooled connection can outlive the database it was opened on (an SQLite
file removed or replaced, a PostgreSQL server restarted behind a proxy) and still answer.
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, make_url, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from ledger.entry import decode_entry
from ledger.errors import LedgerError, WitnessError
from ledger.store import checkpoints_t, entries_t, head_t
from ledger.witness import fetch_cosigned_checkpoint
from sandbox.migrate import alembic_config

TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
PROBE_TIMEOUT_S = 3


def _parse_ts(ts: str) -> datetime:
    return datetime.strptime(ts, TS_FORMAT).replace(tzinfo=UTC)


@dataclass(frozen=True)
class LedgerStatus:
    size: int
    checkpoint_size: int | None
    checkpoint_age_s: float | None
    # Entries no signed checkpoint covers yet, and how long the oldest of them has waited.
    unsigned: int
    oldest_unsigned_age_s: float


def ledger_status(conn: Connection | Session, now: datetime | None = None) -> LedgerStatus:
    """Size, latest checkpoint and signing lag of the log, from the database (read only)."""
    now = now or datetime.now(UTC)
    size = int(conn.execute(select(head_t.c.size)).scalar() or 0)
    cp = conn.execute(select(checkpoints_t.c.size, checkpoints_t.c.created_at)
                      .order_by(checkpoints_t.c.size.desc()).limit(1)).first()
    cp_size = None if cp is None else int(cp.size)
    cp_age = None if cp is None else (now - _parse_ts(str(cp.created_at))).total_seconds()
    covered = cp_size or 0
    oldest = 0.0
    if size > covered:
        data = conn.execute(select(entries_t.c.data).where(entries_t.c.idx == covered)).scalar()
        if data is not None:
            ts = decode_entry(bytes(data), check_canonical=False)["ts"]
            oldest = max(0.0, (now - _parse_ts(str(ts))).total_seconds())
    return LedgerStatus(size=size, checkpoint_size=cp_size, checkpoint_age_s=cp_age,
                        unsigned=max(0, size - covered), oldest_unsigned_age_s=oldest)


def probe_engine(url: str) -> Engine:
    """An engine whose every connection is new, short to time out, and cannot write."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ":memory:"
        if path == ":memory:" or path.startswith("file:"):
            return create_engine(url, poolclass=NullPool, hide_parameters=True)
        # mode=rw: a missing file is an error, not a new empty database.
        target = f"file:{urllib.parse.quote(path)}?mode=rw"

        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(target, uri=True, timeout=PROBE_TIMEOUT_S,
                                   check_same_thread=False)
            conn.execute("PRAGMA query_only=ON")
            return conn

        return create_engine("sqlite://", creator=connect, poolclass=NullPool,
                             hide_parameters=True)
    return create_engine(url, poolclass=NullPool, hide_parameters=True,
                         connect_args={"connect_timeout": PROBE_TIMEOUT_S,
                                       "options": f"-c statement_timeout={PROBE_TIMEOUT_S}s"})


@dataclass
class Readiness:
    checks: dict[str, str] = field(default_factory=dict)
    failed: str | None = None
    rule: str = ""
    ledger: LedgerStatus | None = None

    def fail(self, check: str, rule: str) -> None:
        self.checks[check] = "failed"
        if self.failed is None:
            self.failed, self.rule = check, rule


def witness_reachable(url: str, origin: str, timeout: float) -> bool:
    """A witness that answers, with a checkpoint or with 404 (none for this log yet)."""
    try:
        fetch_cosigned_checkpoint(url, origin, timeout)
        return True
    except WitnessError as e:
        return e.status == 404


def schema_head() -> str:
    """The migration this code expects the database to be at."""
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    return str(head)


def check(engine: Engine, *, schema: str, max_age_s: float,
          witnesses: Sequence[dict[str, str]], quorum: int, origin: str,
          witness_timeout_s: float, on_witness_failure: Callable[[int], None]) -> Readiness:
    r = Readiness()
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            r.checks["database"] = "ok"
            try:
                at = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except SQLAlchemyError:
                at = None
            if at != schema:
                r.fail("schema", f"must be at migration {schema} (run `sandbox init-db`)")
            else:
                r.checks["schema"] = "ok"
                r.ledger = ledger_status(conn)
    except (SQLAlchemyError, LedgerError, sqlite3.Error, OSError):
        r.fail("database", "must be reachable")
    if r.ledger is None:
        r.checks.setdefault("schema", "unknown")
        r.checks["checkpoint"] = "unknown"
    if r.ledger is not None:
        if r.ledger.oldest_unsigned_age_s > max_age_s:
            r.fail("checkpoint", f"every ledger entry must be under a signed checkpoint "
                                 f"within {max_age_s:g} s")
        else:
            r.checks["checkpoint"] = "ok"
    if quorum == 0:
        r.checks["witnesses"] = "not configured"
        return r
    with ThreadPoolExecutor(max_workers=len(witnesses)) as pool:
        answers = list(pool.map(lambda w: witness_reachable(w["url"], origin,
                                                            witness_timeout_s), witnesses))
    for i, ok in enumerate(answers):
        if not ok:
            on_witness_failure(i)
    if sum(answers) >= quorum:
        r.checks["witnesses"] = "ok"
    else:
        r.fail("witnesses", f"at least {quorum} of {len(witnesses)} witnesses must answer")
    return r
