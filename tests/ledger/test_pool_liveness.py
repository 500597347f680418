"""Pooled PostgreSQL connections: checked when they sat idle, not on every checkout."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from ledger import db as ledger_db
from ledger.db import make_engine

pytestmark = pytest.mark.postgres


def _pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(pg_url: str, pid: int) -> None:
    """End a backend as a restart or an operator would, and wait until it has exited
    (``pg_terminate_backend`` only signals it)."""
    with psycopg.connect(pg_url.replace("postgresql+psycopg", "postgresql"),
                         autocommit=True) as other:
        assert other.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        deadline = time.monotonic() + 30
        while other.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                            (pid,)).fetchone() != (0,):
            assert time.monotonic() < deadline, "the backend did not exit"
            time.sleep(0.01)


def _pings(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    seen: list[Any] = []
    real = engine.dialect.do_ping

    def counted(conn: Any) -> bool:
        seen.append(conn)
        return real(conn)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return seen


def test_an_idle_connection_found_dead_is_replaced_unseen(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection killed while it sat in the pool (a server restart, an idle timeout)
    is checked when handed out again and replaced: the caller gets a live one."""
    monkeypatch.setattr(ledger_db, "PING_AFTER_IDLE_S", 0.0)  # every return counts as idle
    engine = make_engine(pg_url, pool_size=1, max_overflow=0)
    try:
        pings = _pings(engine, monkeypatch)
        first = _pid(engine)
        _terminate(pg_url, first)
        assert _pid(engine) != first  # no error: the dead connection never reached us
        assert pings
    finally:
        engine.dispose()


def test_a_live_connection_used_a_moment_ago_costs_no_round_trip(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ping for a connection just returned whose socket is quiet; one the server has
    since closed shows it on its socket and is replaced unseen, however recent."""
    monkeypatch.setattr(ledger_db, "PING_AFTER_IDLE_S", 3600.0)
    engine = make_engine(pg_url, pool_size=1, max_overflow=0)
    try:
        pings = _pings(engine, monkeypatch)
        first = _pid(engine)
        assert _pid(engine) == first and _pid(engine) == first
        assert pings == []
        _terminate(pg_url, first)
        assert _pid(engine) != first
        assert len(pings) == 1
    finally:
        engine.dispose()


def test_a_connection_that_dies_in_use_fails_its_statement_then_the_pool_recovers(
        pg_url: str) -> None:
    """Nothing checks a connection between two statements of one use: the statement after
    the server ended it fails as a disconnection (a 503 to a request) and the next use
    gets a new connection."""
    engine = make_engine(pg_url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            first = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
            _terminate(pg_url, first)
            with pytest.raises(OperationalError) as failed:
                conn.execute(text("SELECT 1"))
        assert failed.value.connection_invalidated
        assert _pid(engine) != first
    finally:
        engine.dispose()


def test_an_explicit_pre_ping_keeps_sqlalchemys_own(pg_url: str) -> None:
    """A caller that asks for ``pool_pre_ping`` gets it, and no second check."""
    engine = make_engine(pg_url, pool_pre_ping=True, pool_size=1, max_overflow=0)
    try:
        first = _pid(engine)
        _terminate(pg_url, first)
        assert _pid(engine) != first
    finally:
        engine.dispose()
