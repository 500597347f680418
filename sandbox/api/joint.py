"""Joint statistics: submit with a public context, poll, fetch the encrypted aggregate."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, current_app

from authz import joint
from authz.states import JointJobState
from sandbox import auth, db, release
from sandbox.waiting import wait_seconds

bp = Blueprint("joint", __name__, url_prefix="/api/v1/joint-jobs")
#: The longest a requester's ``GET ?wait=`` is held (a request thread each).
MAX_WAIT_S = 10.0
#: How often a held ``GET ?wait=`` looks at the job's state when no commit in this process
#: woke it (the last part's report may be committed by another controller process). Short,
#: since the requester waits on it and a probe reads one column; it lasts only while the job
#: runs, one poll per waiting requester.
PROBE_S = 0.05


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
    """``?wait=<s>`` (at most MAX_WAIT_S): a long poll while the job is running, answered
    as soon as its last part is committed in this process (else at the next probe, every
    PROBE_S)."""
    deadline = time.monotonic() + wait_seconds(MAX_WAIT_S)
    signal = db.joint_signal()
    seen = signal.generation()  # before the read: a commit after it is not missed
    j = joint.get_for_requester(db.ctx(), auth.party(), joint_id)
    if j.state == JointJobState.RUNNING:
        running = True
        while running and (remaining := deadline - time.monotonic()) > 0:
            signal.wait(min(PROBE_S, remaining), seen)
            seen = signal.generation()
            db.session().rollback()  # the next probe reads a fresh snapshot
            running = joint.state_of(db.ctx(), joint_id) == JointJobState.RUNNING
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
