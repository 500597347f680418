"""The agent side of the job state machine: leasing tasks, starting and finishing runs.

An agent only ever receives tasks for the providers it serves. The permit is checked again
at dispatch, and the run is counted against the permit in the same transaction, so a
permit is never used more often than it allows whatever the number of agents.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import BindParameter, bindparam, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from authz import (
    catalog,
    joint,
    joint_masks,
    lifecycle,
    output_names,
    permits,
    psi_jobs,
    review,
)
from authz.context import ROW_LOCK, Ctx
from authz.models import Agent, AgentProvider, Dataset, Job, JobOutput, Party, Permit
from authz.parties import agent_provider_ids
from authz.states import (
    ACTIVE,
    HELD_FOR_REVIEW,
    TERMINAL,
    DatasetStatus,
    JobState,
    OutputDecision,
    PermitStatus,
    ScriptRelease,
    check_job_move,
)
from authz.wire import (
    DatasetTask,
    JointPart,
    LeaseState,
    PsiPart,
    RunReport,
    RunStarted,
    RunTask,
    SchemaCheckTask,
    parse,
)
from compute.errors import Conflict, InvalidInput, NotFound, PolicyViolation

RUN_TIMEOUT_S = 300
LEASE_MARGIN_S = 120
SCHEMA_LEASE_S = 60
CANDIDATES = 64
#: Runs a permit gives back for failures on mock data, per run it allows.
MOCK_RETURNS_PER_RUN = 10


def next_task(ctx: Ctx, agent: Agent, claim_key: str | None = None
              ) -> SchemaCheckTask | RunTask | None:
    """The agent's next task. ``claim_key``: the agent's idempotency key for this claim; a
    claim retried with the same key after a lost answer gets the job it was already given.
    """
    if claim_key is not None:
        again = ctx.session.scalars(select(Job).where(
            Job.agent_id == agent.id, Job.claim_key == claim_key,
            Job.state == JobState.DISPATCHED)).first()
        if again is not None:
            permit = ctx.session.get(Permit, again.permit_id)
            assert permit is not None
            return _run_task(ctx, again, permit)
    # A deactivated provider's data takes no new work.
    providers = {p for p in agent_provider_ids(agent)
                 if (party := ctx.session.get(Party, p)) is not None and party.active}
    if not providers:
        return None
    now = ctx.now()
    ds = ctx.session.scalars(
        select(Dataset).where(Dataset.status == DatasetStatus.CHECKING,
                              Dataset.provider_id.in_(providers),
                              or_(Dataset.check_leased_until.is_(None),
                                  Dataset.check_leased_until < now))
        .order_by(Dataset.created_at).limit(1).with_for_update(skip_locked=True, key_share=True)
    ).first()
    if ds is not None:
        # Leased, so that several agents (or slots) never check the same file twice.
        ds.check_leased_until = now + timedelta(seconds=SCHEMA_LEASE_S)
        columns = [f["name"] for f in ds.fields]
        return SchemaCheckTask(dataset=_dataset_task(ds, columns))
    _requeue_expired(ctx, providers)
    # The candidates are ordered from plain columns, unlocked: neither locking every queued
    # row of the provider (another agent's claim would then skip them all and find
    # nothing) nor loading each as an ORM object with its sealed script opened, for the
    # one job a claim takes.
    candidates = ctx.session.execute(
        select(Job.id, Job.requester_id, Job.submitted_at)
        .where(Job.state == JobState.QUEUED, Job.provider_id.in_(providers))
        .order_by(Job.submitted_at, Job.id).limit(CANDIDATES)).all()
    if not candidates:
        return None
    busy: dict[str, int] = {str(r): int(n) for r, n in ctx.session.execute(
        select(Job.requester_id, func.count()).where(
            Job.state.in_(ACTIVE), Job.provider_id.in_(providers)).group_by(Job.requester_id))}
    # Fair across requesters: the one with the fewest runs in flight goes first, so a burst
    # from one requester does not starve another; within a requester, oldest first.
    order = sorted(candidates, key=lambda r: (busy.get(r.requester_id, 0), r.submitted_at,
                                              r.id))
    for row in order:
        # Locked one at a time, and only while still queued. SKIP LOCKED: a job another
        # agent is dispatching right now is passed over, not waited for; one dispatched
        # and committed since the read above no longer matches (PostgreSQL re-reads a row
        # it locks; SQLite serializes whole transactions instead).
        job = ctx.session.scalars(
            select(Job).where(Job.id == row.id, Job.state == JobState.QUEUED)
            .with_for_update(skip_locked=True, key_share=True)
            .execution_options(populate_existing=True)).first()
        if job is None:
            continue
        # Row lock: the check and the increment of runs_used below must not interleave
        # with another agent's dispatch (a lost update would let a permit overrun).
        permit = ctx.session.get(Permit, job.permit_id, with_for_update=ROW_LOCK,
                                 populate_existing=True)
        assert permit is not None
        try:
            permits.check_permit(ctx, permit, job.dataset_ids,
                                 new_run=job.dispatched_at is None)
        except PolicyViolation as e:
            lifecycle.end_job(ctx, f"agent:{agent.id}", job, JobState.BLOCKED,
                              f"at dispatch: {e}")
            continue
        return _dispatch(ctx, agent, job, permit, claim_key)
    return None


def _may_have_task_query() -> Select[tuple[bool]]:
    mine = select(AgentProvider.provider_id).where(
        AgentProvider.agent_id == bindparam("agent_id"))
    now: BindParameter[datetime] = bindparam("now")
    return select(or_(
        select(Job.id).where(Job.state == JobState.QUEUED, Job.provider_id.in_(mine))
        .exists(),
        select(Job.id).where(Job.state.in_(sorted(ACTIVE)), Job.provider_id.in_(mine),
                             Job.lease_expires_at < now).exists(),
        select(Dataset.id).where(
            Dataset.status == DatasetStatus.CHECKING, Dataset.provider_id.in_(mine),
            or_(Dataset.check_leased_until.is_(None), Dataset.check_leased_until < now))
        .exists()))


# Built once: building this statement and its cache key cost more CPU than running it.
_MAY_HAVE_TASK = _may_have_task_query()


def may_have_task(session: Session, agent_id: str, now: datetime) -> bool:
    """Whether :func:`next_task` could find anything for the agent, read without a write
    lock: a long poll re-probes with a write transaction only then, so idle agents do not
    hold SQLite's single writer lock (every probe's ``BEGIN IMMEDIATE``) against the
    writes of the jobs that are running. One statement, no ORM objects: every idle agent
    runs it several times a second, on the CPU the running jobs need."""
    return bool(session.execute(_MAY_HAVE_TASK, {"agent_id": agent_id, "now": now}).scalar())


def leased_state(ctx: Ctx, agent: Agent, job_id: str) -> LeaseState:
    """What a restarted agent needs to reconcile a container it finds labelled as its own."""
    job = _leased(ctx, agent, job_id)
    return LeaseState(job_id=job.id, state=job.state, active=job.state in ACTIVE,
                      released_outputs=review.released_names(job))


def _requeue_expired(ctx: Ctx, providers: set[str]) -> None:
    # A lease outlives the run's deadline by a margin; past it the agent is presumed dead
    # and the job is queued again. It was already counted against its permit at its first
    # dispatch, and is not counted twice.
    stale = ctx.session.scalars(select(Job).where(
        Job.state.in_(ACTIVE), Job.provider_id.in_(providers),
        Job.lease_expires_at < ctx.now()))
    for job in stale:
        lifecycle.requeue(ctx, job, "lease expired")


def _dataset_task(ds: Dataset, columns: list[str]) -> DatasetTask:
    fm = catalog.field_map(ds)
    return DatasetTask.model_validate({
        "id": ds.id, "code": ds.code, "provider_id": ds.provider_id, "format": ds.format,
        "location": ds.location, "fields": [fm[c] for c in columns],
        "identifiers": catalog.identifier_fields(ds)})


def _dispatch(ctx: Ctx, agent: Agent, job: Job, permit: Permit, claim_key: str | None
              ) -> RunTask:
    first = job.dispatched_at is None
    if first:
        permit.runs_used += 1
    job.state = check_job_move(job.state, JobState.DISPATCHED)
    job.agent_id = agent.id
    job.claim_key = claim_key
    job.dispatched_at = ctx.now()
    job.lease_expires_at = ctx.now() + timedelta(seconds=RUN_TIMEOUT_S + LEASE_MARGIN_S)
    ctx.record("job.dispatched", f"agent:{agent.id}", {
        "job_id": job.id, "agent_id": agent.id, "permit_id": permit.id,
        "runs_used": permit.runs_used, "max_runs": permit.max_runs,
    })
    return _run_task(ctx, job, permit)


def _run_task(ctx: Ctx, job: Job, permit: Permit) -> RunTask:
    datasets = []
    high: list[str] = []
    for ds_id in job.dataset_ids:
        ds = ctx.session.get(Dataset, ds_id)
        assert ds is not None
        cols = permit.columns[ds_id]
        datasets.append(_dataset_task(ds, cols))
        fm = catalog.field_map(ds)
        high += [c for c in cols if fm[c]["sensitivity"] in catalog.HIGH_SENSITIVITY]
    return RunTask(
        job_id=job.id, kind=job.kind, permit_id=permit.id, requester_id=job.requester_id,
        script_b64=base64.b64encode(job.script).decode(), script_sha256=job.script_sha256,
        datasets=tuple(datasets), min_cell_count=permit.min_cell_count,
        blocked_columns=tuple(sorted(set(high))), timeout_s=RUN_TIMEOUT_S,
        joint=(JointPart.model_validate(joint.task_fields(ctx, job))
               if job.joint_id is not None and job.kind != "psi" else None),
        psi=(PsiPart.model_validate(psi_jobs.task_fields(ctx, job))
             if job.kind == "psi" else None),
        statistics=json.loads(job.script) if job.kind == "statistics" else None,
        disclosure=permit.disclosure, script_release=permit.script_release)


def _return_run(ctx: Ctx, agent: Agent, job: Job, permit: Permit, reason: str | None
                ) -> str | None:
    """The script failed on mock data, so it never ran on the provider's: the run it was
    counted for at dispatch is given back (a script error must not use up a permit)."""
    if job.kind != "script" or job.joint_id is not None:
        raise InvalidInput("mock_failed", "only a script job runs on mock data first")
    locked = ctx.session.get(Permit, permit.id, with_for_update=ROW_LOCK, populate_existing=True)
    assert locked is not None
    permit = locked
    if permit.mock_returns >= MOCK_RETURNS_PER_RUN * permit.max_runs:
        # Each mock run uses the provider's agent: past the cap a failure costs its run.
        return (f"{reason or 'the script failed on mock data'}; but this permit's "
                f"{MOCK_RETURNS_PER_RUN * permit.max_runs} free failures on mock data are "
                "used up, so this one used a run (test with `sandbox dev-run`)")[:2000]
    permit.mock_returns += 1
    permit.runs_used = max(0, permit.runs_used - 1)
    ctx.record("permit.run_returned", f"agent:{agent.id}", {
        "permit_id": permit.id, "job_id": job.id, "runs_used": permit.runs_used,
        "max_runs": permit.max_runs, "mock_returns": permit.mock_returns,
        "reason": "the script failed on mock data"})
    return reason


def _leased(ctx: Ctx, agent: Agent, job_id: str, *, lock: bool = False) -> Job:
    # Locked for a report: a concurrent dispatch of the requeued job to another agent must
    # not be overwritten by this agent's late report (it reloads and is then refused).
    job = ctx.session.get(Job, job_id, with_for_update=ROW_LOCK if lock else None,
                          populate_existing=lock)
    if job is None or job.agent_id != agent.id:
        raise NotFound("no such task")
    return job


def mark_started(ctx: Ctx, agent: Agent, job_id: str, notice: RunStarted | None = None
                 ) -> Job:
    """The run started. With a joint part's mask key in ``notice``, the key is announced in
    the same transaction (authz/joint_masks.py: same checks, same ``joint.mask_key`` entry
    after ``job.running``): one write for the agent's two notices."""
    job = _leased(ctx, agent, job_id)
    if job.state != JobState.RUNNING:
        if job.state != JobState.DISPATCHED:
            raise Conflict(f"job is {job.state}")
        job.state = check_job_move(job.state, JobState.RUNNING)
        job.started_at = ctx.now()
        ctx.record("job.running", f"agent:{agent.id}", {"job_id": job.id})
    # else idempotent: an agent retrying after a lost response (the announcement too)
    if notice is not None and notice.mask_key is not None:
        joint_masks.announce(ctx, agent, job_id, notice.mask_key.model_dump())
    return job


