"""Joint statistics across providers: one part per provider domain, combined encrypted.

The requester uploads a public CKKS context (no secret key) and a statistics spec. Each
provider's agent runs the local aggregation in its container, applies the permit's
disclosure check, encrypts under the public context and signs. The controller adds the
ciphertexts once every part is in; only the requester can decrypt the sum. A provider's
own submission is never served to anyone: decrypting it would reveal that provider's
figures.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

import compute.local_aggregate
from authz import agent_keys, lifecycle, people, permits, psi_jobs
from authz import validate as v
from authz.context import ROW_LOCK, Ctx
from authz.models import Agent, Job, JointJob, Party, Permit, new_id
from authz.specs import JOINT_SUBMIT_SPEC as SUBMIT_SPEC
from authz.specs import MAX_CONTEXT_BYTES as MAX_CONTEXT_BYTES
from authz.states import TERMINAL, JobState, JointJobState
from compute import cell_holders
from compute.backend import fingerprint
from compute.dp import PrivacyBudget, record_dp_release
from compute.errors import InvalidInput, NotFound, PolicyViolation, SandboxError
from compute.protocol import combine, default_backend, ledger_record
from compute.spec import parse_spec, spec_from_json

SUBMISSION = "submission.json"


def local_aggregate_script() -> bytes:
    """The container-side aggregation, shipped as the part's job script (stdlib+pandas)."""
    return Path(compute.local_aggregate.__file__).read_bytes()


def submit(ctx: Ctx, requester: Party, body: object, min_providers: int) -> JointJob:
    data = v.parse(body, SUBMIT_SPEC)
    permit, request = permits.requester_permit(ctx, requester, data["permit_id"])
    people.require_named(ctx, permit.id, permit.people)
    if request.use_kind != "joint_statistics":
        raise PolicyViolation("this permit was not granted for joint statistics")
    if set(data["dataset_ids"]) != set(permit.columns):
        # Joint jobs over different subsets of providers could be differenced to recover
        # one provider's figures: every joint job covers exactly the permit's datasets.
        raise InvalidInput("dataset_ids", "must be exactly the datasets of the permit")
    providers: set[str] = set()
    datasets = permits.covered_datasets(ctx, permit, data["dataset_ids"])
    for i, ds in enumerate(datasets):
        if ds.provider_id in providers:
            raise InvalidInput(f"dataset_ids[{i}]", "one dataset per provider")
        providers.add(ds.provider_id)
    if len(providers) < min_providers:
        # With two providers each could subtract its own share from the released sum.
        raise InvalidInput("dataset_ids", f"at least {min_providers} providers are needed")
    spec = parse_spec(data["spec"], permits.permitted_schema(ctx, permit, data["dataset_ids"]))
    if cell_holders.needed(spec.to_json(), min_providers) and \
            cell_holders.layout_size(spec.to_json()) > cell_holders.MAX_CELLS:
        # The cell-holders round carries one word per explicit cell: bounded.
        raise InvalidInput("spec", "too_many_cells",
                           f"more than {cell_holders.MAX_CELLS} explicit cells (bins, "
                           "contingency and group cells) in one joint job")
    try:
        context = base64.b64decode(data["public_context_b64"], validate=True)
    except ValueError:
        raise InvalidInput("public_context_b64", "must be base64") from None
    if fingerprint(context) != data["context_fingerprint"]:
        raise InvalidInput("context_fingerprint", "must be the SHA-256 of the public context")
    try:
        default_backend().load_public(context)  # refuses a context holding a secret key
    except SandboxError as e:
        raise InvalidInput("public_context_b64", str(e)) from None
    permits.check_permit(ctx, permit, data["dataset_ids"], new_run=True)
    if permit.epsilon_budget is not None and spec.dp_epsilon is None:
        raise PolicyViolation("the providers granted a differential-privacy budget: the "
                              "spec must ask for dp")
    if spec.dp_epsilon is not None:
        # Reserved now, under the permit's row lock, so two joint jobs submitted at once
        # cannot both count on the same budget; refunded if the job fails before release.
        permit = ctx.session.get(Permit, permit.id, with_for_update=ROW_LOCK,
                                 populate_existing=True) or permit
        left = (permit.epsilon_budget or 0.0) - permit.epsilon_spent
        if permit.epsilon_budget is None or spec.dp_epsilon > left + 1e-12:
            raise PolicyViolation(f"the permit's differential-privacy budget has {left:g} "
                                  f"epsilon left; the spec asks for {spec.dp_epsilon:g}")
        permit.epsilon_spent += spec.dp_epsilon
    open_jobs = len(list(ctx.session.scalars(select(Job.id).where(
        Job.permit_id == permit.id, Job.state == JobState.QUEUED,
        Job.dispatched_at.is_(None)))))
    if permit.runs_used + open_jobs + len(providers) > permit.max_runs:
        if spec.glm is not None:
            # Each IRLS round is one joint job: the permit's runs are the round cap.
            raise PolicyViolation("round cap reached: the permit has no runs left for "
                                  "another model round (one part per provider each)")
        raise PolicyViolation("permit has too few runs left for one part per provider")
    joint = JointJob(id=new_id("jnt"), permit_id=permit.id, requester_id=requester.id,
                     spec=spec.to_json(), public_context=context,
                     context_fingerprint=data["context_fingerprint"],
                     min_providers=min_providers)
    ctx.session.add(joint)
    ctx.session.flush()  # the parts reference it (a foreign key with no ORM relationship)
    script = local_aggregate_script()
    digest = hashlib.sha256(script).hexdigest()
    parts = []
    for ds in datasets:
        parts.append(Job(id=new_id("job"), permit_id=permit.id, requester_id=requester.id,
                         provider_id=ds.provider_id, dataset_ids=[ds.id], kind="joint",
                         script=script, script_sha256=digest, joint_id=joint.id))
    ctx.session.add_all(parts)
    ctx.session.flush()
    ctx.record("joint.submitted", requester.id, {
        "joint_id": joint.id, "permit_id": permit.id, "dataset_ids": data["dataset_ids"],
        "spec_sha256": hashlib.sha256(json.dumps(joint.spec, sort_keys=True).encode())
        .hexdigest(), "context_fingerprint": joint.context_fingerprint,
        "parts": [p.id for p in parts], "script_sha256": digest,
        "epsilon_reserved": spec.dp_epsilon,
        # A model round's coefficients are what the requester chose to evaluate: on the
        # record, so an auditor can see every point the pooled sums were released at.
        **({"glm_round": spec.glm.to_json()} if spec.glm is not None else {}),
    })
    return joint


