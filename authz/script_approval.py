"""Code visible to providers, and the permit option that every new script is approved.

The approvers of the provider whose data a job reads may read its full script or statistics
spec, not only its digest. With ``permit.approve_scripts``, a script submitted under the
permit waits ``awaiting_approval`` until an approver of every provider approved that exact
script (by SHA-256); a hash approved once under the permit runs again without asking.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from authz import lifecycle
from authz import validate as v
from authz.context import ROW_LOCK, Ctx
from authz.jobs import approved_script, can_see
from authz.models import Job, Party, Permit, ScriptApproval
from authz.states import JobState, PermitStatus
from compute.errors import Conflict, NotFound


def providers_of(job: Job) -> set[str]:
    """The providers whose approval a script needs: those whose data it reads."""
    return {job.provider_id}


def script_of(ctx: Ctx, party: Party, job_id: str) -> dict[str, Any]:
    """The code of a job, for its requester and the providers whose data it reads."""
    job = ctx.session.get(Job, job_id)
    if job is None or not can_see(party, job):
        raise NotFound("no such job")
    approvals = ctx.session.scalars(select(ScriptApproval).where(
        ScriptApproval.permit_id == job.permit_id,
        ScriptApproval.script_sha256 == job.script_sha256))
    return {"job_id": job.id, "kind": job.kind, "sha256": job.script_sha256,
            "script": job.script.decode("utf-8", "replace"),
            "approvals": [{"provider_id": a.provider_id, "approved_by": a.approved_by,
                           "approved_at": a.approved_at.isoformat()} for a in approvals]}


def _awaiting(ctx: Ctx, provider: Party, job_id: str) -> tuple[Job, Permit]:
    job = ctx.session.get(Job, job_id, with_for_update=ROW_LOCK, populate_existing=True)
    if job is None or provider.id not in providers_of(job):
        raise NotFound("no such job")
    if job.state != JobState.AWAITING_APPROVAL:
        raise Conflict(f"job is {job.state}; its script is not awaiting approval")
    permit = ctx.session.get(Permit, job.permit_id)
    assert permit is not None
    if permit.status != PermitStatus.ACTIVE:
        raise Conflict(f"permit is {permit.status}")
    return job, permit


def approve(ctx: Ctx, provider: Party, job_id: str) -> Job:
    """This provider approves the job's exact script under its permit; every job of the
    permit waiting on the same script is queued once all its providers approved."""
    job, permit = _awaiting(ctx, provider, job_id)
    if not approved_script(ctx, permit.id, job.script_sha256, {provider.id}):
        ctx.session.add(ScriptApproval(permit_id=permit.id, script_sha256=job.script_sha256,
                                       provider_id=provider.id,
                                       approved_by=ctx.who(provider.id),
                                       approved_at=ctx.now()))
        ctx.session.flush()
        ctx.record("script.approved", provider.id, {
            "permit_id": permit.id, "script_sha256": job.script_sha256, "job_id": job.id})
    waiting = ctx.session.scalars(select(Job).where(
        Job.permit_id == permit.id, Job.script_sha256 == job.script_sha256,
        Job.state == JobState.AWAITING_APPROVAL).with_for_update(key_share=True))
    for each in waiting:
        if approved_script(ctx, permit.id, each.script_sha256, providers_of(each)):
            each.state = JobState.QUEUED
            ctx.record("job.queued", provider.id, {"job_id": each.id,
                                                   "reason": "script approved"})
    return job


def refuse(ctx: Ctx, provider: Party, job_id: str, body: object) -> Job:
    reason = v.parse(body, v.REASON_SPEC)["reason"]
    job, _ = _awaiting(ctx, provider, job_id)
    lifecycle.end_job(ctx, provider.id, job, JobState.BLOCKED,
                      f"script refused by provider {provider.id}: {reason}")
    return job


def pending(ctx: Ctx, provider: Party) -> list[Job]:
    return [j for j in ctx.session.scalars(
        select(Job).where(Job.state == JobState.AWAITING_APPROVAL)
        .order_by(Job.submitted_at, Job.id)) if provider.id in providers_of(j)]
