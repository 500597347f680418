"""Safe requests read through a read-only engine: on SQLite beside a writer instead of
queueing for its lock, on PostgreSQL without a transaction's round trips."""

from __future__ import annotations

import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from ledger.db import make_engine
from sandbox import create_app, db
from sandbox.bootstrap import create_first_admin
from sandbox.migrate import upgrade
from tests.conftest import Actor


@pytest.fixture
def sqlite_app(sqlite_template: Path, tmp_path: Path) -> Iterator[Flask]:
    """A SQLite app: its read-only engine runs beside the writer in WAL mode."""
    shutil.copy(sqlite_template, tmp_path / "sandbox.db")
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'sandbox.db'}",
                      "LOG_KEY_FILE": str(tmp_path / "log.key"), "START_CHECKPOINTER": False})
    yield app
    db.dispose(app)


def test_a_get_is_served_while_a_writer_holds_the_lock(sqlite_app: Flask) -> None:
    issued = create_first_admin(sqlite_app, "operator")
    admin = Actor(sqlite_app.test_client(), issued.id, issued.token, "admin")
    writer = sqlite_app.extensions["sandbox"].sessions()
    writer.execute(text("UPDATE parties SET name = name"))  # BEGIN IMMEDIATE: write lock held
    try:
        r = admin.get("/me")
        assert r.status_code == 200 and r.json["id"] == admin.id
    finally:
        writer.rollback()
        writer.close()


def test_the_read_engine_refuses_writes(sqlite_app: Flask) -> None:
    with sqlite_app.test_request_context("/api/v1/me", method="GET"):
        with pytest.raises(OperationalError):
            db.session().execute(text("UPDATE parties SET name = name"))
        db.session().rollback()


def test_a_new_sqlite_database_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """It holds the controller's whole state: scripts, released outputs, token digests."""
    path = tmp_path / "fresh.db"
    upgrade(f"sqlite:///{path}")
    make_engine(f"sqlite:///{path}").dispose()
    for f in tmp_path.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, (f.name, oct(f.stat().st_mode))


@pytest.mark.postgres
def test_postgresql_reads_go_through_a_read_only_autocommit_engine(
        pg_url: str, pg_template: str, tmp_path: Path) -> None:
    """A safe request reads without BEGIN and ROLLBACK round trips, and cannot write."""
    from psycopg import pq
    from sqlalchemy.exc import InternalError

    from tests.conftest import _fresh_pg

    app = create_app({"TESTING": True, "DATABASE_URL": _fresh_pg(pg_url, pg_template),
                      "LOG_KEY_FILE": str(tmp_path / "log.key"), "START_CHECKPOINTER": False})
    try:
        with app.test_request_context("/api/v1/me", method="GET"):
            s = db.session()
            assert s.execute(text("SELECT count(*) FROM parties")).scalar_one() >= 0
            raw = s.connection().connection.dbapi_connection
            assert raw is not None and raw.autocommit
            # No transaction left open after the statement: nothing to roll back.
            assert raw.pgconn.transaction_status == pq.TransactionStatus.IDLE
            with pytest.raises(InternalError, match="read-only transaction"):
                s.execute(text("UPDATE parties SET name = name"))
            s.rollback()
        with app.test_request_context("/api/v1/parties", method="POST"):
            raw = db.session().connection().connection.dbapi_connection
            assert raw is not None and not raw.autocommit
            db.session().rollback()
    finally:
        db.dispose(app)
