"""Witness-gated release: a result leaves only once its run entry is witnessed.

With ``WITNESS_QUORUM = k > 0`` the controller serves a released output, a receipt or a
joint aggregate only when a checkpoint covering the run's ledger entry carries ``k``
cosignatures from the configured witnesses (regulators' witnesses, C2SP tlog-witness).
An operator who wanted to show that result while presenting a different log to the
witnesses would then have to fork the log in front of them, which they detect. When the
quorum cannot be reached the caller gets 503 and may retry: the result is not lost.
"""

from __future__ import annotations

from typing import Any

from flask import current_app

from compute.errors import SandboxError
from ledger import api_payloads as payloads
from ledger.checkpointer import cosign_latest
from ledger.errors import LedgerError, VerificationError
from ledger.receipt import verify_receipt
from ledger.witness import WitnessConfig
from sandbox import db


class AwaitingWitnesses(SandboxError):
    http_status = 503
    code = "awaiting_witnesses"


def witnesses() -> list[WitnessConfig]:
    return [WitnessConfig(w["url"], w["vkey"]) for w in current_app.config["WITNESSES"]]


def quorum() -> int:
    return int(current_app.config["WITNESS_QUORUM"])


def require_witnessed(index: int) -> None:
    """Raise AwaitingWitnesses unless entry ``index`` may be released (no-op when k=0)."""
    if quorum() > 0:
        witnessed_receipt(index)


def witnessed_receipt(index: int) -> dict[str, Any]:
    """A receipt for entry ``index`` whose checkpoint satisfies the witness quorum."""
    k = quorum()
    ws = witnesses()
    vkey = db.services().signer.vkey()
    if k == 0:
        return payloads.receipt_payload(db.log(), db.session(), index)
    for attempt in range(2):
        try:
            receipt = payloads.receipt_payload(db.log(), db.session(), index)
            verify_receipt(receipt, vkey, [w.vkey for w in ws], k)
            return receipt
        except (VerificationError, LedgerError):
            if attempt:
                break
        # End this request's transaction first: it holds SQLite's write lock, which the
        # signing below needs, and afterwards it must see the checkpoint just stored.
        db.session().rollback()
        try:
            cosign_latest(db.log(), db.services().sessions, ws, k)
        except LedgerError as e:
            raise AwaitingWitnesses(f"fewer than {k} witnesses cosigned: {e}") from None
    raise AwaitingWitnesses(f"no checkpoint covering entry {index} has {k} cosignatures yet")
