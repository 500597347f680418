"""Private set intersection jobs: submit, then poll (the result is the released counts)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from authz import joint, psi_jobs
from sandbox import auth, db

bp = Blueprint("psi", __name__, url_prefix="/api/v1/psi-jobs")


@bp.post("")
@auth.roles("requester")
def submit() -> tuple[dict[str, Any], int]:
    j = psi_jobs.submit(db.ctx(), auth.party(), auth.body())
    db.commit()
    db.work_signal().notify()
    return joint.to_json(db.ctx(), j), 201
