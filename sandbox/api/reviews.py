"""Release review (the output checkers' queue and decisions, the requester's justification),
and code visible to providers (reading a job's script, approving each new script).

Rules live in :mod:`authz.review`; these views authorize, call it and commit.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from authz import review, script_approval
from authz.people import PersonRole
from sandbox import auth, db

bp = Blueprint("reviews", __name__, url_prefix="/api/v1")


@bp.get("/reviews")
@auth.roles("provider", need=PersonRole.OUTPUT_CHECKER)
def queue() -> dict[str, Any]:
    jobs = review.queue(db.ctx(), auth.party())
    return {"reviews": [{
        "job_id": j.id, "permit_id": j.permit_id, "requester_id": j.requester_id,
        "submitted_by": j.submitted_by,
        "waiting_since": j.finished_at.isoformat() if j.finished_at else None,
        "outputs_pending": sum(o.decision == "pending_review" for o in j.outputs),
    } for j in jobs]}


@bp.get("/reviews/<job_id>")
@auth.roles("provider", need=PersonRole.OUTPUT_CHECKER)
def material(job_id: str) -> dict[str, Any]:
    return review.material(db.ctx(), review.job_for_checker(db.ctx(), auth.party(), job_id))


@bp.post("/reviews/<job_id>/outputs/<name>")
@auth.roles("provider", need=PersonRole.OUTPUT_CHECKER)
def decide(job_id: str, name: str) -> dict[str, Any]:
    review.decide(db.ctx(), auth.party(), auth.person(), job_id, name, auth.body())
    db.commit()
    return review.material(db.ctx(), review.job_for_checker(db.ctx(), auth.party(), job_id))


@bp.post("/jobs/<job_id>/outputs/<name>/justification")
@auth.roles("requester")
def justify(job_id: str, name: str) -> dict[str, Any]:
    out = review.justify(db.ctx(), auth.party(), job_id, name, auth.body())
    db.commit()
    return {"name": out.name, "decision": out.decision, "justification": out.justification}


@bp.get("/jobs/<job_id>/script")
@auth.roles("requester", "provider")
def script(job_id: str) -> dict[str, Any]:
    """The full code of a job: its requester's, and its provider's to read before and after
    it runs (not only the digest)."""
    return script_approval.script_of(db.ctx(), auth.party(), job_id)


@bp.get("/script-approvals")
@auth.roles("provider", need=PersonRole.APPROVER)
def pending_scripts() -> dict[str, Any]:
    return {"jobs": [{"job_id": j.id, "permit_id": j.permit_id, "requester_id": j.requester_id,
                      "submitted_by": j.submitted_by, "script_sha256": j.script_sha256,
                      "submitted_at": j.submitted_at.isoformat()}
                     for j in script_approval.pending(db.ctx(), auth.party())]}


@bp.post("/jobs/<job_id>/approve-script")
@auth.roles("provider", need=PersonRole.APPROVER)
def approve_script(job_id: str) -> dict[str, Any]:
    job = script_approval.approve(db.ctx(), auth.party(), job_id)
    db.commit()
    return {"job_id": job.id, "state": job.state}


@bp.post("/jobs/<job_id>/refuse-script")
@auth.roles("provider", need=PersonRole.APPROVER)
def refuse_script(job_id: str) -> dict[str, Any]:
    job = script_approval.refuse(db.ctx(), auth.party(), job_id, auth.body())
    db.commit()
    return {"job_id": job.id, "state": job.state, "reason": job.reason}
