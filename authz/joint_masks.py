"""Pairwise-mask keys of a joint job: each provider's agent announces one, all receive all.

The controller relays and records public keys only (compute/masking.py): every announcement
is signed by the announcing agent's registered Ed25519 key over the joint job's id, checked
here, and written to the ledger (``joint.mask_key``), so the key set every provider masked
under is public and auditable. The agents check the signatures again before masking.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select

from authz.context import ROW_LOCK, Ctx
from authz.models import Agent, Job, JointJob
from authz.psi_jobs import is_psi
from authz.states import ACTIVE, JointJobState
from compute.errors import BadSignature, Conflict, Forbidden, InvalidInput, NotFound
from compute.masking import ANNOUNCEMENT_TYPE, verify_announcement

FIELDS = ("type", "job_id", "provider_id", "public_key", "signature")


def leased_part(ctx: Ctx, agent: Agent, job_id: str, *, lock: bool = False,
                psi: bool = False) -> tuple[Job, JointJob]:
    """A part of a running joint job (a PSI job's with ``psi``) leased to ``agent``, and
    its joint job, locked with ``lock`` (two agents adding a key or a message at once
    must not lose one). 404 for anything else, 409 once the joint job has ended."""
    noun = "PSI" if psi else "joint"
    job = ctx.session.get(Job, job_id)
    if job is None or job.agent_id != agent.id or job.joint_id is None:
        raise NotFound(f"no such {noun} part")
    joint = ctx.session.get(JointJob, job.joint_id, with_for_update=ROW_LOCK if lock else None,
                            populate_existing=lock)
    assert joint is not None
    if psi and not is_psi(joint):
        raise NotFound(f"no such {noun} part")
    if joint.state != JointJobState.RUNNING:
        raise Conflict(f"the {noun} job is {joint.state}")
    return job, joint


def announce(ctx: Ctx, agent: Agent, job_id: str, body: object) -> JointJob:
    """Record a part's mask-key announcement (idempotent for the same key)."""
    job, joint = leased_part(ctx, agent, job_id, lock=True)
    if job.state not in ACTIVE:
        raise Conflict(f"job is {job.state}")
    if not isinstance(body, Mapping) or body.get("type") != ANNOUNCEMENT_TYPE:
        raise InvalidInput("type", f"must be {ANNOUNCEMENT_TYPE!r}")
    if agent.public_key is None:
        raise BadSignature("this agent has no registered signing key")
    ann = {k: body.get(k) for k in FIELDS}
    pid = verify_announcement(ann, joint.id, bytes.fromhex(agent.public_key))
    if pid != job.provider_id:
        raise Forbidden("an agent announces the mask key of its own part only")
    existing = next((a for a in joint.mask_keys if a["provider_id"] == pid), None)
    if existing is not None:
        if existing["public_key"] == ann["public_key"]:
            return joint  # a retry after a lost response
        # Peers may already have masked under the first key: a second one would leave
        # masks that never cancel. The part fails instead (the joint job with it).
        raise Conflict("a mask key was already announced for this provider")
    joint.mask_keys = [*joint.mask_keys, ann]  # reassigned: JSON columns track assignment
    ctx.record("joint.mask_key", f"agent:{agent.id}", {
        "joint_id": joint.id, "job_id": job.id, "provider_id": pid,
        "public_key": ann["public_key"]})
    return joint


def key_set(ctx: Ctx, agent: Agent, job_id: str) -> dict[str, Any]:
    """Every provider's announcement once all are in, with the agents' verifying keys."""
    _, joint = leased_part(ctx, agent, job_id)
    parts = list(ctx.session.scalars(select(Job).where(Job.joint_id == joint.id)))
    providers = {p.provider_id for p in parts}
    announced = {a["provider_id"] for a in joint.mask_keys}
    if announced != providers:
        return {"complete": False, "announcements": [], "agent_keys": {}}
    return {"complete": True, "announcements": list(joint.mask_keys),
            "agent_keys": agent_keys_of(ctx, parts)}


def agent_keys_of(ctx: Ctx, parts: Sequence[Job]) -> dict[str, str]:
    """Each part's provider and the signing key of the agent holding the part: what the
    peers verify every signed announcement and vector of the job against."""
    keys: dict[str, str] = {}
    for p in parts:
        peer = ctx.session.get(Agent, p.agent_id) if p.agent_id else None
        if peer is None or peer.public_key is None:
            raise Conflict("a part's agent has no registered signing key")
        keys[p.provider_id] = peer.public_key
    return keys


def may_be_complete(ctx: Ctx, job_id: str) -> bool:
    """Whether the part's joint job may now hold every provider's key, or has ended: a
    long poll's probe between two :func:`key_set` calls (which checks who asks and answers),
    reading two columns and a count instead of loading the job and every part's agent."""
    joint_id = select(Job.joint_id).where(Job.id == job_id).scalar_subquery()
    row = ctx.session.execute(select(JointJob.state, JointJob.mask_keys)
                              .where(JointJob.id == joint_id)).one_or_none()
    if row is None or row.state != JointJobState.RUNNING:
        return True  # key_set answers (or refuses) at once
    parts = ctx.session.scalar(select(func.count()).select_from(Job)
                               .where(Job.joint_id == joint_id))
    return len(row.mask_keys) >= (parts or 0)
