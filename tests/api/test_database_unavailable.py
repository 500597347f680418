"""A database that cannot be reached is a 503 with Retry-After, and the app recovers."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask
from psycopg import errors
from sqlalchemy import select, text
from sqlalchemy.exc import (
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from authz.models import Party
from sandbox import create_app, db
from sandbox.bootstrap import create_first_admin
from sandbox.http_errors import database_unavailable
from sandbox.migrate import upgrade
from tests import pgcluster

# Well-formed, so that authentication goes to the database to look it up.
TOKEN = {"Authorization": "Bearer pty_0123456789abcdef.secret"}


def _app(url: str, tmp_path: Path) -> Flask:
    return create_app({"TESTING": True, "DATABASE_URL": url,
                       "LOG_KEY_FILE": str(tmp_path / "log.key"), "START_CHECKPOINTER": False,
                       "SCHEMA_CHECK_WAIT_S": 0.0, "AGENT_POLL_WAIT_S": 0.0})


def _assert_unavailable(r: Any) -> None:
    assert r.status_code == 503, (r.status_code, r.get_data(as_text=True))
    assert r.json["error"] == "unavailable" and r.json["message"]
    assert r.headers["Retry-After"] == "5"


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[str]:
    """A cluster of this module's own: its server is stopped and started again."""
    if not pgcluster.available():
        pytest.fail("PostgreSQL 15 binaries not found; run `make setup`")
    with pgcluster.cluster() as url:
        upgrade(url)
        yield url


@pytest.mark.postgres
def test_postgres_outage_is_503_and_the_app_recovers(own_cluster: str, tmp_path: Path) -> None:
    app = _app(own_cluster, tmp_path)
    try:
        client = app.test_client()
        admin = {"Authorization": f"Bearer {create_first_admin(app, 'operator').token}"}
        assert client.get("/api/v1/me", headers=admin).status_code == 200  # pooled now
        with pgcluster.stopped(own_cluster):
            _assert_unavailable(client.get("/api/v1/me", headers=admin))
            _assert_unavailable(client.post("/api/v1/parties", headers=admin,
                                            json={"name": "lost?", "role": "requester"}))
            _assert_unavailable(client.get("/api/v1/datasets", headers=admin))
        # Back: the pool's dead connections are replaced (checked on checkout), nothing was written.
        assert client.get("/api/v1/me", headers=admin).status_code == 200
        r = client.post("/api/v1/parties", headers=admin,
                        json={"name": "after", "role": "requester"})
        assert r.status_code == 201, r.json
        with app.app_context(), db.services().sessions() as s:
            assert s.scalars(select(Party.name)).all().count("lost?") == 0
        # A restart no request saw: the first request after it must not meet a pooled
        # connection to the old server.
        with pgcluster.stopped(own_cluster):
            pass
        assert client.get("/api/v1/me", headers=admin).status_code == 200
        assert client.get("/api/v1/datasets", headers=admin).status_code == 200
    finally:
        db.dispose(app)


def test_closed_port_is_503(tmp_path: Path) -> None:
    # Nothing listens on port 1 of the loopback address: the connection is refused.
    app = _app("postgresql+psycopg://postgres@127.0.0.1:1/sandbox?connect_timeout=5",
               tmp_path)
    try:
        _assert_unavailable(app.test_client().get("/api/v1/me", headers=TOKEN))
    finally:
        db.dispose(app)


def test_sqlite_file_that_cannot_be_opened_is_503(tmp_path: Path) -> None:
    app = _app(f"sqlite:///{tmp_path / 'missing-dir' / 'sandbox.db'}", tmp_path)
    try:
        _assert_unavailable(app.test_client().get("/api/v1/me", headers=TOKEN))
    finally:
        db.dispose(app)


@pytest.mark.parametrize(("error", "unavailable"), [
    (PoolTimeoutError("pool exhausted"), True),
    # psycopg: refused, closed or broken connections carry no SQLSTATE.
    (OperationalError("select 1", {}, psycopg.OperationalError("connection failed")), True),
    (InterfaceError("select 1", {}, psycopg.InterfaceError("the connection is closed")), True),
    (OperationalError("select 1", {}, errors.lookup("57P01")("shutting down")), True),
    (OperationalError("select 1", {}, errors.lookup("08006")("connection failure")), True),
    (OperationalError("select 1", {}, errors.lookup("53300")("too many connections")), True),
    (ProgrammingError("selec 1", {}, errors.lookup("42601")("syntax error")), False),
    (IntegrityError("insert", {}, errors.lookup("23505")("duplicate key")), False),
    (DataError("insert", {}, errors.lookup("22021")("invalid byte sequence")), False),
    (OperationalError("selec 1", {}, sqlite3.OperationalError("syntax error")), False),
    # Unwrapped, as the ledger's raw cursor raises them.
    (psycopg.OperationalError("consuming input failed: server closed the connection"), True),
    (errors.lookup("57P01")("terminating connection due to administrator command"), True),
    (errors.lookup("23505")("duplicate key"), False),
    (sqlite3.OperationalError("syntax error"), False),
    (ValueError("not a database error"), False),
])
def test_which_database_errors_mean_unavailable(error: Exception, unavailable: bool) -> None:
    assert database_unavailable(error) is unavailable


