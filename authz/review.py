"""Release review (airlock): the providers' output checkers decide on held script outputs.

A script run whose outputs the automatic checks cannot vouch for ends ``awaiting_review``
(:mod:`authz.runs`); its outputs wait with decision ``pending_review``. The output checkers
of every provider whose data the job read see each output, the code, the automatic
findings, the requester's justification and the requester's earlier releases under the same
permit, and approve, reject or return it for changes, each with a comment.

Rules (the two-person rule included), each checked here and not in a view:

- a decision is a person's: an ``output_checker`` of a provider whose data the job read
  (a party's service account never decides);
- never the person who submitted the job;
- one decision per person and output;
- an output is released only when, for every provider, ``permit.review_quorum`` different
  people approved it and nobody rejected or returned it; one rejection or return ends it;
- nothing is decided once the permit is no longer active (revocation cancels the job and
  discards what was held);
- when no output is pending, the job is settled: released if anything was, else blocked.

The ledger gets one ``review.decided`` entry per decision, naming the person, with the
comment's digest only (a comment may quote the output), and ``review.completed`` when the
job settles (:func:`authz.lifecycle.end_job`).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from sqlalchemy import select

from authz import lifecycle, output_names, people
from authz import validate as v
from authz.context import ROW_LOCK, Ctx
from authz.job_fields import JobFields, OutputFields
from authz.models import Job, JobOutput, OutputReview, Party, Permit, Person
from authz.people import PersonRole
from authz.specs import DECIDE_SPEC as DECIDE_SPEC
from authz.specs import JUSTIFY_SPEC as JUSTIFY_SPEC
from authz.states import (
    TERMINAL,
    JobState,
    OutputDecision,
    PermitStatus,
    ReviewDecision,
    ScriptRelease,
)
from compute.errors import Conflict, Forbidden, InvalidInput, NotFound

_SETTLES = {ReviewDecision.REJECT: OutputDecision.REJECTED,
            ReviewDecision.RETURN: OutputDecision.RETURNED}


def review_providers(job: Job) -> set[str]:
    """The providers whose checkers decide: those whose data the job read (a script job
    reads one provider's domain)."""
    return {job.provider_id}


def queue(ctx: Ctx, provider: Party) -> list[Job]:
    """Jobs awaiting review on this provider's data, oldest first."""
    return [j for j in ctx.session.scalars(
        select(Job).where(Job.state == JobState.AWAITING_REVIEW)
        .order_by(Job.finished_at, Job.id)) if provider.id in review_providers(j)]


def job_for_checker(ctx: Ctx, provider: Party, job_id: str, lock: bool = False) -> Job:
    job = ctx.session.get(Job, job_id, with_for_update=ROW_LOCK if lock else None,
                          populate_existing=lock)
    if job is None or provider.id not in review_providers(job):
        raise NotFound("no such job")
    if not _for_review(ctx, job):
        # Released automatically: its outputs are the requester's, and a provider sees
        # their digests only (GET /jobs/<id>), never their content.
        raise NotFound("no such job under review")
    return job


def _for_review(ctx: Ctx, job: Job) -> bool:
    """Whether the job's outputs are (or were) the checkers' to judge: held now, decided
    on, or under a permit whose outputs all go to review."""
    if job.state == JobState.AWAITING_REVIEW or any(o.reviews for o in job.outputs):
        return True
    permit = ctx.session.get(Permit, job.permit_id)
    return permit is not None and permit.script_release != ScriptRelease.AUTOMATIC


def _output(job: Job, name: str) -> JobOutput:
    for o in job.outputs:
        if o.name == name:
            return o
    raise NotFound("no such output")


def decide(ctx: Ctx, provider: Party, person: Person | None, job_id: str, name: str,
           body: object) -> JobOutput:
    data = v.parse(body, DECIDE_SPEC)
    if person is None:
        raise Forbidden("a release decision is a person's: sign in as an output checker")
    if PersonRole.OUTPUT_CHECKER not in person.roles:
        raise Forbidden("requires the person role output_checker")
    people.require_accredited(ctx)
    job = job_for_checker(ctx, provider, job_id, lock=True)
    if job.submitted_by == person.id:
        raise Forbidden("the analyst who submitted a job never reviews its outputs")
    if job.state != JobState.AWAITING_REVIEW:
        raise Conflict(f"job is {job.state}; nothing of it awaits review")
    permit = ctx.session.get(Permit, job.permit_id)
    assert permit is not None
    if permit.status != PermitStatus.ACTIVE:
        raise Conflict(f"permit is {permit.status}; nothing of it is released")
    out = _output(job, name)
    if out.decision != OutputDecision.PENDING_REVIEW:
        raise Conflict(f"output is {out.decision}; it no longer awaits review")
    if any(r.reviewer_id == person.id for r in out.reviews):
        raise Conflict("you already decided on this output: the quorum needs different "
                       "people")
    decision = ReviewDecision(data["decision"])
    out.reviews.append(OutputReview(provider_id=provider.id, reviewer_id=person.id,
                                    decision=decision, comment=data["comment"],
                                    decided_at=ctx.now()))
    # The output by its positional name, without its digest: it is not released yet.
    ctx.record("review.decided", provider.id, {
        "job_id": job.id, "name": out.name, "decision": decision,
        "comment_sha256": hashlib.sha256(data["comment"].encode()).hexdigest(),
    })
    if decision in _SETTLES:
        _settle_output(ctx, out, _SETTLES[decision])
    elif all(_approvals(out, p) >= permit.review_quorum for p in review_providers(job)):
        _settle_output(ctx, out, OutputDecision.RELEASED)
    if not any(o.decision == OutputDecision.PENDING_REVIEW for o in job.outputs):
        released = any(o.decision == OutputDecision.RELEASED for o in job.outputs)
        lifecycle.end_job(ctx, provider.id, job,
                          JobState.RELEASED if released else JobState.BLOCKED,
                          None if released else "release review: no output released")
    return out


def released_names(job: Job) -> tuple[str, ...]:
    """The outputs of an ended job that were released (the agent records their
    populations in the provider's differencing audit); nothing while the job is open."""
    if job.state not in TERMINAL:
        return ()
    # By the names the agent reported (its audit's keys), not the positional ones.
    return tuple(sorted(output_names.agents_name(o) for o in job.outputs
                        if o.decision == OutputDecision.RELEASED))


def _approvals(out: JobOutput, provider_id: str) -> int:
    return len({r.reviewer_id for r in out.reviews
                if r.provider_id == provider_id and r.decision == ReviewDecision.APPROVE})


def _settle_output(ctx: Ctx, out: JobOutput, decision: OutputDecision) -> None:
    out.decision, out.decided_at = decision, ctx.now()
    if decision != OutputDecision.RELEASED:
        out.content = None  # rejected or returned: discarded


def justify(ctx: Ctx, requester: Party, job_id: str, name: str, body: object) -> JobOutput:
    """The requester's case for releasing a held output, while it waits."""
    text = v.parse(body, JUSTIFY_SPEC)["justification"]
    job = ctx.session.get(Job, job_id, with_for_update=ROW_LOCK, populate_existing=True)
    if job is None or job.requester_id != requester.id:
        raise NotFound("no such job")
    out = _output(job, name)
    if out.decision != OutputDecision.PENDING_REVIEW:
        raise Conflict(f"output is {out.decision}; a justification goes with a held output")
    if out.reviews:
        raise InvalidInput("justification", "must come before the first review decision")
    out.justification = text
    ctx.record("output.justified", requester.id, {
        "job_id": job.id, "name": out.name,
        "justification_sha256": hashlib.sha256(text.encode()).hexdigest()})
    return out


def earlier_releases(ctx: Ctx, job: Job) -> list[dict[str, Any]]:
    """What the requester already has from the same permit: the context a checker needs
    to judge differencing across outputs."""
    rows = ctx.session.execute(
        select(Job.id, JobOutput.name, JobOutput.script_name, JobOutput.sha256,
               JobOutput.decided_at, Job.finished_at)
        .join(JobOutput, JobOutput.job_id == Job.id)
        .where(Job.permit_id == job.permit_id, Job.id != job.id,
               JobOutput.decision == OutputDecision.RELEASED)
        .order_by(Job.finished_at, Job.id, JobOutput.name))
    return [{"job_id": j, "name": n, "script_name": sn or n, "sha256": s,
             "released_at": (d or f).isoformat() if (d or f) else None}
            for j, n, sn, s, d, f in rows]


def review_json(out: OutputFields) -> list[dict[str, Any]]:
    return [{"reviewer_id": r.reviewer_id, "provider_id": r.provider_id,
             "decision": r.decision, "comment": r.comment,
             "decided_at": r.decided_at.isoformat()} for r in out.reviews]


def review_seconds(job: JobFields, out: OutputFields) -> int | None:
    if job.finished_at is None:
        return None
    end = out.decided_at
    return int((end - job.finished_at).total_seconds()) if end is not None else None


def material(ctx: Ctx, job: Job) -> dict[str, Any]:
    """Everything an output checker sees of one job."""
    permit = ctx.session.get(Permit, job.permit_id)
    assert permit is not None
    return {
        "job_id": job.id, "permit_id": job.permit_id, "requester_id": job.requester_id,
        "submitted_by": job.submitted_by, "state": job.state, "kind": job.kind,
        "script": job.script.decode("utf-8", "replace"), "script_sha256": job.script_sha256,
        "review_quorum": permit.review_quorum,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "outputs": [{
            # ``name`` is the key (positional unless released automatically); the
            # checkers judge the file as the script named it.
            "name": o.name, "script_name": output_names.agents_name(o),
            "sha256": o.sha256, "bytes": o.size, "decision": o.decision,
            # The automatic checks' notes, then what re-derivation found.
            "findings": [*o.reasons, *o.findings], "justification": o.justification,
            **_content(o.content), "reviews": review_json(o),
            "review_s": review_seconds(job, o),
        } for o in job.outputs],
        "earlier_releases": earlier_releases(ctx, job),
    }


def _content(content: bytes | None) -> dict[str, str | None]:
    """A table as text; an image (held for review) as base64."""
    if content is None:
        return {"content": None}
    try:
        return {"content": content.decode("utf-8")}
    except UnicodeDecodeError:
        return {"content": None, "content_b64": base64.b64encode(content).decode()}
