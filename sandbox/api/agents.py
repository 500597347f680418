"""The agent API: agents pull tasks and report verdicts. Agents are never called into."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint, current_app, request

from authz import (
    agent_health,
    catalog,
    joint,
    joint_cell_holders,
    joint_masks,
    psi_relay,
    runs,
    wire,
)
from authz.models import Dataset
from authz.parties import agent_provider_ids
from compute.errors import InvalidInput, NotFound
from sandbox import auth, db
from sandbox.api.args import int_arg
from sandbox.waiting import wait_seconds

R = TypeVar("R")
bp = Blueprint("agents", __name__, url_prefix="/api/v1/agent")
CLAIM_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: How often a held joint wait (mask keys, a cell-holders round) looks again when no
#: wake-up came (sandbox.wakeup: one may be lost). Short: every part of the job waits on
#: it, and a probe reads two columns and a count; it lasts only while the set is
#: incomplete, one poll per running part.
MASK_KEYS_PROBE_S = 0.05
TASK_PROBE_S = 0.25


@bp.get("/me")
@auth.agent_only
def me() -> dict[str, Any]:
    """The agent's identity and the providers it serves (it checks its own config)."""
    agent = auth.agent()
    return wire.dump(wire.AgentIdentity(id=agent.id, name=agent.name,
                                        providers=tuple(sorted(agent_provider_ids(agent)))))


def _wait_s() -> float:
    return wait_seconds(float(current_app.config["AGENT_POLL_WAIT_S"]))


def _held_until_complete(load: Callable[[], dict[str, Any]],
                         may_be_complete: Callable[[], bool]) -> dict[str, Any]:
    """A joint long poll (``?wait=<s>``): ``load()`` once it says ``complete``, or when the
    wait is over. Woken by a commit in any controller process (sandbox.wakeup); between
    wake-ups it probes the cheap ``may_be_complete`` every MASK_KEYS_PROBE_S."""
    deadline = time.monotonic() + _wait_s()
    signal = db.joint_signal()
    while True:
        seen = signal.generation()  # before the read: a commit after it is not missed
        got = load()
        if got["complete"] or deadline - time.monotonic() <= 0:
            return got
        complete = False
        while not complete and (remaining := deadline - time.monotonic()) > 0:
            signal.wait(min(MASK_KEYS_PROBE_S, remaining), seen)
            seen = signal.generation()
            db.session().rollback()  # the next probe reads a fresh snapshot
            complete = may_be_complete()


@bp.post("/tasks/next")
@auth.agent_only
def next_task() -> tuple[dict[str, Any], int]:
    wait = _wait_s()
    claim_key = request.headers.get("Idempotency-Key")
    if claim_key is not None and not CLAIM_KEY.fullmatch(claim_key):
        raise InvalidInput("Idempotency-Key", "must be 1-64 characters [A-Za-z0-9_-]")
    # The body, when the agent sends one, is its status (an agent of an earlier release
    # sends none, or an empty object): recorded for the operator's view of agent health.
    sent = auth.body() if request.content_length else {}
    status = wire.parse(wire.AgentStatus, sent) if sent != {} else None
    agent_health.note_seen(db.ctx(), auth.agent(), status)
    deadline = time.monotonic() + max(wait, 0.0)
    agent_id = auth.agent().id
    probe = True  # the first probe always writes: a retried claim, expired leases
    signal = db.work_signal()
    seen = signal.generation()  # before the probe: a commit after it is not missed
    while True:
        if probe:
            task = runs.next_task(db.ctx(), auth.agent(), claim_key)
            db.commit()
            if task is not None:
                return {"task": wire.dump(task)}, 200
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return {"task": None}, 200
        # Woken at once by a commit in any controller process (sandbox.wakeup); the probe
        # every TASK_PROBE_S only finds work whose wake-up was lost.
        signal.wait(min(TASK_PROBE_S, remaining), seen)
        seen = signal.generation()
        with db.services().readers() as readers:
            probe = runs.may_have_task(readers, agent_id, db.ctx().now())


@bp.post("/datasets/<dataset_id>/schema")
@auth.agent_only
def schema_verdict(dataset_id: str) -> dict[str, Any]:
    agent = auth.agent()
    ds = db.session().get(Dataset, dataset_id)
    if ds is None or ds.provider_id not in agent_provider_ids(agent):
        raise NotFound("no such dataset")
    verdict = wire.parse(wire.SchemaVerdict, auth.body())
    catalog.record_schema_check(db.ctx(), f"agent:{agent.id}", ds, verdict)
    db.commit()
    return {"status": ds.status}


@bp.get("/jobs/<job_id>")
@auth.agent_only
def leased(job_id: str) -> dict[str, Any]:
    return wire.dump(runs.leased_state(db.ctx(), auth.agent(), job_id))


