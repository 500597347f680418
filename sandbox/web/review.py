"""Release review for output checkers: the queue of jobs whose outputs wait on this
provider's decision, and one job's review (each held output beside its automatic findings,
the job's code and the requester's justification), with the decision forms.

The pages call the API's own domain (:mod:`authz.review`): authorize → service → commit.
Every rule (the quorum, one decision per person and output, never the submitting analyst,
another provider's job answering 404) is the service's; a refusal is shown on the page.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers.response import Response as BaseResponse

from authz import review
from authz.models import Person
from authz.people import PersonRole
from authz.states import OutputDecision, ReviewDecision
from compute.errors import NotFound, SandboxError
from sandbox import auth, db, downloads
from sandbox.web.requester import party_names
from sandbox.web.session import page

bp = Blueprint("review", __name__, url_prefix="/provider/review")
#: Outputs shown as text on the page; anything else (an image, a PDF) is only downloaded.
TEXT_KINDS = ("csv", "json", "txt")
#: Characters of an output shown on the page (the download has all of it).
MAX_SHOWN = 200_000


def _kind(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def person_names(ids: set[str]) -> dict[str, str]:
    if not ids:
        return {}
    rows = db.session().execute(select(Person.id, Person.name).where(Person.id.in_(ids)))
    return {pid: name for pid, name in rows}


@bp.get("/", endpoint="queue")
@page("provider", need=PersonRole.OUTPUT_CHECKER)
def queue_page() -> str:
    waiting = review.queue(db.ctx(), auth.party())
    rows = [{"job": j, "pending": sum(o.decision == OutputDecision.PENDING_REVIEW
                                      for o in j.outputs)} for j in waiting]
    return render_template("web/review/queue.html", rows=rows,
                           names=party_names({j.requester_id for j in waiting}))


def _review_page(job_id: str, error: dict[str, Any] | None = None,
                 status: int = 200) -> tuple[str, int]:
    job = review.job_for_checker(db.ctx(), auth.party(), job_id)
    material = review.material(db.ctx(), job)
    me = auth.person()
    for o in material["outputs"]:
        text = o.get("content")
        # The kind is the script's file name's (an unreleased output's name has none).
        o["shown"] = (text[:MAX_SHOWN] if text is not None
                      and _kind(o["script_name"]) in TEXT_KINDS else None)
        o["cut"] = text is not None and len(text) > MAX_SHOWN
        o["held"] = o["decision"] == OutputDecision.PENDING_REVIEW and (
            text is not None or o.get("content_b64") is not None)
        o["mine"] = me is not None and any(r["reviewer_id"] == me.id for r in o["reviews"])
    ids = {r["reviewer_id"] for o in material["outputs"] for r in o["reviews"]}
    return render_template(
        "web/review/job.html", m=material, error=error, decisions=list(ReviewDecision),
        reviewers=person_names(ids | {job.submitted_by} if job.submitted_by else ids),
        requester=party_names({job.requester_id}).get(job.requester_id, job.requester_id),
        done=request.args.get("done")), status


@bp.get("/<job_id>")
@page("provider", need=PersonRole.OUTPUT_CHECKER)
def job(job_id: str) -> tuple[str, int]:
    return _review_page(job_id)


@bp.post("/<job_id>/outputs/<name>")
@page("provider", need=PersonRole.OUTPUT_CHECKER)
def decide(job_id: str, name: str) -> tuple[str, int] | BaseResponse:
    body = {"decision": request.form.get("decision", ""),
            "comment": request.form.get("comment", "")}
    try:
        review.decide(db.ctx(), auth.party(), auth.person(), job_id, name, body)
    except SandboxError as e:
        db.session().rollback()
        if isinstance(e, NotFound):
            raise  # another provider's job, or no such output: the error page, 404
        return _review_page(job_id, e.to_json(), e.http_status)
    db.commit()
    return redirect(url_for("web.review.job", job_id=job_id, done=name))


@bp.get("/<job_id>/outputs/<name>")
@page("provider", need=PersonRole.OUTPUT_CHECKER)
def download(job_id: str, name: str) -> Response:
    """A held output as a file, for its checkers only: an image or a PDF is never shown in
    the page, so nothing a job produced runs or renders in the checker's session."""
    job = review.job_for_checker(db.ctx(), auth.party(), job_id)
    found = [o for o in job.outputs if o.name == name and o.content is not None]
    if not found:
        raise NotFound("no such output, or its content was discarded")
    # The same file the requester gets if it is released (sandbox/downloads.py).
    return downloads.output_file(found[0])