def mark_checking(ctx: Ctx, agent: Agent, job_id: str) -> Job:
    """The container has exited; the agent is checking its outputs in the domain."""
    job = _leased(ctx, agent, job_id)
    if job.state == JobState.CHECKING:
        return job
    job.state = check_job_move(job.state, JobState.CHECKING)
    ctx.record("job.checking", f"agent:{agent.id}", {"job_id": job.id})
    return job


#: The outputs a report carries content for, and the run state each belongs to.
CARRIED = {OutputDecision.RELEASED: JobState.RELEASED,
           OutputDecision.PENDING_REVIEW: JobState.AWAITING_REVIEW}


@dataclass(frozen=True)
class ReadReport:
    """An agent's report of a run, parsed, its carried outputs decoded and checked against
    their hashes (:func:`read_report`)."""

    report: RunReport
    outputs: list[JobOutput]


def read_report(body: object) -> ReadReport:
    """Parse a run's report and decode its outputs. Reads no database, so the view does it
    between transactions: a joint part's report carries ~1.2 MB of base64 ciphertexts, and
    the parts of a job report at once, each in a transaction holding the write lock."""
    report = parse(RunReport, body)
    state = report.state
    outputs = []
    for i, o in enumerate(report.outputs):
        where = f"outputs[{i}]"
        fields = {"name": o.name, "sha256": o.sha256, "size": o.bytes,
                  "decision": o.decision, "reasons": list(o.reasons),
                  "findings": list(o.findings)}
        if o.decision not in CARRIED:
            if o.content_b64 is not None:
                raise InvalidInput(f"{where}.content_b64", f"a {o.decision} output never "
                                                           "leaves the provider's domain")
            outputs.append(JobOutput(**fields, content=None))
            continue
        if o.content_b64 is None or state != CARRIED[o.decision]:
            raise InvalidInput(f"{where}.content_b64", f"required for a {o.decision} output "
                                                       f"of a {CARRIED[o.decision]} run")
        try:
            raw = base64.b64decode(o.content_b64, validate=True)
        except ValueError:
            raise InvalidInput(f"{where}.content_b64", "must be base64") from None
        if hashlib.sha256(raw).hexdigest() != o.sha256 or len(raw) != o.bytes:
            raise InvalidInput(f"{where}.sha256", "must match the content")
        outputs.append(JobOutput(**fields, content=raw))
    return ReadReport(report, outputs)


