"""Regulator endpoints for the transparency log; JSON shapes are ``ledger.api_payloads``'."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, request

from compute.errors import InvalidInput
from ledger import api_payloads as payloads
from sandbox import auth, db
from sandbox.api.args import DIGITS

bp = Blueprint("ledger", __name__, url_prefix="/api/v1/ledger")
AUDITORS = ("regulator", "admin")


def _int_arg(name: str, required: bool = True) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        if required:
            raise InvalidInput(name, "required")
        return None
    if not DIGITS.fullmatch(raw):
        raise InvalidInput(name, "must be a non-negative integer")
    return int(raw)


@bp.get("/public-key")
def public_key() -> Response:
    # Public by design: anyone holding a receipt must be able to check it.
    return Response(payloads.public_key_text(db.log()), mimetype="text/plain")


@bp.get("/checkpoint")
@auth.roles("regulator", "admin", "provider", "requester")
def checkpoint() -> Response:
    return Response(payloads.checkpoint_text(db.log(), db.session()), mimetype="text/plain")


@bp.get("/entries")
@auth.roles(*AUDITORS, plain=True)
def entries() -> dict[str, Any]:
    start = _int_arg("start")
    end = _int_arg("end")
    assert start is not None and end is not None
    # Kept pages per app (payloads.PageCache): the range is checked against the tree
    # size read now, after the caller was authenticated and authorized as always.
    pages = current_app.extensions.setdefault("sandbox_ledger_pages", payloads.PageCache())
    return payloads.entries_page(db.log(), db.session(), start, end, pages)


@bp.get("/proof/inclusion")
@auth.roles(*AUDITORS)
def inclusion() -> dict[str, Any]:
    size = _int_arg("size")
    assert size is not None
    return payloads.inclusion_payload(db.log(), db.session(), size, _int_arg("index", False),
                                      request.args.get("hash"))


@bp.get("/proof/consistency")
@auth.roles(*AUDITORS)
def consistency() -> dict[str, Any]:
    old, new = _int_arg("old"), _int_arg("new")
    assert old is not None and new is not None
    return payloads.consistency_payload(db.log(), db.session(), old, new)


@bp.get("/receipt/<int:index>")
@auth.roles(*AUDITORS)
def receipt(index: int) -> dict[str, Any]:
    return payloads.receipt_payload(db.log(), db.session(), index)
