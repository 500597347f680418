"""One background checkpoint signer per database, however many controller processes.

Every controller process (each gunicorn worker, each replica) runs a checkpointer thread;
before each tick it asks its leadership whether it is the one to sign. The lock is one
the operating system or the database drops by itself when its holder dies, so a crashed
leader is replaced within ``retry_s`` without a lease to expire:

- PostgreSQL: a session-level advisory lock held on one dedicated connection.
- SQLite (one host by nature): ``flock`` on a file beside the database file.

Signing is idempotent (Ed25519 is deterministic, checkpoints are keyed by size), so a
short overlap while a lost leader notices is harmless: the lock saves work, it does not
guard correctness.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Connection, Engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError

from ledger.checkpointer import Leadership

log_ = logging.getLogger(__name__)
# One 64-bit advisory lock key for "the checkpoint signer" of a database.
PG_LOCK_KEY = int.from_bytes(hashlib.sha256(b"data-sandbox checkpointer").digest()[:8],
                             "big", signed=True)
LOCK_SUFFIX = ".checkpointer.lock"

OnChange = Callable[[bool], None]


class FileLeadership:
    """SQLite: an exclusive ``flock`` on ``<database file>.checkpointer.lock``."""

    def __init__(self, path: Path, retry_s: float, on_change: OnChange) -> None:
        self.path, self._retry, self._on_change = path, retry_s, on_change
        self._fd: int | None = None
        self._next_try = 0.0

    def holds(self) -> bool:
        if self._fd is not None:
            return True
        now = time.monotonic()
        if now < self._next_try:
            return False
        self._next_try = now + self._retry
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            log_.warning("checkpointer lock file cannot be opened: %s", type(e).__name__)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        self._on_change(True)
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        self._on_change(False)


class PostgresLeadership:
    """PostgreSQL: ``pg_try_advisory_lock`` on a connection kept out of the pool."""

    def __init__(self, engine: Engine, retry_s: float, on_change: OnChange) -> None:
        self._engine, self._retry, self._on_change = engine, retry_s, on_change
        self._conn: Connection | None = None
        self._next = 0.0

    def holds(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return self._conn is not None
        self._next = now + self._retry
        if self._conn is not None:
            # The lock lives as long as the session: a live connection still holds it.
            try:
                self._conn.execute(text("SELECT 1"))
                return True
            except SQLAlchemyError as e:
                log_.warning("checkpointer lost its lock connection: %s", type(e).__name__)
                self._drop(invalidate=True)
                return False
        try:
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except SQLAlchemyError:
            return False
        try:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                    {"k": PG_LOCK_KEY}).scalar())
        except SQLAlchemyError:
            conn.invalidate()
            conn.close()
            return False
        if not got:
            conn.close()
            return False
        self._conn = conn
        self._on_change(True)
        return True

    def _drop(self, invalidate: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(SQLAlchemyError):
            if invalidate:
                conn.invalidate()
            else:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
            conn.close()
        self._on_change(False)

    def release(self) -> None:
        self._drop(invalidate=False)


def leadership_for(engine: Engine, url: str, retry_s: float,
                   record: OnChange) -> Leadership | None:
    """The leadership that fits the database; None where one process is all there can be
    (an in-memory SQLite database). ``record`` hears of every change, which is logged."""

    def on_change(leading: bool) -> None:
        record(leading)
        log_.info("checkpointer leading" if leading else "checkpointer stood down",
                  extra={"leading": leading})

    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        return PostgresLeadership(engine, retry_s, on_change)
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return FileLeadership(Path(database + LOCK_SUFFIX), retry_s, on_change)
