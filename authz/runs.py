"""The agent side of the job state machine: leasing tasks, starting and finishing runs.

An agent only ever receives tasks for the providers it serves. The permit is checked again
at dispatch, and the run is counted against the permit in the same transaction, so a
permit is never used more often than it allows whatever the number of agents.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from typing import Any

from sqlalchemy import func, or_, select

from authz import access, catalog, joint
from authz import validate as v
from authz.context import Ctx
from authz.errors import Conflict, InvalidInput, NotFound, PolicyViolation
from authz.models import AccessRequest, Agent, Dataset, Job, JobOutput, Party, Permit
from authz.parties import agent_provider_ids

RUN_TIMEOUT_S = 300
LEASE_MARGIN_S = 120
HEX64 = r"[0-9a-f]{64}"


ACTIVE = ("dispatched", "running", "checking")
SCHEMA_LEASE_S = 60
CANDIDATES = 64


def next_task(ctx: Ctx, agent: Agent) -> dict[str, Any] | None:
    # A deactivated provider's data takes no new work.
    providers = {p for p in agent_provider_ids(agent)
                 if (party := ctx.session.get(Party, p)) is not None and party.active}
    if not providers:
        return None
    now = ctx.now()
    ds = ctx.session.scalars(
        select(Dataset).where(Dataset.status == "checking", Dataset.provider_id.in_(providers),
                              or_(Dataset.check_leased_until.is_(None),
                                  Dataset.check_leased_until < now))
        .order_by(Dataset.created_at).limit(1).with_for_update(skip_locked=True)
    ).first()
    if ds is not None:
        # Leased, so that several agents (or slots) never check the same file twice.
        ds.check_leased_until = now + timedelta(seconds=SCHEMA_LEASE_S)
        columns = [f["name"] for f in ds.fields]
        return {"type": "schema_check", "dataset": _dataset_task(ds, columns)}
    _requeue_expired(ctx, providers)
    # SKIP LOCKED: rows another agent is dispatching right now are passed over, not waited
    # for (PostgreSQL; SQLite serializes whole transactions instead).
    candidates = list(ctx.session.scalars(
        select(Job).where(Job.state == "queued", Job.provider_id.in_(providers))
        .order_by(Job.submitted_at, Job.id).limit(CANDIDATES).with_for_update(skip_locked=True)
    ))
    if not candidates:
        return None
    busy: dict[str, int] = {str(r): int(n) for r, n in ctx.session.execute(
        select(Job.requester_id, func.count()).where(
            Job.state.in_(ACTIVE), Job.provider_id.in_(providers)).group_by(Job.requester_id))}
    # Fair across requesters: the one with the fewest runs in flight goes first, so a burst
    # from one requester does not starve another; within a requester, oldest first.
    candidates.sort(key=lambda j: (busy.get(j.requester_id, 0), j.submitted_at, j.id))
    for job in candidates:
        # Row lock: the check and the increment of runs_used below must not interleave
        # with another agent's dispatch (a lost update would let a permit overrun).
        permit = ctx.session.get(Permit, job.permit_id, with_for_update=True,
                                 populate_existing=True)
        assert permit is not None
        try:
            access.check_permit(ctx, permit, job.dataset_ids,
                                new_run=job.dispatched_at is None)
        except PolicyViolation as e:
            _finish(ctx, f"agent:{agent.id}", job, "blocked", f"at dispatch: {e}")
            continue
        return _dispatch(ctx, agent, job, permit)
    return None


def leased_state(ctx: Ctx, agent: Agent, job_id: str) -> dict[str, Any]:
    """What a restarted agent needs to reconcile a container it finds labelled as its own."""
    job = _leased(ctx, agent, job_id)
    return {"job_id": job.id, "state": job.state, "active": job.state in ACTIVE}


def _requeue_expired(ctx: Ctx, providers: set[str]) -> None:
    # A lease outlives the run's deadline by a margin; past it the agent is presumed dead
    # and the job is queued again. It was already counted against its permit at its first
    # dispatch, and is not counted twice.
    stale = ctx.session.scalars(select(Job).where(
        Job.state.in_(ACTIVE), Job.provider_id.in_(providers),
        Job.lease_expires_at < ctx.now()))
    for job in stale:
        job.state = "queued"
        job.agent_id = None
        ctx.record("job.requeued", "system", {"job_id": job.id, "reason": "lease expired"})


def _dataset_task(ds: Dataset, columns: list[str]) -> dict[str, Any]:
    fm = catalog.field_map(ds)
    return {"id": ds.id, "code": ds.code, "provider_id": ds.provider_id, "format": ds.format,
            "location": ds.location, "fields": [fm[c] for c in columns]}


def _dispatch(ctx: Ctx, agent: Agent, job: Job, permit: Permit) -> dict[str, Any]:
    first = job.dispatched_at is None
    if first:
        permit.runs_used += 1
    job.state = "dispatched"
    job.agent_id = agent.id
    job.dispatched_at = ctx.now()
    job.lease_expires_at = ctx.now() + timedelta(seconds=RUN_TIMEOUT_S + LEASE_MARGIN_S)
    ctx.record("job.dispatched", f"agent:{agent.id}", {
        "job_id": job.id, "agent_id": agent.id, "permit_id": permit.id,
        "runs_used": permit.runs_used, "max_runs": permit.max_runs,
    })
    datasets = []
    high: list[str] = []
    for ds_id in job.dataset_ids:
        ds = ctx.session.get(Dataset, ds_id)
        assert ds is not None
        cols = permit.columns[ds_id]
        datasets.append(_dataset_task(ds, cols))
        fm = catalog.field_map(ds)
        high += [c for c in cols if fm[c]["sensitivity"] in catalog.HIGH_SENSITIVITY]
    task: dict[str, Any] = {
        "type": "run", "job_id": job.id, "kind": job.kind, "permit_id": permit.id,
        "script_b64": base64.b64encode(job.script).decode(), "script_sha256": job.script_sha256,
        "datasets": datasets, "min_cell_count": permit.min_cell_count,
        "blocked_columns": sorted(set(high)), "timeout_s": RUN_TIMEOUT_S,
    }
    if job.joint_id is not None:
        task["joint"] = joint.task_fields(ctx, job)
    return task


def _leased(ctx: Ctx, agent: Agent, job_id: str) -> Job:
    job = ctx.session.get(Job, job_id)
    if job is None or job.agent_id != agent.id:
        raise NotFound("no such task")
    return job


def mark_started(ctx: Ctx, agent: Agent, job_id: str) -> Job:
    job = _leased(ctx, agent, job_id)
    if job.state == "running":
        return job  # idempotent: an agent retrying after a lost response
    if job.state != "dispatched":
        raise Conflict(f"job is {job.state}")
    job.state = "running"
    job.started_at = ctx.now()
    ctx.record("job.running", f"agent:{agent.id}", {"job_id": job.id})
    return job


def mark_checking(ctx: Ctx, agent: Agent, job_id: str) -> Job:
    """The container has exited; the agent is checking its outputs in the domain."""
    job = _leased(ctx, agent, job_id)
    if job.state == "checking":
        return job
    if job.state not in ("dispatched", "running"):
        raise Conflict(f"job is {job.state}")
    job.state = "checking"
    ctx.record("job.checking", f"agent:{agent.id}", {"job_id": job.id})
    return job


OUTPUT_SPEC = [
    v.Field("name", v.text(200, pattern=r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")),
    v.Field("sha256", v.text(64, pattern=HEX64)),
    v.Field("bytes", v.integer(0, 1 << 40)),
    v.Field("decision", v.choice("released", "blocked")),
    v.Field("reasons", v.list_of(v.text(500), max_items=100), required=False, default=[]),
    v.Field("content_b64", v.text(16 << 20, min_len=0), required=False),
]
RESULT_SPEC = [
    v.Field("state", v.choice("released", "blocked", "failed")),
    v.Field("reason", v.text(2000), required=False),
    v.Field("exit_code", v.integer(-1024, 1024), required=False),
    v.Field("rows_read", v.integer(0, 1 << 62)),
    v.Field("bytes_read", v.integer(0, 1 << 62)),
    # Absent when the run failed before its input was projected (e.g. file unreadable).
    v.Field("input_sha256", v.text(64, pattern=HEX64), required=False),
    v.Field("runner_image", v.text(100), required=False),
    v.Field("log", v.text(64 * 1024, min_len=0), required=False),
    v.Field("outputs", v.list_of(v.obj(OUTPUT_SPEC), max_items=100)),
]


def finish(ctx: Ctx, agent: Agent, job_id: str, body: object) -> Job:
    job = _leased(ctx, agent, job_id)
    if job.state in ("released", "blocked", "failed"):
        raise Conflict(f"job already {job.state}")
    if job.state not in ("dispatched", "running", "checking"):
        raise Conflict(f"job is {job.state}")
    data = v.parse(body, RESULT_SPEC)
    outputs = []
    for i, o in enumerate(data["outputs"]):
        where = f"outputs[{i}]"
        content = o.pop("content_b64")
        o["size"] = o.pop("bytes")
        if o["decision"] == "blocked":
            if content is not None:
                raise InvalidInput(f"{where}.content_b64", "a blocked output never leaves "
                                                           "the provider's domain")
            outputs.append(JobOutput(**o, content=None))
            continue
        if content is None or data["state"] != "released":
            raise InvalidInput(f"{where}.content_b64", "required for a released output of a "
                                                       "released run")
        try:
            raw = base64.b64decode(content, validate=True)
        except ValueError:
            raise InvalidInput(f"{where}.content_b64", "must be base64") from None
        if hashlib.sha256(raw).hexdigest() != o["sha256"] or len(raw) != o["size"]:
            raise InvalidInput(f"{where}.sha256", "must match the content")
        outputs.append(JobOutput(**o, content=raw))
    if data["state"] != "failed" or outputs:
        # A run that produced anything must be fully on the record (run.finished).
        for name in ("input_sha256", "runner_image"):
            if data[name] is None:
                raise InvalidInput(name, "required for a run that is not failed or has outputs")
    if data["state"] == "released" and any(o.decision == "blocked" for o in outputs):
        raise InvalidInput("state", "a run with a blocked output is blocked as a whole")
    permit = ctx.session.get(Permit, job.permit_id)
    assert permit is not None
    if data["state"] == "released" and permit.status != "active":
        # Revoked while the job ran: nothing of it is released (fail closed).
        data["state"] = "blocked"
        data["reason"] = f"permit {permit.status} during the run; outputs withheld"
        for o in outputs:
            o.decision, o.content = "blocked", None
            o.reasons = [*o.reasons, "withheld: permit revoked during the run"]
    job.exit_code = data["exit_code"]
    job.rows_read = data["rows_read"]
    job.bytes_read = data["bytes_read"]
    job.input_sha256 = data["input_sha256"]
    job.runner_image = data["runner_image"]
    job.log = data["log"]
    job.outputs = outputs
    if job.started_at is None:
        job.started_at = ctx.now()
    _finish(ctx, f"agent:{agent.id}", job, data["state"], data["reason"])
    return job


def _finish(ctx: Ctx, actor: str, job: Job, state: str, reason: str | None) -> None:
    job.state = state
    job.reason = reason
    job.finished_at = ctx.now()
    job.lease_expires_at = None
    if job.input_sha256 is None:
        ctx.record(f"job.{state}", actor, {"job_id": job.id, "reason": reason})
    else:
        job.ledger_index = ctx.record("run.finished", actor, _run_body(ctx, job))
        for o in job.outputs:
            ctx.record(f"output.{o.decision}", actor, {
                "job_id": job.id, "name": o.name, "sha256": o.sha256, "bytes": o.size,
                "reasons": o.reasons,
            })
    if job.joint_id is not None:
        joint.on_part_finished(ctx, job)


def _run_body(ctx: Ctx, job: Job) -> dict[str, Any]:
    """The data-flow audit record (数据流通审计) plus what ran and what came out."""
    permit = ctx.session.get(Permit, job.permit_id)
    assert permit is not None
    request = ctx.session.get(AccessRequest, permit.request_id)
    assert request is not None
    requester = ctx.session.get(Party, job.requester_id)
    approvers = sorted({it.decided_by or "" for it in request.items
                        if it.dataset_id in job.dataset_ids})
    assert job.started_at is not None
    return {
        "job_id": job.id, "permit_id": job.permit_id, "state": job.state,
        "dataset_ids": job.dataset_ids,
        "audit": {
            "authorizing_system": ctx.authorizing_system,
            "authorizing_operator": ", ".join(approvers),
            "business_system": request.business_system,
            "user": f"{job.requester_id} ({requester.name if requester else '?'})",
            "access_method": f"isolated container run by agent {job.agent_id}, "
                             "network none, permitted columns only",
            "access_time": job.started_at.isoformat(),
            "data_volume": {"rows": job.rows_read or 0, "bytes": job.bytes_read or 0},
        },
        "purpose": request.purpose,
        "script_sha256": job.script_sha256,
        "runner_image": job.runner_image or "",
        "input_sha256": job.input_sha256,
        "exit_code": job.exit_code,
        "outputs": [{"name": o.name, "sha256": o.sha256, "bytes": o.size,
                     "decision": o.decision} for o in job.outputs],
        "reasons": [job.reason] if job.reason else [],
    }
