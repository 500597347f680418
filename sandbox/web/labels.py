"""Translated names of states and decisions, looked up one at a time (a page may show
hundreds; translating the whole table for each would dominate its render time)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

LABELS = {
    "queued": _l("queued"), "dispatched": _l("dispatched"), "running": _l("running"),
    "checking": _l("checking"), "released": _l("released"), "blocked": _l("blocked"),
    "failed": _l("failed"), "cancelled": _l("cancelled"), "pending": _l("pending"),
    "approved": _l("approved"), "denied": _l("denied"), "active": _l("active"),
    "revoked": _l("revoked"), "rejected": _l("rejected"), "withheld": _l("withheld"),
    "awaiting_review": _l("awaiting review"), "awaiting_approval": _l("awaiting approval"),
    "pending_review": _l("pending review"), "returned": _l("returned for changes"),
}


def state_label(state: str) -> str:
    found = LABELS.get(str(state))
    return str(found) if found is not None else str(state)
