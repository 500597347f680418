"""Ending a job: the one place a job reaches a final state, with its ledger entries.

Whoever ends a job — the requester cancelling, a provider revoking the permit, the
dispatcher blocking it, its agent reporting the run — comes through :func:`end_job`, so
every end is checked against the transition table (:mod:`authz.states`), is on the
record, and lets the joint job it belongs to move on.
"""

from __future__ import annotations

from typing import Any

from authz import joint, output_names
from authz.context import Ctx
from authz.models import AccessRequest, Job, Party, Permit, RequestItem
from authz.states import RUN_OVER, JobState, OutputDecision, check_job_move


def end_job(ctx: Ctx, actor: str, job: Job, state: JobState, reason: str | None) -> None:
    """Move ``job`` to ``state``, where its run is over (Conflict if the table forbids it),
    and record it.

    A run that read input is recorded in full (``run.finished``, the data-flow audit record,
    and one entry per output); a job that never read anything gets ``job.<state>``. A job
    leaving review (settled by its output checkers, or cancelled) gets ``review.completed``
    with what came of each held output; that entry is then the job's receipt.
    """
    if state not in RUN_OVER:
        raise ValueError(f"{state} is not a state where the run is over")
    was = job.state
    job.state = check_job_move(job.state, state)
    job.reason = reason
    job.lease_expires_at = None
    if was == JobState.AWAITING_REVIEW:
        for o in job.outputs:
            if o.decision == OutputDecision.PENDING_REVIEW:  # cancelled: discarded
                o.decision, o.content, o.decided_at = OutputDecision.BLOCKED, None, ctx.now()
                o.reasons = [*o.reasons, f"discarded: {reason}"]
        assert job.finished_at is not None
        job.ledger_index = ctx.record("review.completed", actor, {
            "job_id": job.id, "permit_id": job.permit_id, "state": state, "reason": reason,
            "outputs": [output_names.shown(o) for o in job.outputs],
            # Whole seconds from the end of the run: how long the review took.
            "review_s": int((ctx.now() - job.finished_at).total_seconds()),
        })
        return
    job.finished_at = ctx.now()
    if job.input_sha256 is None:
        ctx.record(f"job.{state}", actor, {"job_id": job.id, "reason": reason})
    else:
        job.ledger_index = ctx.record("run.finished", actor, _run_body(ctx, job))
        for o in job.outputs:
            shown = output_names.shown(o)
            ctx.record(f"output.{o.decision}", actor, {
                "job_id": job.id, "name": shown["name"], "sha256": shown["sha256"],
                "bytes": shown["bytes"], "reasons": o.reasons,
            })
    if job.joint_id is not None:
        joint.on_part_finished(ctx, job)


ROW_BASE = 10
BYTE_BASE = 1024


def rounded(n: int, base: int) -> int:
    """``n`` to the nearest multiple of ``base`` (halves up), as TREs round counts."""
    return (n + base // 2) // base * base


def requeue(ctx: Ctx, job: Job, reason: str) -> None:
    """Back to the queue: its agent's lease expired (it was already counted once).

    ``agent_id`` keeps naming that agent until another takes the job, so a late report
    of a run it did finish is still accepted (authz/runs.py::finish).
    """
    job.state = check_job_move(job.state, JobState.QUEUED)
    ctx.record("job.requeued", "system", {"job_id": job.id, "reason": reason})


def _decider(item: RequestItem) -> str:
    """The person who decided and the provider they decided for; else the provider's
    service account, or the automatic approval of unconditional data."""
    who = item.decided_by or ""
    return f"{who} for {item.provider_id}" if who.startswith("psn_") else who


def _run_body(ctx: Ctx, job: Job) -> dict[str, Any]:
    """The data-flow audit record (数据流通审计) plus what ran and what came out."""
    permit = ctx.session.get(Permit, job.permit_id)
    assert permit is not None
    request = ctx.session.get(AccessRequest, permit.request_id)
    assert request is not None
    requester = ctx.session.get(Party, job.requester_id)
    approvers = sorted({_decider(it) for it in request.items
                        if it.dataset_id in job.dataset_ids})
    assert job.started_at is not None
    return {
        "job_id": job.id, "permit_id": job.permit_id, "state": job.state,
        "dataset_ids": job.dataset_ids,
        "audit": {
            "authorizing_system": ctx.authorizing_system,
            "authorizing_operator": ", ".join(approvers),
            "business_system": request.business_system,
            "user": (f"{job.submitted_by} for " if job.submitted_by else "")
                    + f"{job.requester_id} ({requester.name if requester else '?'})",
            "access_method": f"isolated container run by agent {job.agent_id}, "
                             "network none, permitted columns only",
            "access_time": job.started_at.isoformat(),
            # Rounded: the entry reaches the requester inside its receipt, and an exact row
            # count would recover a suppressed cell from a released total (subtraction).
            # The provider sees the exact figures in its own usage view.
            "data_volume": {"rows": rounded(job.rows_read or 0, ROW_BASE),
                            "bytes": rounded(job.bytes_read or 0, BYTE_BASE)},
        },
        "purpose": request.purpose,
        "script_sha256": job.script_sha256,
        "runner_image": job.runner_image or "",
        "input_sha256": job.input_sha256,
        # An output not released: by position, no digest or size (authz/output_names.py).
        "outputs": [output_names.shown(o) for o in job.outputs],
        "reasons": [job.reason] if job.reason else [],
    }