def task_fields(ctx: Ctx, job: Job) -> dict[str, Any]:
    joint = ctx.session.get(JointJob, job.joint_id)
    assert joint is not None
    return {"joint_id": joint.id, "spec": joint.spec,
            "public_context_b64": base64.b64encode(joint.public_context).decode(),
            "context_fingerprint": joint.context_fingerprint,
            "min_providers": joint.min_providers}


def on_part_finished(ctx: Ctx, job: Job) -> None:
    """Called in the transaction that records a part's result: combine once all are in."""
    joint = ctx.session.get(JointJob, job.joint_id)
    assert joint is not None
    if joint.state != JointJobState.RUNNING:
        return
    if psi_jobs.is_psi(joint):
        psi_jobs.on_part_finished(ctx, joint, _fail)
        return
    parts = list(ctx.session.scalars(select(Job).where(Job.joint_id == joint.id)))
    failed = [p for p in parts if p.state in TERMINAL and p.state != JobState.RELEASED]
    if failed:
        _fail(ctx, joint, f"part {failed[0].id} {failed[0].state}: {failed[0].reason}")
        return
    if any(p.state != JobState.RELEASED for p in parts):
        return
    submissions, keys = [], {}
    for p in parts:
        sub = next((o for o in p.outputs if o.name == SUBMISSION), None)
        try:
            assert sub is not None and sub.content is not None
            submissions.append(json.loads(sub.content))
        except (AssertionError, ValueError):
            _fail(ctx, joint, f"part {p.id} carries no readable {SUBMISSION}")
            return
        agent = ctx.session.get(Agent, p.agent_id)
        # The key current when the agent reported the part: a replaced key still verifies
        # what it signed before, never what came after.
        key = None if agent is None or p.finished_at is None else \
            agent_keys.key_at(ctx, agent, p.finished_at)
        if key is None:
            _fail(ctx, joint, f"agent of part {p.id} has no registered signing key")
            return
        keys[p.provider_id] = bytes.fromhex(key)
    try:
        aggregate = combine(submissions, joint.public_context, joint.context_fingerprint, keys,
                            joint.min_providers, mask_announcements=joint.mask_keys)
        aggregate = _charge_dp(ctx, joint, parts, aggregate)
    except SandboxError as e:
        _fail(ctx, joint, f"{type(e).__name__}: {e}")
        return
    raw = json.dumps(aggregate, sort_keys=True).encode()
    joint.aggregate = raw
    joint.aggregate_sha256 = aggregate["aggregate_sha256"]
    joint.state = JointJobState.COMBINED
    joint.finished_at = ctx.now()
    joint.ledger_index = ctx.record("joint.combined", "system",
                                    {"joint_id": joint.id, **ledger_record(aggregate)})


