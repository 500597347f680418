"""The controller's relay of a PSI job's blinded messages between the providers' agents.

Two providers (compute/psi.py): ``request`` from the client, ``setup`` and one
``response.<group>`` per group of the spec from the server; each part reads the other's.
Three or more (compute/psi_ring.py): ``ring.<origin>.<hop>`` is the set that started at
ring position ``origin`` after ``hop`` providers other than its origin blinded it; the
hop-th position of the origin's ``route`` sends it (the origin itself at hop 0), and the
next one reads it, the counter the last hop's. A message travels in chunks of at most
``CHUNK_BYTES`` (``chunk`` i of ``chunks``), stored as they come (authz.models.PsiChunk);
it counts as sent, and is checked and recorded, once its last chunk is in. The controller
checks who sends and who
reads each message, that a ring message is well formed and names the sets it should (a
non-holder's ``ids``, or once the holder re-blinded it, one version per group; the
holder's groups), that the holder's groups all have one size (each padded on its own to its
identifier count), and that every set keeps its size from hop to hop (each per-group version
the size of the set it came from); it stores a message only while the job runs and records
its size and SHA-256 in the ledger, never its content. It holds no key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any

from sqlalchemy import func, select

from authz import validate as v
from authz.context import Ctx
from authz.joint_masks import leased_part
from authz.models import Agent, JointJob, PsiChunk
from authz.psi_jobs import is_ring
from authz.specs import PSI_CHUNK_SPEC as CHUNK_SPEC
from authz.states import ACTIVE
from authz.wire import PSI_CHUNK_BYTES as CHUNK_BYTES
from compute.errors import Conflict, Forbidden, InvalidInput, NotFound
from compute.psi_ring import OWN_SET, layout_sizes, route

MESSAGES = {"request": "client", "setup": "server"}
RESPONSE = "response."  # + a group of the spec: the server's answer under that group's key
RING_RX = re.compile(r"ring\.(0|[1-9][0-9]?)\.(0|[1-9][0-9]?)")


def _ring_hop(joint: JointJob, name: str) -> tuple[int, int]:
    """(origin, hop) of a ring message name valid for this job (404 otherwise)."""
    m = RING_RX.fullmatch(name)
    n = len(joint.spec["ring"])
    if m is None or int(m[1]) >= n or int(m[2]) >= n:
        raise NotFound("no such PSI message")
    return int(m[1]), int(m[2])


def _ring_route(joint: JointJob, origin: int) -> list[int]:
    return route(len(joint.spec["ring"]), joint.spec["holder"], origin)


def _two_party_role(joint: JointJob, name: str) -> str:
    """The role (client or server) that sends two-party message ``name``."""
    if name.startswith(RESPONSE) and name[len(RESPONSE):] in joint.spec.get("groups", ()):
        return "server"
    if name not in MESSAGES:
        raise NotFound("no such PSI message")
    return MESSAGES[name]


def _sender(joint: JointJob, name: str) -> str:
    """The provider whose part sends message ``name``."""
    if is_ring(joint):
        origin, hop = _ring_hop(joint, name)
        at = origin if hop == 0 else _ring_route(joint, origin)[hop - 1]
        return str(joint.spec["ring"][at])
    return str(joint.spec[_two_party_role(joint, name)])


def _reader(joint: JointJob, name: str) -> str:
    """The provider whose part reads message ``name``."""
    if is_ring(joint):
        ring = joint.spec["ring"]
        origin, hop = _ring_hop(joint, name)
        last = hop == len(ring) - 1
        return str(ring[joint.spec["counter"] if last else _ring_route(joint, origin)[hop]])
    role = _two_party_role(joint, name)
    return str(joint.spec["server" if role == "client" else "client"])


def _check_ring_message(ctx: Ctx, joint: JointJob, name: str, raw: bytes) -> None:
    """A ring message holds the sets it should, each the size it had at the previous hop
    (a non-holder's every per-group version the size of its set)."""
    origin, hop = _ring_hop(joint, name)
    sizes = layout_sizes(raw)
    holder, last = joint.spec["holder"], hop == len(joint.spec["ring"]) - 1
    per_group = origin == holder or last
    want = set(joint.spec["groups"]) if per_group else {OWN_SET}
    if set(sizes) != want:
        raise InvalidInput("data_b64", "psi_ring_sets", "the message does not hold the sets "
                           "its origin sends")
    if hop == 0 and origin == holder and len(set(sizes.values())) != 1:
        raise InvalidInput("data_b64", "psi_ring_layout", "the holder's groups are not each "
                           "padded to the size of its identifier set")
    if hop > 0:
        prev = message(ctx, joint, f"ring.{origin}.{hop - 1}")
        if prev is None:
            raise Conflict("the previous hop of this set has not been sent")
        before = layout_sizes(prev)
        if origin != holder and last:
            before = dict.fromkeys(want, before.get(OWN_SET, -1))
        if before != sizes:
            raise InvalidInput("data_b64", "psi_ring_sizes", "a blinding hop keeps every "
                               "set's size")


def _chunks(ctx: Ctx, joint: JointJob, name: str) -> list[PsiChunk]:
    return list(ctx.session.scalars(select(PsiChunk).where(
        PsiChunk.joint_id == joint.id, PsiChunk.name == name).order_by(PsiChunk.seq)))


def message(ctx: Ctx, joint: JointJob, name: str) -> bytes | None:
    """Message ``name`` whole, or None until its last chunk is in."""
    held = _chunks(ctx, joint, name)
    if not held or len(held) != held[0].chunks:
        return None
    return b"".join(c.data for c in held)


def post_message(ctx: Ctx, agent: Agent, job_id: str, name: str, body: object) -> None:
    """Store one chunk of a blinded protocol message from the part whose role sends it
    (each chunk once); with its last chunk the message is checked whole and recorded."""
    job, joint = leased_part(ctx, agent, job_id, lock=True, psi=True)
    sender = _sender(joint, name)
    if job.state not in ACTIVE:
        raise Conflict(f"job is {job.state}")
    if sender != job.provider_id:
        raise Forbidden(f"the {name} message is another part's to send")
    data = v.parse(body, CHUNK_SPEC)
    seq, total = data["chunk"], data["chunks"]
    if seq >= total:
        raise InvalidInput("chunk", "must be below chunks")
    try:
        raw = base64.b64decode(data["data_b64"], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("data_b64", "must be base64") from None
    if not raw or len(raw) > CHUNK_BYTES:
        raise InvalidInput("data_b64", f"must hold 1 to {CHUNK_BYTES} bytes (one chunk)")
    where = (PsiChunk.joint_id == joint.id, PsiChunk.name == name)
    # Which chunks are in, without their data: a message may have 64 chunks of 4 MiB.
    held = {seq: n for seq, n in ctx.session.execute(
        select(PsiChunk.seq, PsiChunk.chunks).where(*where))}
    if held and set(held.values()) != {total}:
        raise Conflict(f"the {name} message was begun in another number of chunks")
    if seq in held:
        same = ctx.session.scalar(select(PsiChunk.data).where(*where, PsiChunk.seq == seq))
        if same is not None and bytes(same) == raw:
            return  # a retry after a lost response
        raise Conflict(f"chunk {seq} of the {name} message was already sent")
    if len(held) + 1 == total:
        # The last chunk: the message is whole, and is checked and recorded as one.
        parts = {i: bytes(d) for i, d in ctx.session.execute(
            select(PsiChunk.seq, PsiChunk.data).where(*where))}
        parts[seq] = raw
        whole = b"".join(parts[i] for i in range(total))
        if is_ring(joint):
            _check_ring_message(ctx, joint, name, whole)
        ctx.record("psi.message", f"agent:{agent.id}", {
            "joint_id": joint.id, "job_id": job.id, "message": name, "bytes": len(whole),
            "sha256": hashlib.sha256(whole).hexdigest()})
    ctx.session.add(PsiChunk(joint_id=joint.id, name=name, seq=seq, chunks=total, data=raw))


def get_message(ctx: Ctx, agent: Agent, job_id: str, name: str, chunk: int = 0
                ) -> dict[str, Any]:
    """Chunk ``chunk`` of another part's message for this part, once the whole message was
    sent (``ready`` false until then), and how many chunks it has."""
    job, joint = leased_part(ctx, agent, job_id, psi=True)
    if _reader(joint, name) != job.provider_id:
        raise Forbidden("a part reads only the messages addressed to it")
    held = ctx.session.execute(select(func.count(), func.max(PsiChunk.chunks)).where(
        PsiChunk.joint_id == joint.id, PsiChunk.name == name)).one()
    if held[0] == 0 or held[0] != held[1]:
        return {"ready": False, "chunks": None, "data_b64": None}
    if not 0 <= chunk < held[1]:
        raise InvalidInput("chunk", "must be below the message's number of chunks")
    data = ctx.session.scalar(select(PsiChunk.data).where(
        PsiChunk.joint_id == joint.id, PsiChunk.name == name, PsiChunk.seq == chunk))
    assert data is not None
    return {"ready": True, "chunks": held[1],
            "data_b64": base64.b64encode(bytes(data)).decode()}

