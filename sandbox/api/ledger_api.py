"""Regulator endpoints for the transparency log (shapes from ``ledger.api_payloads``)."""

from __future__ import annotations

from flask import Blueprint, Response

from sandbox import auth, db

bp = Blueprint("ledger", __name__, url_prefix="/api/v1/ledger")


@bp.get("/public-key")
def public_key() -> Response:
    # The verifier key is public by design: anyone may check a receipt they were given.
    return Response(db.ext()["signer"].vkey() + "\n", mimetype="text/plain")


@bp.get("/checkpoint")
@auth.roles("regulator", "admin", "provider", "requester")
def checkpoint() -> Response:
    note = db.ext()["checkpointer"].sign_now()
    return Response(note, mimetype="text/plain")
