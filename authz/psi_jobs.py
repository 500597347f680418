"""Private set intersection jobs: two providers' agents, the controller relaying only.

A PSI job is a joint job (same table, same parts, same lifecycle) whose spec holds ``psi``:
the *client* provider's agent intersects its identifiers with the *server* provider's
(compute/psi.py). The agents exchange blinded messages through the controller
(``request`` from the client; ``setup`` and ``response`` from the server), which stores
and relays them and never holds a key that opens them. The client's agent releases the
counts and sums, suppressed below the permit's minimum count; that release is the job's
result.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from sqlalchemy import select

from authz import permits
from authz import validate as v
from authz.context import Ctx
from authz.models import Agent, Job, JointJob, Party, new_id
from authz.specs import PSI_SUBMIT_SPEC as SUBMIT_SPEC
from authz.states import ACTIVE, TERMINAL, JobState, JointJobState
from compute.errors import Conflict, Forbidden, InvalidInput, NotFound, PolicyViolation
from compute.psi import parse_psi_spec

RELEASE = "psi.json"
MESSAGES = {"request": "client", "setup": "server", "response": "server"}
MAX_MESSAGE_BYTES = 12 * 1024 * 1024
NO_CONTEXT = b""  # a PSI job has no homomorphic context: its release is counts


def is_psi(joint: JointJob) -> bool:
    return "psi" in joint.spec


def submit(ctx: Ctx, requester: Party, body: object) -> JointJob:
    data = v.parse(body, SUBMIT_SPEC)
    permit, request = permits.requester_permit(ctx, requester, data["permit_id"])
    if request.use_kind != "verification":
        raise PolicyViolation("this permit was not granted for verification (private set "
                              "intersection)")
    ids = [data["client_dataset_id"], data["server_dataset_id"]]
    if set(ids) != set(permit.columns) or len(set(ids)) != 2:
        raise InvalidInput("server_dataset_id", "the two datasets must be exactly the "
                                                "permit's datasets")
    client_ds, server_ds = permits.covered_datasets(ctx, permit, ids)
    if client_ds.provider_id == server_ds.provider_id:
        raise InvalidInput("server_dataset_id", "the two datasets need two providers")
    spec = parse_psi_spec(data["spec"], permits.permitted_schema(ctx, permit, [server_ds.id]))
    if spec.id_column not in permits.permitted_schema(ctx, permit, [client_ds.id]):
        raise InvalidInput("spec.id", "the client dataset must have the identifier column")
    permits.check_permit(ctx, permit, ids, new_run=True)
    if permit.runs_used + 2 > permit.max_runs:
        raise PolicyViolation("permit has too few runs left for one part per provider")
    stored = {"psi": data["spec"], "client": client_ds.provider_id,
              "server": server_ds.provider_id}
    joint = JointJob(id=new_id("jnt"), permit_id=permit.id, requester_id=requester.id,
                     spec=stored, public_context=NO_CONTEXT,
                     context_fingerprint=hashlib.sha256(NO_CONTEXT).hexdigest(),
                     min_providers=2)
    ctx.session.add(joint)
    ctx.session.flush()
    script = json.dumps(stored, sort_keys=True).encode()
    digest = hashlib.sha256(script).hexdigest()
    parts = [Job(id=new_id("job"), permit_id=permit.id, requester_id=requester.id,
                 provider_id=ds.provider_id, dataset_ids=[ds.id], kind="psi", script=script,
                 script_sha256=digest, joint_id=joint.id) for ds in (client_ds, server_ds)]
    ctx.session.add_all(parts)
    ctx.session.flush()
    ctx.record("psi.submitted", requester.id, {
        "joint_id": joint.id, "permit_id": permit.id, "client_dataset_id": client_ds.id,
        "server_dataset_id": server_ds.id, "spec_sha256": digest,
        "parts": [p.id for p in parts]})
    return joint


def task_fields(ctx: Ctx, job: Job) -> dict[str, Any]:
    joint = ctx.session.get(JointJob, job.joint_id)
    assert joint is not None
    role = "client" if job.provider_id == joint.spec["client"] else "server"
    return {"joint_id": joint.id, "role": role, "spec": joint.spec["psi"]}


def _part(ctx: Ctx, agent: Agent, job_id: str, *, lock: bool = False) -> tuple[Job, JointJob]:
    job = ctx.session.get(Job, job_id)
    if job is None or job.agent_id != agent.id or job.joint_id is None:
        raise NotFound("no such PSI part")
    joint = ctx.session.get(JointJob, job.joint_id, with_for_update=lock,
                            populate_existing=lock)
    assert joint is not None
    if not is_psi(joint):
        raise NotFound("no such PSI part")
    if joint.state != JointJobState.RUNNING:
        raise Conflict(f"the PSI job is {joint.state}")
    return job, joint


def post_message(ctx: Ctx, agent: Agent, job_id: str, name: str, body: object) -> None:
    """Store one blinded protocol message from the part whose role sends it (once)."""
    job, joint = _part(ctx, agent, job_id, lock=True)
    if name not in MESSAGES:
        raise NotFound("no such PSI message")
    if job.state not in ACTIVE:
        raise Conflict(f"job is {job.state}")
    if joint.spec[MESSAGES[name]] != job.provider_id:
        raise Forbidden(f"the {name} message is the {MESSAGES[name]}'s to send")
    data = body.get("data_b64") if isinstance(body, dict) else None
    try:
        assert isinstance(data, str) and len(data) <= MAX_MESSAGE_BYTES * 4 // 3 + 4
        raw = base64.b64decode(data, validate=True)
    except (AssertionError, binascii.Error, ValueError):
        raise InvalidInput("data_b64", "must be base64, at most 12 MiB") from None
    messages = dict(joint.psi_messages)
    if name in messages:
        if messages[name] == data:
            return  # a retry after a lost response
        raise Conflict(f"the {name} message was already sent")
    messages[name] = data
    joint.psi_messages = messages
    ctx.record("psi.message", f"agent:{agent.id}", {
        "joint_id": joint.id, "job_id": job.id, "message": name, "bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest()})


def get_message(ctx: Ctx, agent: Agent, job_id: str, name: str) -> dict[str, Any]:
    """The other part's message once it was sent (``ready`` false until then)."""
    job, joint = _part(ctx, agent, job_id)
    if name not in MESSAGES:
        raise NotFound("no such PSI message")
    if joint.spec[MESSAGES[name]] == job.provider_id:
        raise Forbidden("a part reads the other part's messages only")
    data = joint.psi_messages.get(name)
    return {"ready": data is not None, "data_b64": data}


