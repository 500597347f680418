"""Database plumbing shared by every package that writes state.

Ledger appends must commit in the same transaction as the state change they record
(nothing half-written), so the ledger and the authorization catalog share one engine.
This module lives in ``ledger`` because the ledger is the lowest layer: ``authz`` may
import it, never the reverse.
"""

from __future__ import annotations

import contextlib
import os
import select
import sqlite3
import time
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc, make_url
from sqlalchemy.orm import Session, sessionmaker


def _create_private(path: str | None) -> None:
    """Create a new SQLite file readable by its owner only (0600): it holds the controller's
    whole state. SQLite gives its -wal and -shm files the database file's mode."""
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    # An existing database keeps the mode its operator gave it; a path that cannot be
    # created is SQLite's to report, when the engine first connects.
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


#: A pooled PostgreSQL connection idle longer than this is checked with a round trip
#: before it is handed out again (see :func:`_check_on_checkout`).
PING_AFTER_IDLE_S = 5.0


def _server_spoke(dbapi_conn: Any) -> bool:
    """Whether an idle connection's socket has something to read (or is closed).

    An idle connection in the pool is owed nothing by the server: bytes waiting, an end of
    file or an error on its socket mean the server ended it (a restart, a terminated
    backend, an idle timeout) or has something to say that a round trip will show. One
    ``poll`` with no wait, no traffic: go-sql-driver/mysql checks pooled connections the
    same way (its ``connCheck``). A connection whose socket cannot be looked at counts as
    suspect.
    """
    try:
        fd = dbapi_conn.pgconn.socket
    except Exception:  # not psycopg, or already closed: check it the slow way
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


def _check_on_checkout(engine: Engine, idle_s: float) -> None:
    """Check a pooled connection is alive before handing it out, without a round trip
    when nothing suggests otherwise.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: one more round trip for every
    request, a tenth of a short read's cost. Instead a connection is pinged (the dialect's
    own ping) only when its socket shows the server spoke or hung up
    (:func:`_server_spoke`), or when it sat idle longer than ``idle_s``; a dead one is
    replaced before anyone sees it. A connection that dies while in use fails its
    statement (503, retry later), as it did with a ping, and SQLAlchemy then invalidates
    every connection the pool held from before.
    """

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_conn: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _handed_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get("returned_at")
        if returned is None:
            return  # just connected
        if time.monotonic() - returned < idle_s and not _server_spoke(dbapi_conn):
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as e:
            if engine.dialect.is_disconnect(e, dbapi_conn, None):
                # The pool discards this connection and tries another (or a new one).
                raise exc.DisconnectionError("a pooled connection was found closed") from e
            raise


#: SQLite's busy timeout (ms): how long a statement waits for a lock another connection
#: holds before failing.
BUSY_TIMEOUT_MS = 30000
#: How often ``BEGIN IMMEDIATE`` is tried again while another transaction holds the write
#: lock: from the first value, growing to the last.
BEGIN_RETRY_S = (0.0005, 0.002)


def _take_write_lock(dbapi_conn: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE``, tried again every millisecond or two while the write lock is
    held, for up to the connection's busy timeout; on any other error, or after it, it
    returns without a transaction and the caller's own ``BEGIN IMMEDIATE`` waits or fails
    as before.

    SQLite's own busy handler sleeps longer and longer between tries (1, 2, 5, 10, 15, 20,
    25, 25, 25, 50, 50, 100 ms), so a transaction that has waited a while keeps missing the
    moments the lock is free while newer ones take it: with a few writers at once (a joint
    job's parts claimed, started and reported together) one of them waited 75-120 ms, and
    longer under load, for a lock free most of that time.
    """
    timeout_ms = int(dbapi_conn.execute("PRAGMA busy_timeout").fetchone()[0])
    deadline = time.monotonic() + timeout_ms / 1000
    pause = BEGIN_RETRY_S[0]
    dbapi_conn.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                dbapi_conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as e:
                if e.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    return  # the caller's BEGIN IMMEDIATE raises it as SQLAlchemy's error
            time.sleep(pause)
            pause = min(pause * 1.5, BEGIN_RETRY_S[1])
    finally:
        # Every other wait (a COMMIT behind a checkpoint, say) keeps SQLite's handler.
        dbapi_conn.execute(f"PRAGMA busy_timeout={timeout_ms}")


def make_engine(url: str, *, read_only: bool = False, **kwargs: Any) -> Engine:
    """Create an engine with the settings the ledger's guarantees rely on.

    SQLite: WAL so readers never block the writer; ``BEGIN IMMEDIATE`` so every
    transaction takes the write lock up front. With SQLite's default deferred
    transactions two writers can both read the same ledger head and only one can then
    commit (the other fails with SQLITE_BUSY_SNAPSHOT); taking the lock first turns
    that race into a wait, which is what serialized appends need.

    ``read_only`` (SQLite): for requests that only read. Deferred transactions, which in
    WAL mode run beside the writer instead of queueing for its lock, and ``query_only`` so
    that a write attempted through this engine fails instead of racing the writers.

    ``read_only`` (PostgreSQL): autocommit, and every statement in a read-only transaction
    of its own (``default_transaction_read_only``), so a write attempted through this
    engine fails. A request that only reads then costs no ``BEGIN`` and no ``ROLLBACK``
    round trip. What it sees does not change: under READ COMMITTED, PostgreSQL's level
    and ours, every statement takes its own snapshot inside a transaction too.
    """
    # An error's text is logged: it names the statement, never the values bound to it.
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        _create_private(make_url(url).database)
        kwargs.setdefault("connect_args", {})
        kwargs["connect_args"].setdefault("timeout", 30)
        kwargs["connect_args"].setdefault("check_same_thread", False)
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # pysqlite's own transaction handling is disabled so that BEGIN below is ours.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if read_only:
                cur.execute("PRAGMA query_only=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            if read_only:
                conn.exec_driver_sql("BEGIN")
                return
            _take_write_lock(conn.connection.dbapi_connection)
            if not conn.connection.dbapi_connection.in_transaction:
                conn.exec_driver_sql("BEGIN IMMEDIATE")  # SQLite's own wait, or its error

        @event.listens_for(engine, "checkin")
        def _sqlite_end_failed_commit(dbapi_conn: Any, _record: Any) -> None:
            # A COMMIT that failed (deferred foreign key, full disk, I/O error) leaves SQLite
            # inside the transaction, holding the write lock, while SQLAlchemy counts it as
            # ended and skips its own reset: end it here, before the pool hands it out.
            if dbapi_conn.in_transaction:
                dbapi_conn.execute("ROLLBACK")

        return engine
    if read_only:
        kwargs["isolation_level"] = "AUTOCOMMIT"
        kwargs.setdefault("connect_args", {})
        options = kwargs["connect_args"].get("options", "")
        kwargs["connect_args"]["options"] = \
            f"{options} -c default_transaction_read_only=on".strip()
    engine = create_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _check_on_checkout(engine, PING_AFTER_IDLE_S)
    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)
