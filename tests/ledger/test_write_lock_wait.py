"""Waiting for SQLite's write lock (ledger.db: BEGIN IMMEDIATE retried at a short, steady
interval instead of SQLite's growing sleeps)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from ledger.db import make_engine


def test_a_waiting_writer_gets_the_lock_once_it_is_free_and_keeps_its_busy_timeout(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    holder, waiter = make_engine(url), make_engine(url)
    try:
        with holder.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
        held, done = threading.Event(), threading.Event()

        def wait_then_write() -> None:
            held.wait()
            with waiter.begin() as conn:  # queued behind the holder's transaction
                conn.execute(text("INSERT INTO t VALUES (2)"))
                busy = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
                assert busy == 30000  # the other waits keep SQLite's handler and timeout
            done.set()

        t = threading.Thread(target=wait_then_write)
        t.start()
        with holder.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))
            held.set()
            assert not done.wait(0.05)  # the lock is held: the waiter has not written
        t.join(30)
        assert done.is_set()
        with holder.connect() as conn:
            assert [r[0] for r in conn.execute(text("SELECT x FROM t ORDER BY x"))] == [1, 2]
    finally:
        holder.dispose()
        waiter.dispose()


def test_a_lock_held_past_the_busy_timeout_fails_as_before(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    holder, impatient = make_engine(url), make_engine(url)
    event.listen(impatient, "connect", lambda c, _: c.execute("PRAGMA busy_timeout=50"))
    try:
        with holder.begin() as conn:
            conn.execute(text("SELECT 1"))
            with pytest.raises(OperationalError, match="locked"), impatient.begin() as other:
                other.execute(text("SELECT 1"))
    finally:
        holder.dispose()
        impatient.dispose()