def on_part_finished(ctx: Ctx, joint: JointJob, fail: Any) -> None:
    """Both parts in: the client's release is the result (the messages are dropped)."""
    parts = list(ctx.session.scalars(select(Job).where(Job.joint_id == joint.id)))
    failed = [p for p in parts if p.state in TERMINAL and p.state != JobState.RELEASED]
    if failed:
        joint.psi_messages = {}
        fail(ctx, joint, f"part {failed[0].id} {failed[0].state}: {failed[0].reason}")
        return
    if any(p.state != JobState.RELEASED for p in parts):
        return
    client = next(p for p in parts if p.provider_id == joint.spec["client"])
    out = next((o for o in client.outputs if o.name == RELEASE), None)
    if out is None or out.content is None:
        fail(ctx, joint, f"part {client.id} carries no {RELEASE}")
        return
    joint.aggregate = out.content
    joint.aggregate_sha256 = hashlib.sha256(out.content).hexdigest()
    joint.psi_messages = {}  # blinded sets are of no further use; nothing keeps them
    joint.state = JointJobState.COMBINED
    joint.finished_at = ctx.now()
    joint.ledger_index = ctx.record("joint.combined", "system", {
        "joint_id": joint.id, "kind": "psi", "release_sha256": joint.aggregate_sha256})
