"""Joint statistics: submit with a public context, poll, fetch the encrypted aggregate."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app

from authz import joint
from authz.states import JointJobState
from sandbox import auth, db, release

bp = Blueprint("joint", __name__, url_prefix="/api/v1/joint-jobs")


@bp.post("")
@auth.roles("requester")
def submit() -> tuple[dict[str, Any], int]:
    j = joint.submit(db.ctx(), auth.party(), auth.body(),
                     int(current_app.config["JOINT_MIN_PROVIDERS"]))
    db.commit()
    db.work_signal().notify()
    return joint.to_json(db.ctx(), j), 201


@bp.get("/<joint_id>")
@auth.roles("requester")
def get(joint_id: str) -> dict[str, Any]:
    j = joint.get_for_requester(db.ctx(), auth.party(), joint_id)
    out = joint.to_json(db.ctx(), j)
    if j.ledger_index is not None:
        try:
            release.require_witnessed(j.ledger_index)
        except release.AwaitingWitnesses as e:
            # The aggregate is withheld, not lost: the requester polls again.
            out["aggregate"], out["reason"] = None, str(e)
            out["state"] = JointJobState.AWAITING_WITNESSES
    return out