def finish(ctx: Ctx, agent: Agent, job_id: str, read: ReadReport) -> Job:
    """Record the agent's report of a run (:func:`read_report`) and end the job.

    Also accepted late: from the agent the job was last leased to, after its lease expired
    and the job was requeued, as long as no other agent took it meanwhile. The run
    finished once and must not run again (an outage of the controller longer than the
    lease must not cost a second run on the provider's data).
    """
    job = _leased(ctx, agent, job_id, lock=True)
    if job.state in TERMINAL:
        raise Conflict(f"job already {job.state}")
    if job.state not in ACTIVE and job.state != JobState.QUEUED:
        raise Conflict(f"job is {job.state}")
    report, outputs = read.report, read.outputs
    if report.checked and job.state in ACTIVE:
        # The checking step the agent did not announce separately: on the ledger before
        # the result, in the same transaction (a requeued job's late report records no
        # step of a lease it no longer holds).
        mark_checking(ctx, agent, job_id)
    state, reason = report.state, report.reason
    if state != JobState.FAILED or outputs:
        # A run that produced anything must be fully on the record (run.finished).
        for name in ("input_sha256", "runner_image"):
            if getattr(report, name) is None:
                raise InvalidInput(name, "required for a run that is not failed or has outputs")
    if state in CARRIED.values() and any(o.decision == OutputDecision.BLOCKED
                                         for o in outputs):
        raise InvalidInput("state", "a run with a blocked output is blocked as a whole")
    permit = ctx.session.get(Permit, job.permit_id)
    assert permit is not None
    if state == JobState.AWAITING_REVIEW and job.kind != "script":
        raise InvalidInput("state", "only a script's outputs are held for review")
    held = None
    if state in CARRIED.values() and permit.status != PermitStatus.ACTIVE:
        held = (f"permit {permit.status} during the run; outputs withheld",
                "withheld: permit revoked during the run")
    elif (state == JobState.RELEASED and job.kind == "script"
          and permit.script_release != ScriptRelease.AUTOMATIC
          and any(o.decision == OutputDecision.RELEASED for o in outputs)):
        # The agent holds such outputs for review itself; this is the controller's guard.
        state, reason = JobState.AWAITING_REVIEW, HELD_FOR_REVIEW
        for out in outputs:
            if out.decision == OutputDecision.RELEASED:
                out.decision = OutputDecision.PENDING_REVIEW
    if held is not None:
        # Nothing of it is released (fail closed).
        state, reason = JobState.BLOCKED, held[0]
        for out in outputs:
            out.decision, out.content = OutputDecision.BLOCKED, None
            out.reasons = [*out.reasons, held[1]]
    # What the requester sees of an output not released is its position (R5-4).
    output_names.name_by_position(outputs)
    if report.mock_failed:
        reason = _return_run(ctx, agent, job, permit, reason)
    job.exit_code = report.exit_code
    job.rows_read = report.rows_read
    job.bytes_read = report.bytes_read
    job.input_sha256 = report.input_sha256
    job.runner_image = report.runner_image
    job.log = report.log
    job.outputs = outputs
    if job.started_at is None:
        job.started_at = ctx.now()
    lifecycle.end_job(ctx, f"agent:{agent.id}", job, state, reason)
    return job
