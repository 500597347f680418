"""Private set intersection jobs: the providers' agents, the controller relaying only.

A PSI job is a joint job (same table, same parts, same lifecycle) whose spec holds ``psi``.
Two providers: the *client* provider's agent intersects its identifiers with the *server*
provider's (compute/psi.py). Three or more: the providers' agents blind each other's sets
round a ring and the *counter* intersects them (compute/psi_ring.py). The agents exchange
blinded messages through the controller (authz/psi_relay.py), which stores and relays
them and never holds a key that opens them. The client's (the counter's) agent releases
the counts and sums, suppressed below the permit's minimum count; that release is the
job's result.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import delete, select

from authz import permits
from authz import validate as v
from authz.context import Ctx
from authz.models import Job, JointJob, Party, PsiChunk, new_id
from authz.specs import PSI_SUBMIT_SPEC as SUBMIT_SPEC
from authz.states import TERMINAL, JobState, JointJobState
from compute.errors import InvalidInput, PolicyViolation
from compute.psi import parse_psi_spec

RELEASE = "psi.json"
NO_CONTEXT = b""  # a PSI job has no homomorphic context: its release is counts


def is_psi(joint: JointJob) -> bool:
    return "psi" in joint.spec


def is_ring(joint: JointJob) -> bool:
    """Three or more providers: the ring protocol (compute/psi_ring.py)."""
    return "ring" in joint.spec


def releasing_provider(joint: JointJob) -> str:
    """The provider whose part releases the counts: the client, or the ring's counter."""
    if is_ring(joint):
        return str(joint.spec["ring"][joint.spec["counter"]])
    return str(joint.spec["client"])


def _datasets(data: dict[str, Any]) -> tuple[list[str], str, str | None, str]:
    """The datasets in ring order, the holder's, the counter's (None: the first other) and
    the field an error about them names. Either request shape, never both."""
    two = data["client_dataset_id"] is not None or data["server_dataset_id"] is not None
    many = any(data[k] is not None for k in ("dataset_ids", "holder_dataset_id",
                                             "counter_dataset_id"))
    if two and many:
        raise InvalidInput("dataset_ids", "send either client_dataset_id and "
                           "server_dataset_id, or dataset_ids and holder_dataset_id")
    if two:
        if data["client_dataset_id"] is None or data["server_dataset_id"] is None:
            raise InvalidInput("server_dataset_id", "required", "client_dataset_id and "
                               "server_dataset_id go together")
        ids = [data["client_dataset_id"], data["server_dataset_id"]]
        return ids, ids[1], ids[0], "server_dataset_id"
    if data["dataset_ids"] is None or data["holder_dataset_id"] is None:
        raise InvalidInput("dataset_ids", "required", "dataset_ids and holder_dataset_id "
                           "are required (or client_dataset_id and server_dataset_id)")
    ids = list(data["dataset_ids"])
    if data["holder_dataset_id"] not in ids:
        raise InvalidInput("holder_dataset_id", "must be one of dataset_ids")
    counter = data["counter_dataset_id"]
    if counter is not None and (counter not in ids or counter == data["holder_dataset_id"]):
        raise InvalidInput("counter_dataset_id", "must be one of dataset_ids other than the "
                           "holder's")
    return ids, data["holder_dataset_id"], counter, "dataset_ids"


