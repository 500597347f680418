"""The controller's relay of a PSI job's blinded messages between the providers' agents.

Two providers (compute/psi.py): ``request`` from the client, ``setup`` and one
``response.<group>`` per group of the spec from the server; each part reads the other's.
Three or more (compute/psi_ring.py): ``ring.<origin>.<hop>`` is the set that started at
ring position ``origin`` after ``hop`` providers other than its origin blinded it; the
hop-th position of the origin's ``route`` sends it (the origin itself at hop 0), and the
next one reads it, the counter the last hop's. The controller checks who sends and who
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

from authz.context import ROW_LOCK, Ctx
from authz.models import Agent, Job, JointJob
from authz.psi_jobs import is_psi, is_ring
from authz.states import ACTIVE, JointJobState
from compute.errors import Conflict, Forbidden, InvalidInput, NotFound
from compute.psi_ring import MAX_MESSAGE_BYTES, OWN_SET, route, set_sizes, unpack

MESSAGES = {"request": "client", "setup": "server"}
RESPONSE = "response."  # + a group of the spec: the server's answer under that group's key
RING_RX = re.compile(r"ring\.(0|[1-9][0-9]?)\.(0|[1-9][0-9]?)")


def _part(ctx: Ctx, agent: Agent, job_id: str, *, lock: bool = False) -> tuple[Job, JointJob]:
    job = ctx.session.get(Job, job_id)
    if job is None or job.agent_id != agent.id or job.joint_id is None:
        raise NotFound("no such PSI part")
    joint = ctx.session.get(JointJob, job.joint_id, with_for_update=ROW_LOCK if lock else None,
                            populate_existing=lock)
    assert joint is not None
    if not is_psi(joint):
        raise NotFound("no such PSI part")
    if joint.state != JointJobState.RUNNING:
        raise Conflict(f"the PSI job is {joint.state}")
    return job, joint


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


def _check_ring_message(joint: JointJob, name: str, raw: bytes) -> None:
    """A ring message holds the sets it should, each the size it had at the previous hop
    (a non-holder's every per-group version the size of its set)."""
    origin, hop = _ring_hop(joint, name)
    sets = unpack(raw)
    holder, last = joint.spec["holder"], hop == len(joint.spec["ring"]) - 1
    per_group = origin == holder or last
    want = set(joint.spec["groups"]) if per_group else {OWN_SET}
    if set(sets) != want:
        raise InvalidInput("data_b64", "psi_ring_sets", "the message does not hold the sets "
                           "its origin sends")
    sizes = set_sizes(sets)
    if hop == 0 and origin == holder and len(set(sizes.values())) != 1:
        raise InvalidInput("data_b64", "psi_ring_layout", "the holder's groups are not each "
                           "padded to the size of its identifier set")
    if hop > 0:
        prev = joint.psi_messages.get(f"ring.{origin}.{hop - 1}")
        if prev is None:
            raise Conflict("the previous hop of this set has not been sent")
        before = set_sizes(unpack(base64.b64decode(prev)))
        if origin != holder and last:
            before = dict.fromkeys(want, before.get(OWN_SET, -1))
        if before != sizes:
            raise InvalidInput("data_b64", "psi_ring_sizes", "a blinding hop keeps every "
                               "set's size")


def post_message(ctx: Ctx, agent: Agent, job_id: str, name: str, body: object) -> None:
    """Store one blinded protocol message from the part whose role sends it (once)."""
    job, joint = _part(ctx, agent, job_id, lock=True)
    sender = _sender(joint, name)
    if job.state not in ACTIVE:
        raise Conflict(f"job is {job.state}")
    if sender != job.provider_id:
        raise Forbidden(f"the {name} message is another part's to send")
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
    if is_ring(joint):
        _check_ring_message(joint, name, raw)
    messages[name] = data
    joint.psi_messages = messages
    ctx.record("psi.message", f"agent:{agent.id}", {
        "joint_id": joint.id, "job_id": job.id, "message": name, "bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest()})


def get_message(ctx: Ctx, agent: Agent, job_id: str, name: str) -> dict[str, Any]:
    """Another part's message for this part once it was sent (``ready`` false until then)."""
    job, joint = _part(ctx, agent, job_id)
    if _reader(joint, name) != job.provider_id:
        raise Forbidden("a part reads only the messages addressed to it")
    data = joint.psi_messages.get(name)
    return {"ready": data is not None, "data_b64": data}
