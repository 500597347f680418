"""A provider dropping out of a joint job: the job fails in bounded time, reveals nothing,
and uses the runs documented in docs/joint-statistics.md (dispatched parts only)."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest

from authz.wire import RunReport, RunTask
from compute.backend import TensealCKKSBackend
from compute.masking import MASK_MODULUS, reduce
from compute.protocol import RequesterKeys
from containers import joint_masks as agent_masks
from containers.runspec import ExecutorError
from tests.api.test_joint import AgentChannel, finish, keys, lease, submit, world
from tests.conftest import Actor

__all__ = ["keys"]  # the module-scoped requester key fixture, shared

DP_SPEC = {"version": 1, "columns": ["cost"], "statistics": ["count", "sum"],
           "dp": {"epsilon": 0.5, "bounds": {"cost": [0, 50000]}}}


def _fail_part(h: dict[str, Any], job_id: str, reason: str) -> Any:
    return h["agent"].post(f"/agent/jobs/{job_id}/result",
                           json.loads(RunReport.failed(reason).model_dump_json()))


def test_provider_that_never_takes_its_part(make_party: Any, admin: Actor, keys: Any,
                                            tmp_path: Any) -> None:
    """Provider 2's agent is away. The others' mask-key waits end at their deadline (the
    part's run timeout; short here), the joint job fails, provider 2's part is cancelled
    and never handed out later, and only the dispatched parts used a run. The ε reserved
    is given back."""
    w = world(make_party, admin, 3, epsilon=5.0)
    joint_id = submit(w, keys, DP_SPEC).json["id"]
    hs = w["hospitals"]
    permit = w["requester"].get(f"/permits/{w['permit']}").json
    assert permit["epsilon_spent"] == pytest.approx(0.5)
    tasks = [RunTask.model_validate(h["agent"].post("/agent/tasks/next").json["task"])
             for h in hs[:2]]
    dirs = [tmp_path / f"job{i}" for i in range(2)]
    for h, t, d in zip(hs[:2], tasks, dirs, strict=True):
        agent_masks.announce_key(AgentChannel(h["agent"]), t, d, h["key"])
    with pytest.raises(ExecutorError, match="did not arrive in time: nothing was submitted"):
        agent_masks.wait_for_session(AgentChannel(hs[0]["agent"]), tasks[0], dirs[0],
                                     hs[0]["key"], timeout_s=0.2)
    assert _fail_part(hs[0], tasks[0].job_id, "mask keys did not arrive").status_code == 200
    joint = w["requester"].get(f"/joint-jobs/{joint_id}").json
    assert joint["state"] == "failed" and joint["aggregate"] is None
    states = {p["provider_id"]: p["state"] for p in joint["parts"]}
    assert states == {hs[0]["provider"].id: "failed", hs[1]["provider"].id: "cancelled",
                      hs[2]["provider"].id: "cancelled"}
    # Provider 1's agent, still waiting, is refused at once rather than at its deadline.
    with pytest.raises(ExecutorError, match="mask keys unavailable"):
        agent_masks.wait_for_session(AgentChannel(hs[1]["agent"]), tasks[1], dirs[1],
                                     hs[1]["key"], timeout_s=60)
    # Provider 2's agent comes back: nothing to run for the dead job.
    assert hs[2]["agent"].post("/agent/tasks/next").json["task"] is None
    permit = w["requester"].get(f"/permits/{w['permit']}").json
    assert permit["runs_used"] == 2  # the two dispatched parts read their data
    assert permit["epsilon_spent"] == pytest.approx(0.0)


def _decrypt_sum(keys: RequesterKeys, subs: list[dict[str, Any]]) -> np.ndarray[Any, Any]:
    be = TensealCKKSBackend()
    public = be.load_public(keys.public_bytes)
    out: list[int] = []
    for i in range(len(subs[0]["ciphertexts"])):  # the count slots, then the real slots
        ct = be.add(public, [base64.b64decode(s["ciphertexts"][i]) for s in subs])
        out.extend(reduce(round(x)) for x in be.decrypt(keys.secret, ct)[1:])
    return np.array(out)


def test_provider_that_drops_after_the_others_submitted(
        make_party: Any, admin: Actor, app: Any, keys: RequesterKeys) -> None:
    """Every key announced, providers 0 and 1 submitted, provider 2's agent vanished and a
    replacement draws a new key: refused (409), the part and the joint job fail, and what
    the controller holds (both submissions), decrypted with the requester's key, is still
    uniform noise: provider 2's masks stay in it."""
    from authz.models import JobOutput

    w = world(make_party, admin, 3)
    joint_id = submit(w, keys).json["id"]
    hs = w["hospitals"]
    parts = [lease(h) for h in hs]
    for h, part in zip(hs[:2], parts[:2], strict=True):
        assert finish(h, part).status_code == 200
    assert w["requester"].get(f"/joint-jobs/{joint_id}").json["state"] == "running"
    # The dropped agent's key is lost; a second, different key is refused.
    job_id = parts[2]["task"]["job_id"]
    retry = dict(parts[2]["announcement"], public_key="11" * 32)
    assert hs[2]["agent"].post(f"/agent/jobs/{job_id}/mask-key", retry).status_code in (
        403, 409)
    assert _fail_part(hs[2], job_id, "mask key unavailable").status_code == 200
    joint = w["requester"].get(f"/joint-jobs/{joint_id}").json
    assert joint["state"] == "failed" and joint["aggregate"] is None
    with app.extensions["sandbox"].sessions() as s:
        subs = [json.loads(o.content) for p in parts[:2]
                for o in s.query(JobOutput).filter_by(job_id=p["task"]["job_id"])
                if o.content is not None]
    assert len(subs) == 2
    got = _decrypt_sum(keys, subs)
    # Uniform on [-2^29, 2^29): chi-square over 32 bins (1e-4 critical value ~ 62) ...
    bins = np.bincount((got + MASK_MODULUS // 2) * 32 // MASK_MODULUS, minlength=32)
    expected = len(got) / 32
    assert float(np.sum((bins - expected) ** 2 / expected)) < 62
    # ... so not the two providers' true row count in its slot (a few hundred).
    assert not 0 <= got[0] < 10_000
    permit = w["requester"].get(f"/permits/{w['permit']}").json
    assert permit["runs_used"] == 3