def load_context_ahead(ctx: Ctx, joint_id: str) -> None:
    """After a part's report, while parts are still to come: have this controller process
    load the job's public context, so that the last report's combination (the one step on
    the way to the requester that waits for it) finds it in the per-process cache, in
    whichever process takes that report. Only a warm-up: a context that does not load is
    refused by the combination as before."""
    row = ctx.session.execute(select(JointJob.state, JointJob.public_context)
                              .where(JointJob.id == joint_id)).one_or_none()
    if row is None or row.state != JointJobState.RUNNING or not row.public_context:
        return
    with contextlib.suppress(SandboxError):
        default_backend().load_public(row.public_context)


def _charge_dp(ctx: Ctx, joint: JointJob, parts: list[Job], aggregate: dict[str, Any]
               ) -> dict[str, Any]:
    """A noised release charged to the permit's ε budget, with its ``dp`` record.

    Each provider's agent noised its own aggregates before encrypting them (compute/dp.py,
    R7-1); the controller draws no noise, it keeps the account and records the release.
    """
    permit = ctx.session.get(Permit, joint.permit_id, with_for_update=ROW_LOCK,
                             populate_existing=True)
    assert permit is not None
    schema = permits.permitted_schema(ctx, permit, [p.dataset_ids[0] for p in parts])
    spec = spec_from_json(joint.spec, schema)
    if spec.dp_epsilon is None:
        return aggregate
    # The permit was charged when the job was submitted: this budget is that reservation.
    budget = PrivacyBudget(permit.id, spec.dp_epsilon)
    return record_dp_release(aggregate, spec, [budget], min_cell_count=permit.min_cell_count)


def _fail(ctx: Ctx, joint: JointJob, reason: str) -> None:
    joint.state = JointJobState.FAILED
    joint.reason = reason[:2000]
    joint.finished_at = ctx.now()
    # Nothing was released, so the ε reserved at submission is given back.
    refund = float((joint.spec.get("dp") or {}).get("epsilon") or 0.0)
    if refund:
        permit = ctx.session.get(Permit, joint.permit_id, with_for_update=ROW_LOCK,
                                 populate_existing=True)
        assert permit is not None
        permit.epsilon_spent = max(0.0, permit.epsilon_spent - refund)
    ctx.record("joint.failed", "system", {"joint_id": joint.id, "reason": joint.reason,
                                          "epsilon_refunded": refund or None})
    # The other parts end with it: a part not yet dispatched (its provider's agent away)
    # never runs later and uses no run; one running stops at its next call (its mask-key
    # wait is refused at once, 409). Runs already dispatched stay used: they read data.
    from authz.lifecycle import end_job  # lifecycle imports this module

    for part in ctx.session.scalars(select(Job).where(Job.joint_id == joint.id,
                                                      Job.state.not_in(TERMINAL))):
        if part.state != JobState.AWAITING_REVIEW:
            end_job(ctx, "system", part, JobState.CANCELLED, "the joint job failed")


def get_for_requester(ctx: Ctx, requester: Party, joint_id: str) -> JointJob:
    joint = ctx.session.get(JointJob, joint_id)
    if joint is None or joint.requester_id != requester.id:
        raise NotFound("no such joint job")
    return joint


def state_of(ctx: Ctx, joint_id: str) -> JointJobState | None:
    """The job's state alone: what a long poll's probe needs, without loading the job's
    public context and unsealing its spec each time (see :func:`get_for_requester`, which
    the poll called first, for who may see it)."""
    return ctx.session.scalar(select(JointJob.state).where(JointJob.id == joint_id))


def to_json(ctx: Ctx, joint: JointJob) -> dict[str, Any]:
    parts = ctx.session.scalars(select(Job).where(Job.joint_id == joint.id).order_by(Job.id))
    return {
        "id": joint.id, "permit_id": joint.permit_id, "state": joint.state,
        "reason": joint.reason, "spec": joint.spec,
        "context_fingerprint": joint.context_fingerprint,
        # Rounded as a job's own view rounds it for anyone but its provider (authz/jobs.py;
        # the requester is the one who sees this): a provider's exact size less the
        # released count of records would be the number its check withdrew.
        "parts": [{"job_id": p.id, "provider_id": p.provider_id, "dataset_ids": p.dataset_ids,
                   "state": p.state,
                   "rows_read": None if p.rows_read is None
                   else lifecycle.rounded(p.rows_read, lifecycle.ROW_BASE)} for p in parts],
        "aggregate": json.loads(joint.aggregate) if joint.aggregate else None,
        "ledger_index": joint.ledger_index,
        "submitted_at": joint.submitted_at.isoformat(),
    }