def submit(ctx: Ctx, requester: Party, body: object) -> JointJob:
    data = v.parse(body, SUBMIT_SPEC)
    permit, request = permits.requester_permit(ctx, requester, data["permit_id"])
    if request.use_kind != "verification":
        raise PolicyViolation("this permit was not granted for verification (private set "
                              "intersection)")
    if permit.epsilon_budget is not None:
        # The providers chose noise as the protection; an intersection's figures are
        # exact (R7-4, as for scripts in authz/jobs.py).
        raise PolicyViolation("the providers granted a differential-privacy budget: this "
                              "permit takes noised jobs only, and PSI is not noised")
    ids, holder_id, counter_id, field = _datasets(data)
    if set(ids) != set(permit.columns) or len(set(ids)) != len(ids):
        raise InvalidInput(field, "the datasets must be exactly the permit's datasets, each "
                                  "once")
    datasets = permits.covered_datasets(ctx, permit, ids)
    providers = [ds.provider_id for ds in datasets]
    if len(set(providers)) != len(providers):
        raise InvalidInput(field, "the datasets need one provider each")
    holder = datasets[ids.index(holder_id)]
    counter = next(ds for ds in datasets if ds.id != holder.id) if counter_id is None \
        else datasets[ids.index(counter_id)]
    spec = parse_psi_spec(data["spec"], permits.permitted_schema(ctx, permit, [holder.id]))
    for ds in datasets:
        if spec.id_column not in permits.permitted_schema(ctx, permit, [ds.id]):
            raise InvalidInput("spec.id", f"dataset {ds.id} must have the identifier column")
    permits.check_permit(ctx, permit, ids, new_run=True)
    # Parts queued and not yet dispatched are not in runs_used yet (as in authz/joint.py).
    open_jobs = len(list(ctx.session.scalars(select(Job.id).where(
        Job.permit_id == permit.id, Job.state == JobState.QUEUED,
        Job.dispatched_at.is_(None)))))
    if permit.runs_used + open_jobs + len(ids) > permit.max_runs:
        raise PolicyViolation("permit has too few runs left for one part per provider")
    stored: dict[str, Any] = {"psi": data["spec"]}
    # The groups the holder sends one set (setup and response) of each, under its own key.
    stored["groups"] = spec.groups()
    if len(ids) == 2:  # the two-party protocol (compute/psi.py): the holder serves
        stored |= {"client": counter.provider_id, "server": holder.provider_id}
    else:  # the ring (compute/psi_ring.py), in the order the datasets were given
        stored |= {"ring": providers, "holder": providers.index(holder.provider_id),
                   "counter": providers.index(counter.provider_id)}
    joint = JointJob(id=new_id("jnt"), permit_id=permit.id, requester_id=requester.id,
                     spec=stored, public_context=NO_CONTEXT,
                     context_fingerprint=hashlib.sha256(NO_CONTEXT).hexdigest(),
                     min_providers=len(ids))
    ctx.session.add(joint)
    ctx.session.flush()
    script = json.dumps(stored, sort_keys=True).encode()
    digest = hashlib.sha256(script).hexdigest()
    parts = [Job(id=new_id("job"), permit_id=permit.id, requester_id=requester.id,
                 provider_id=ds.provider_id, dataset_ids=[ds.id], kind="psi", script=script,
                 script_sha256=digest, joint_id=joint.id) for ds in datasets]
    ctx.session.add_all(parts)
    ctx.session.flush()
    shape: dict[str, Any] = {"client_dataset_id": counter.id, "server_dataset_id": holder.id} \
        if len(ids) == 2 else {"dataset_ids": ids, "holder_dataset_id": holder.id,
                               "counter_dataset_id": counter.id}
    ctx.record("psi.submitted", requester.id, {
        "joint_id": joint.id, "permit_id": permit.id, **shape, "spec_sha256": digest,
        "parts": [p.id for p in parts]})
    return joint


def task_fields(ctx: Ctx, job: Job) -> dict[str, Any]:
    joint = ctx.session.get(JointJob, job.joint_id)
    assert joint is not None
    if is_ring(joint):
        ring = joint.spec["ring"]
        return {"joint_id": joint.id, "role": "ring", "spec": joint.spec["psi"],
                "ring": {"position": ring.index(job.provider_id), "size": len(ring),
                         "holder": joint.spec["holder"], "counter": joint.spec["counter"]}}
    role = "client" if job.provider_id == joint.spec["client"] else "server"
    return {"joint_id": joint.id, "role": role, "spec": joint.spec["psi"]}


def on_part_finished(ctx: Ctx, joint: JointJob, fail: Any) -> None:
    """Every part in: the client's (the ring counter's) release is the result (the
    messages are dropped)."""
    parts = list(ctx.session.scalars(select(Job).where(Job.joint_id == joint.id)))
    failed = [p for p in parts if p.state in TERMINAL and p.state != JobState.RELEASED]
    if failed:
        drop_messages(ctx, joint)
        fail(ctx, joint, f"part {failed[0].id} {failed[0].state}: {failed[0].reason}")
        return
    if any(p.state != JobState.RELEASED for p in parts):
        return
    client = next(p for p in parts if p.provider_id == releasing_provider(joint))
    out = next((o for o in client.outputs if o.name == RELEASE), None)
    drop_messages(ctx, joint)
    if out is None or out.content is None:
        fail(ctx, joint, f"part {client.id} carries no {RELEASE}")
        return
    joint.aggregate = out.content
    joint.aggregate_sha256 = hashlib.sha256(out.content).hexdigest()
    joint.state = JointJobState.COMBINED
    joint.finished_at = ctx.now()
    joint.ledger_index = ctx.record("joint.combined", "system", {
        "joint_id": joint.id, "kind": "psi", "release_sha256": joint.aggregate_sha256})


def drop_messages(ctx: Ctx, joint: JointJob) -> None:
    """The job ended: its blinded sets (authz/psi_relay.py) are of no further use, and
    nothing keeps them."""
    ctx.session.execute(delete(PsiChunk).where(PsiChunk.joint_id == joint.id))
