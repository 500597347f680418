"""Every error leaves as JSON: ``{"error": code, "message": ..., "field"?, "rule"?}``."""

from __future__ import annotations

import sqlite3

import psycopg
from flask import Flask, Response, jsonify
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException

from compute.errors import SandboxError
from ledger.errors import (
    CheckpointUnavailableError,
    EntryNotFoundError,
    LedgerError,
    ProofRequestError,
)


def _json(status: int, body: dict[str, object]) -> tuple[Response, int]:
    return jsonify(body), status


# PostgreSQL SQLSTATE classes meaning the server cannot serve now, not that the statement
# is wrong: 08 connection exception, 53 insufficient resources, 57 operator intervention
# (shutdown, restart, cancel).
_PG_UNAVAILABLE_CLASSES = ("08", "53", "57")
# SQLite primary result codes for a database file that is busy, locked or cannot be opened.
_SQLITE_UNAVAILABLE_CODES = (5, 6, 14)  # SQLITE_BUSY, SQLITE_LOCKED, SQLITE_CANTOPEN


#: The drivers' errors that may mean an outage (PEP 249 classes), raised unwrapped.
DRIVER_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError,
                      sqlite3.OperationalError)


def database_unavailable(e: BaseException) -> bool:
    """Whether ``e`` means the database cannot be reached now (retrying may succeed).

    Everything else a database raises (constraint, data, programming errors) stays a 500:
    telling a caller to retry a request that can never succeed would hide the fault.
    """
    if isinstance(e, PoolTimeoutError | DisconnectionError):
        return True
    orig: BaseException | None
    if isinstance(e, DBAPIError):
        if e.connection_invalidated:
            return True
        if not isinstance(e, OperationalError | InterfaceError):
            return False
        orig = e.orig
    elif isinstance(e, DRIVER_UNAVAILABLE):
        # The driver's own error, not wrapped by SQLAlchemy: the ledger appends through
        # the connection's raw cursor (ledger/log.py), so a restart mid-append lands here.
        orig = e
    else:
        return False
    if hasattr(orig, "sqlstate"):
        # psycopg: no SQLSTATE when the client itself failed (refused, closed, broken).
        state = getattr(orig, "sqlstate", None)
        return state is None or str(state)[:2] in _PG_UNAVAILABLE_CLASSES
    code = getattr(orig, "sqlite_errorcode", None)
    return isinstance(code, int) and (code & 0xFF) in _SQLITE_UNAVAILABLE_CODES


def register(app: Flask) -> None:
    @app.errorhandler(SandboxError)
    def _sandbox(e: SandboxError) -> tuple[Response, int]:
        return _json(e.http_status, e.to_json())

    @app.errorhandler(LedgerError)
    def _ledger(e: LedgerError) -> tuple[Response, int]:
        if isinstance(e, EntryNotFoundError | CheckpointUnavailableError):
            return _json(404, {"error": "not_found", "message": str(e)})
        if isinstance(e, ProofRequestError):
            return _json(400, {"error": "invalid_input", "message": str(e)})
        return _json(503, {"error": "ledger_unavailable", "message": str(e)})

    @app.errorhandler(SQLAlchemyError)
    @app.errorhandler(psycopg.Error)
    @app.errorhandler(sqlite3.Error)
    def _database(e: Exception) -> tuple[Response, int]:
        if not database_unavailable(e):
            return _unexpected(e)
        # The request's transaction did not commit (or its outcome is unknown to the
        # database's client): the caller may retry once the database is back.
        # Class names only: a driver's message may quote the statement's parameters.
        app.logger.warning("database unavailable: %s (%s)", type(e).__name__,
                           type(getattr(e, "orig", None)).__name__)
        resp = jsonify({"error": "unavailable",
                        "message": "the database cannot be reached; retry later"})
        resp.headers["Retry-After"] = str(int(app.config["DATABASE_RETRY_AFTER_S"]))
        return resp, 503

    @app.errorhandler(Exception)
    def _unexpected(e: Exception) -> tuple[Response, int]:
        # Never an HTML page or a traceback to the caller; the details go to the log.
        app.logger.exception("unhandled error")
        return _json(500, {"error": "internal", "message": "internal error"})

    @app.errorhandler(HTTPException)
    def _http(e: HTTPException) -> tuple[Response, int]:
        code = (e.name or "error").lower().replace(" ", "_")
        return _json(e.code or 500, {"error": code, "message": e.description or ""})
