"""Every error leaves as JSON: ``{"error": code, "message": ..., "field"?, "rule"?}``."""

from __future__ import annotations

from flask import Flask, Response, jsonify
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

    @app.errorhandler(Exception)
    def _unexpected(e: Exception) -> tuple[Response, int]:
        # Never an HTML page or a traceback to the caller; the details go to the log.
        app.logger.exception("unhandled error")
        return _json(500, {"error": "internal", "message": "internal error"})

    @app.errorhandler(HTTPException)
    def _http(e: HTTPException) -> tuple[Response, int]:
        code = (e.name or "error").lower().replace(" ", "_")
        return _json(e.code or 500, {"error": code, "message": e.description or ""})