def test_sqlite_busy_is_unavailable() -> None:
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = 5  # SQLITE_BUSY, as the sqlite3 module sets it
    assert database_unavailable(OperationalError("select 1", {}, busy))
    busy.sqlite_errorcode = 1  # SQLITE_ERROR: a wrong statement, not an outage
    assert not database_unavailable(OperationalError("select 1", {}, busy))


def test_other_database_errors_stay_500(tmp_path: Path) -> None:
    app = _app(f"sqlite:///{tmp_path / 'sandbox.db'}", tmp_path)  # not migrated: no tables
    try:
        r = app.test_client().get("/api/v1/me", headers=TOKEN)
        assert r.status_code == 500 and r.json == {"error": "internal",
                                                   "message": "internal error"}
        assert "Retry-After" not in r.headers
    finally:
        db.dispose(app)


def test_pool_timeout_is_503(tmp_path: Path) -> None:
    app = _app(f"sqlite:///{tmp_path / 'sandbox.db'}", tmp_path)

    def exhausted() -> str:
        raise PoolTimeoutError("QueuePool limit reached")

    app.add_url_rule("/exhausted", view_func=exhausted)
    try:
        _assert_unavailable(app.test_client().get("/exhausted"))
    finally:
        db.dispose(app)


def test_database_errors_are_logged_without_their_parameters(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = _app(f"sqlite:///{tmp_path / 'sandbox.db'}", tmp_path)  # not migrated: no tables
    try:
        with caplog.at_level(logging.WARNING):
            assert app.test_client().get("/api/v1/me", headers=TOKEN).status_code == 500
        assert "no such table" in caplog.text
        assert "pty_0123456789abcdef" not in caplog.text
    finally:
        db.dispose(app)

def _terminate_own_backend(url: str) -> None:
    """Have the server end the request's own connection, as a restart or an operator would."""
    pid = db.session().execute(text("SELECT pg_backend_pid()")).scalar_one()
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"),
                         autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # It only signals the backend: wait until it has exited, as after a restart.
        deadline = time.monotonic() + 30
        while other.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                            (pid,)).fetchone() != (0,):
            assert time.monotonic() < deadline, "the backend did not exit"
            time.sleep(0.01)


@pytest.mark.postgres
def test_a_connection_lost_before_the_request_ends_keeps_its_answer(
        own_cluster: str, tmp_path: Path) -> None:
    """The server closes the request's connection after the view has answered (a restart,
    an operator's kill): the rollback at the end of the request fails. That answer stands,
    the broken connection is discarded, and the next request is served."""
    app = _app(own_cluster, tmp_path)

    def answered_then_cut() -> str:
        _terminate_own_backend(own_cluster)
        return "answered"

    app.add_url_rule("/test-cut", view_func=answered_then_cut)
    client = app.test_client()
    for _ in range(2):  # the pool may hand out the broken connection only once
        r = client.get("/test-cut")
        assert r.status_code == 200 and r.get_data(as_text=True) == "answered"
    assert client.get("/api/v1/me", headers=TOKEN).status_code == 401
    db.dispose(app)


@pytest.mark.postgres
def test_a_connection_lost_during_a_ledger_append_is_503(own_cluster: str,
                                                         tmp_path: Path) -> None:
    """The ledger appends through the connection's raw cursor, so the driver's own error
    reaches the app unwrapped (found by bench.api_load's chaos phase: a 500 on POST /jobs
    while PostgreSQL restarted). It is an outage like any other: 503 with Retry-After."""
    app = _app(own_cluster, tmp_path)

    def cut_then_record() -> str:
        _terminate_own_backend(own_cluster)
        db.ctx().record("test.cut", "system", {})
        return "recorded?"

    app.add_url_rule("/test-cut-append", view_func=cut_then_record, methods=["POST"])
    try:
        _assert_unavailable(app.test_client().post("/test-cut-append"))
    finally:
        db.dispose(app)