@bp.post("/jobs/<job_id>/started")
@auth.agent_only
def started(job_id: str) -> dict[str, Any]:
    notice = wire.parse(wire.RunStarted, auth.body())
    job = runs.mark_started(db.ctx(), auth.agent(), job_id, notice)
    if notice.mask_key is None:
        db.commit()
        return {"state": job.state}
    # The last part to start completes the key set: it gets the set with its answer (read
    # in this transaction, what a GET of mask-keys would answer after it) rather than
    # asking again, one round trip less for the part every other part waits for.
    keys = joint_masks.key_set(db.ctx(), auth.agent(), job_id)
    db.commit()
    db.joint_signal().notify()  # peers waiting for the key set look again
    answer: dict[str, Any] = {"state": job.state, "announced": True}
    if keys["complete"]:
        answer["key_set"] = keys
    return answer


@bp.post("/jobs/<job_id>/checking")
@auth.agent_only
def checking(job_id: str) -> dict[str, Any]:
    job = runs.mark_checking(db.ctx(), auth.agent(), job_id)
    db.commit()
    return {"state": job.state}


def _reading_first(view: Callable[..., R]) -> Callable[..., R]:
    """Authenticate through the read-only engine (the view then calls db.use_writer)."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> R:
        db.use_reader()
        return view(*args, **kwargs)

    return wrapped


@bp.post("/jobs/<job_id>/result")
@_reading_first
@auth.agent_only
def result(job_id: str) -> dict[str, Any]:
    # The report is read before the job's transaction starts: on SQLite a writing
    # transaction holds the write lock from its first statement, and the parts of a joint
    # job report at once, each with ~1.2 MB of base64 to parse, decode and hash.
    read = runs.read_report(auth.body())
    ctx = db.use_writer()
    job = runs.finish(ctx, auth.agent_again(), job_id, read)
    db.commit()
    if job.joint_id is not None:
        db.joint_signal().notify()  # combined or failed: the long polls look again
        # Not the last part: the combination may come to this process.
        joint.load_context_ahead(db.ctx(), job.joint_id)
    return {"state": job.state, "ledger_index": job.ledger_index}


@bp.post("/jobs/<job_id>/mask-key")
@auth.agent_only
def mask_key(job_id: str) -> dict[str, Any]:
    """A joint part's signed pairwise-mask key (compute/masking.py)."""
    joint = joint_masks.announce(db.ctx(), auth.agent(), job_id, auth.body())
    db.commit()
    db.joint_signal().notify()
    return {"joint_id": joint.id, "announced": len(joint.mask_keys)}


@bp.get("/jobs/<job_id>/mask-keys")
@auth.agent_only
def mask_keys(job_id: str) -> dict[str, Any]:
    """All providers' mask keys of the part's joint job, once every one is announced.
    ``?wait=<s>``: a long poll, answered as soon as the last key is committed."""
    return _held_until_complete(
        lambda: joint_masks.key_set(db.ctx(), auth.agent(), job_id),
        lambda: joint_masks.may_be_complete(db.ctx(), job_id))


@bp.post("/jobs/<job_id>/cell-holders")
@auth.agent_only
def cell_holders(job_id: str) -> dict[str, Any]:
    """A joint part's signed, masked vector of one cell-holders round
    (compute/cell_holders.py)."""
    joint, rnd = joint_cell_holders.publish(db.ctx(), auth.agent(), job_id, auth.body())
    # The last vector of a round completes it: the round comes with the answer (as
    # mask-keys does for the last start notice), one round trip less for that part.
    got = joint_cell_holders.round_set(db.ctx(), auth.agent(), job_id, rnd)
    db.commit()
    db.joint_signal().notify()  # peers waiting for the round look again
    answer: dict[str, Any] = {"joint_id": joint.id, "round": rnd}
    if got["complete"]:
        answer["round_set"] = got
    return answer


@bp.get("/jobs/<job_id>/cell-holders/<int:rnd>")
@auth.agent_only
def cell_holders_round(job_id: str, rnd: int) -> dict[str, Any]:
    """Every provider's vector of round ``rnd``, once all are in. ``?wait=<s>``: a long
    poll, like ``mask-keys``."""
    if rnd >= wire.CELL_HOLDER_ROUNDS:
        raise InvalidInput("round", "range",
                           f"round: at most {wire.CELL_HOLDER_ROUNDS - 1}")
    return _held_until_complete(
        lambda: joint_cell_holders.round_set(db.ctx(), auth.agent(), job_id, rnd),
        lambda: joint_cell_holders.may_be_complete(db.ctx(), job_id, rnd))


@bp.post("/jobs/<job_id>/psi/<name>")
@auth.agent_only
def psi_message(job_id: str, name: str) -> dict[str, Any]:
    """A chunk of a PSI part's blinded message for another part (authz/psi_relay.py)."""
    psi_relay.post_message(db.ctx(), auth.agent(), job_id, name, auth.body())
    db.commit()
    return {"sent": name}


@bp.get("/jobs/<job_id>/psi/<name>")
@auth.agent_only
def psi_peer_message(job_id: str, name: str) -> dict[str, Any]:
    return psi_relay.get_message(db.ctx(), auth.agent(), job_id, name,
                                 int_arg("chunk", 0, 0, wire.PSI_MAX_CHUNKS - 1))
