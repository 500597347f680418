"""Cell-holders rounds of a joint job: the controller relays the providers' signed, masked
per-cell indicator vectors (compute/cell_holders.py) and decides nothing.

Each agent publishes one vector per round; once every provider's vector of a round is in,
every agent fetches them all, verifies every signature itself and adds them (the masks
cancel), so each provider computes the same per-cell holder counts. The controller checks
what it can without the masks -- the part, the signature, the length the spec fixes, the
round -- keeps one vector per provider and round (a second, different one is refused: peers
may already have added the first), and records each complete round in the ledger by the
SHA-256 of its vector set, never a value. It can delay or drop a round (the parts then
fail: nothing is submitted) but cannot alter one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from authz import joint_masks, wire
from authz.context import Ctx
from authz.joint_masks import leased_part
from authz.models import Agent, Job, JointJob
from authz.states import ACTIVE, JointJobState
from compute import cell_holders
from compute.errors import BadSignature, Conflict, Forbidden, InvalidInput


def _providers(ctx: Ctx, joint: JointJob) -> list[Job]:
    return list(ctx.session.scalars(select(Job).where(Job.joint_id == joint.id)))


def _round_of(joint: JointJob, rnd: int) -> list[dict[str, Any]]:
    return [v for v in joint.cell_holders if v["round"] == rnd]


def publish(ctx: Ctx, agent: Agent, job_id: str, body: object) -> tuple[JointJob, int]:
    """Record a part's vector of one round (idempotent for the same vector); its round."""
    vec = wire.parse(wire.CellHoldersVector, body)
    job, joint = leased_part(ctx, agent, job_id, lock=True)
    if job.state not in ACTIVE:
        raise Conflict(f"job is {job.state}")
    if agent.public_key is None:
        raise BadSignature("this agent has no registered signing key")
    if not cell_holders.needed(joint.spec, joint.min_providers):
        raise Conflict("this joint job has no cell-holders round")
    parts = _providers(ctx, joint)
    if vec.round > 0 and len(_round_of(joint, vec.round - 1)) < len(parts):
        raise InvalidInput("round", "sequence", "round: the previous round is not complete")
    size = cell_holders.layout_size(joint.spec)
    data = wire.dump(vec)
    pid, _ = cell_holders.verify_vector(data, joint.id, vec.round, size,
                                        bytes.fromhex(agent.public_key))
    if pid != job.provider_id:
        raise Forbidden("an agent publishes the vectors of its own part only")
    existing = next((v for v in _round_of(joint, vec.round) if v["provider_id"] == pid), None)
    if existing is not None:
        if existing == data:
            return joint, vec.round  # a retry after a lost response
        raise Conflict("a different cell-holders vector was already published for this "
                       "provider and round")
    joint.cell_holders = [*joint.cell_holders, data]  # reassigned: JSON columns track it
    done = _round_of(joint, vec.round)
    if len(done) == len(parts):
        ctx.record("joint.cell_holders", f"agent:{agent.id}", {
            "joint_id": joint.id, "round": vec.round, "providers": len(done),
            "vectors_sha256": cell_holders.vectors_digest(done)})
    return joint, vec.round


def round_set(ctx: Ctx, agent: Agent, job_id: str, rnd: int) -> dict[str, Any]:
    """Every provider's vector of round ``rnd`` once all are in, with the agents' keys."""
    _, joint = leased_part(ctx, agent, job_id)
    parts = _providers(ctx, joint)
    vectors = _round_of(joint, rnd)
    if len(vectors) < len(parts):
        return {"complete": False, "vectors": [], "agent_keys": {}}
    return {"complete": True, "vectors": vectors,
            "agent_keys": joint_masks.agent_keys_of(ctx, parts)}


def may_be_complete(ctx: Ctx, job_id: str, rnd: int) -> bool:
    """A long poll's cheap probe between two :func:`round_set` calls."""
    joint_id = select(Job.joint_id).where(Job.id == job_id).scalar_subquery()
    row = ctx.session.execute(select(JointJob.state, JointJob.cell_holders)
                              .where(JointJob.id == joint_id)).one_or_none()
    if row is None or row.state != JointJobState.RUNNING:
        return True
    parts = ctx.session.scalar(select(func.count()).select_from(Job)
                               .where(Job.joint_id == joint_id))
    return sum(1 for v in row.cell_holders if v["round"] == rnd) >= (parts or 0)
