"""Jobs: submit, inspect, cancel, fetch released outputs."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from authz import job_list, jobs
from authz.people import PersonRole
from compute.errors import NotFound
from sandbox import auth, db, downloads, release

bp = Blueprint("jobs", __name__, url_prefix="/api/v1/jobs")


@bp.post("")
@auth.roles("requester")
def submit() -> tuple[dict[str, Any], int]:
    p = auth.party()
    job = jobs.submit(db.ctx(), p, auth.body())
    db.commit()
    db.work_signal().notify()
    return jobs.to_json(job, p), 201


@bp.get("")
@auth.roles("requester", "provider", plain=True)
def list_jobs() -> dict[str, Any]:
    # Plain rows, not ORM objects (authz/job_list.py); the same JSON as jobs.to_json's.
    return {"jobs": job_list.list_json(db.ctx(), auth.viewer())}


@bp.get("/<job_id>")
@auth.roles("requester", "provider", plain=True)
def get_job(job_id: str) -> dict[str, Any]:
    # Plain rows, as the list (a requester's client polls this until its job ends).
    return job_list.job_json(db.ctx(), auth.viewer(), job_id)


@bp.post("/<job_id>/cancel")
@auth.roles("requester")
def cancel(job_id: str) -> dict[str, Any]:
    p = auth.party()
    job = jobs.cancel(db.ctx(), p, job_id)
    db.commit()
    return jobs.to_json(job, p)


@bp.post("/<job_id>/stop")
@auth.roles("provider", "admin", need=(PersonRole.APPROVER, PersonRole.ADMIN))
def stop(job_id: str) -> dict[str, Any]:
    """Incident control: stop a job on the provider's data now (queued or running)."""
    p = auth.party()
    job = jobs.stop(db.ctx(), p, job_id, auth.body())
    db.commit()
    return jobs.to_json(job, p)


@bp.get("/<job_id>/receipt")
@auth.roles("requester")
def receipt(job_id: str) -> dict[str, Any]:
    """The offline-verifiable receipt of the run's ledger entry (its released result)."""
    job = jobs.get_visible(db.ctx(), auth.party(), job_id)
    if job.ledger_index is None or job.requester_id != auth.party().id:
        raise NotFound("this job has no run entry")
    return release.witnessed_receipt(job.ledger_index)


@bp.get("/<job_id>/outputs/<name>")
@auth.roles("requester")
def output(job_id: str, name: str) -> Response:
    out = jobs.released_output(db.ctx(), auth.party(), job_id, name)
    job = jobs.get_visible(db.ctx(), auth.party(), job_id)
    if job.ledger_index is None:
        raise NotFound("no such output")
    release.require_witnessed(job.ledger_index)
    # As the web page's download: the checked kind's media type, as an attachment.
    return downloads.output_file(out)
