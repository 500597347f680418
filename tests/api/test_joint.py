"""Joint statistics through the API, with agents played by the real compute code (TenSEAL).

The container run itself is covered by the Docker tests and the demo; here the agent's
side is the same functions the agent calls, so the controller's checks are exercised.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authz.wire import RunTask
from compute.derive import derive
from compute.local_aggregate import local_aggregate
from compute.masking import announce, new_mask_key, session
from compute.protocol import decrypt_aggregate, provider_submit, requester_keygen
from compute.spec import spec_from_json
from containers import joint_masks as agent_masks
from containers.runspec import ExecutorError
from sandbox.demo_data import hospital_table
from tests.api.helpers import approval, register
from tests.conftest import Actor

SPEC = {"version": 1, "columns": ["age", "cost"], "statistics": ["count", "mean", "variance"]}


@pytest.fixture(scope="module")
def keys() -> Any:
    return requester_keygen()


def world(make_party: Any, admin: Actor, n: int, epsilon: float | None = None,
          max_runs: int = 10) -> dict[str, Any]:
    requester = make_party("requester")
    hospitals = []
    for i in range(n):
        p = make_party("provider")
        key = Ed25519PrivateKey.generate()
        r = admin.post("/agents", {"name": f"a{i}", "providers": [p.id],
                                   "public_key": key.public_key().public_bytes_raw().hex()})
        agent = Actor(admin.client, r.json["id"], r.json["token"], "agent")
        ds = register(p, agent)
        hospitals.append({"provider": p, "agent": agent, "key": key, "ds": ds,
                          "frame": hospital_table(100 + i, 300, f"H{i}")})
    r = requester.post("/requests", {
        "purpose": "Joint mean cost across hospitals.", "use_kind": "joint_statistics",
        "business_system": "pricing", "items": [{"dataset_id": h["ds"]["id"],
                                                 "columns": ["age", "cost"]} for h in hospitals]})
    for i, h in enumerate(hospitals):
        extra: dict[str, Any] = {} if epsilon is None else {"epsilon_budget": epsilon + i + 1}
        r = h["provider"].post(f"/requests/{r.json['id']}/items/{h['ds']['id']}/approve",
                               approval(max_runs=max_runs, **extra))
    return {"requester": requester, "hospitals": hospitals, "permit": r.json["permit_id"]}


def submit(w: dict[str, Any], keys: Any, spec: Any = SPEC, **over: Any) -> Any:
    body = {"permit_id": w["permit"], "dataset_ids": [h["ds"]["id"] for h in w["hospitals"]],
            "spec": spec, "public_context_b64": base64.b64encode(keys.public_bytes).decode(),
            "context_fingerprint": keys.fingerprint}
    body.update(over)
    return w["requester"].post("/joint-jobs", body)


def lease(h: dict[str, Any]) -> dict[str, Any]:
    """The agent takes its part and announces its pairwise-mask key for the job."""
    task: dict[str, Any] = h["agent"].post("/agent/tasks/next").json["task"]
    assert task["kind"] == "joint"
    mask = new_mask_key()
    ann = announce(mask, job_id=task["joint"]["joint_id"],
                   provider_id=task["datasets"][0]["provider_id"], signing_key=h["key"])
    r = h["agent"].post(f"/agent/jobs/{task['job_id']}/mask-key", ann)
    assert r.status_code == 200, r.json
    return {"task": task, "mask": mask, "announcement": ann}


def finish(h: dict[str, Any], part: dict[str, Any], key: Ed25519PrivateKey | None = None
           ) -> Any:
    """Once every provider announced: mask, encrypt, sign, report (as the agent does)."""
    task, joint = part["task"], part["task"]["joint"]
    got = h["agent"].get(f"/agent/jobs/{task['job_id']}/mask-keys").json
    assert got["complete"], got
    pid = task["datasets"][0]["provider_id"]
    masking = session(part["mask"], got["announcements"], job_id=joint["joint_id"],
                      provider_id=pid, agent_keys={p: bytes.fromhex(k)
                                                   for p, k in got["agent_keys"].items()})
    schema = {f["name"]: f["type"] for f in task["datasets"][0]["fields"]}
    spec = spec_from_json(joint["spec"], schema)
    frame = h["frame"][[f["name"] for f in task["datasets"][0]["fields"]]]
    sub, _ = provider_submit(spec, local_aggregate(joint["spec"], frame, task["min_cell_count"]),
                             base64.b64decode(joint["public_context_b64"]),
                             joint["context_fingerprint"], job_id=joint["joint_id"],
                             provider_id=pid, signing_key=key or h["key"], masking=masking,
                             min_cell_count=task["min_cell_count"])
    raw = json.dumps(sub).encode()
    return h["agent"].post(f"/agent/jobs/{task['job_id']}/result", {
        "state": "released", "rows_read": len(frame), "bytes_read": 1, "input_sha256": "a" * 64,
        "runner_image": "img", "outputs": [{
            "name": "submission.json", "sha256": hashlib.sha256(raw).hexdigest(),
            "bytes": len(raw), "decision": "released",
            "content_b64": base64.b64encode(raw).decode()}]})


def play_agents(hospitals: list[dict[str, Any]],
                forged: dict[int, Ed25519PrivateKey] | None = None) -> list[Any]:
    """Every hospital's agent: lease and announce first, then submit (the two phases)."""
    parts = [lease(h) for h in hospitals]
    return [finish(h, part, (forged or {}).get(i))
            for i, (h, part) in enumerate(zip(hospitals, parts, strict=True))]


def test_joint_statistics_end_to_end(make_party: Any, admin: Actor, keys: Any) -> None:
    w = world(make_party, admin, 3)
    r = submit(w, keys)
    assert r.status_code == 201, r.json
    joint_id = r.json["id"]
    assert all(r.status_code == 200 for r in play_agents(w["hospitals"]))
    joint = w["requester"].get(f"/joint-jobs/{joint_id}").json
    assert joint["state"] == "combined", joint["reason"]
    assert joint["aggregate"]["mask_keys_sha256"]
    schema = {"age": "integer", "cost": "number"}
    spec = spec_from_json(joint["spec"], schema)
    result = derive(spec, decrypt_aggregate(joint["aggregate"], keys, spec))
    pooled = np.concatenate([h["frame"]["cost"].to_numpy() for h in w["hospitals"]])
    assert result.columns["cost"]["n"] == 900
    mean = result.columns["cost"]["mean"]
    assert mean is not None and abs(mean - pooled.mean()) <= 1e-9 * (abs(pooled.mean()) + 1)
    # The requester can never fetch one provider's encrypted figures.
    part = joint["parts"][0]["job_id"]
    assert w["requester"].get(f"/jobs/{part}/outputs/submission.json").status_code == 404


def test_fewer_than_three_providers_refused(make_party: Any, admin: Actor, keys: Any) -> None:
    w = world(make_party, admin, 2)
    r = submit(w, keys)
    assert r.status_code == 400 and r.json["field"] == "dataset_ids"


def test_context_checks(make_party: Any, admin: Actor, keys: Any) -> None:
    w = world(make_party, admin, 3)
    r = submit(w, keys, context_fingerprint="0" * 64)
    assert r.status_code == 400 and r.json["field"] == "context_fingerprint"
    secret = keys.secret.serialize(save_secret_key=True)


    r = submit(w, keys, public_context_b64=base64.b64encode(secret).decode(),
               context_fingerprint=hashlib.sha256(secret).hexdigest())
    assert r.status_code == 400 and r.json["field"] == "public_context_b64"


def test_bad_spec_is_refused_before_any_job(make_party: Any, admin: Actor, keys: Any) -> None:
    w = world(make_party, admin, 3)
    r = submit(w, keys, spec={"version": 1, "columns": ["salary"], "statistics": ["mean"]})
    assert r.status_code == 400 and r.json["field"].startswith("columns")
    assert w["hospitals"][0]["agent"].post("/agent/tasks/next").json["task"] is None


def test_forged_signature_fails_the_joint_job(make_party: Any, admin: Actor, keys: Any) -> None:
    w = world(make_party, admin, 3)
    joint_id = submit(w, keys).json["id"]
    play_agents(w["hospitals"], forged={0: Ed25519PrivateKey.generate()})
    joint = w["requester"].get(f"/joint-jobs/{joint_id}").json
    assert joint["state"] == "failed" and "signature" in joint["reason"].lower()
    assert joint["aggregate"] is None


DP_SPEC = {"version": 1, "columns": ["cost"], "statistics": ["count", "mean"],
           "dp": {"epsilon": 0.5, "bounds": {"cost": [0, 60000]}}}


def test_differential_privacy_is_charged_to_the_permit(make_party: Any, admin: Actor,
                                                       keys: Any) -> None:
    w = world(make_party, admin, 3, epsilon=0.0)  # budgets 1, 2, 3: strictest is 1.0
    permit = w["requester"].get(f"/permits/{w['permit']}").json
    assert permit["epsilon_budget"] == 1.0 and permit["epsilon_spent"] == 0.0
    joint_id = submit(w, keys, spec=DP_SPEC).json["id"]
    play_agents(w["hospitals"])
    joint = w["requester"].get(f"/joint-jobs/{joint_id}").json
    assert joint["state"] == "combined", joint["reason"]
    assert joint["aggregate"]["dp"]["epsilon"] == 0.5
    assert w["requester"].get(f"/permits/{w['permit']}").json["epsilon_spent"] == 0.5
    again = dict(DP_SPEC, dp={"epsilon": 0.6, "bounds": {"cost": [0, 60000]}})
    r = submit(w, keys, spec=again)
    assert r.status_code == 409 and "budget" in r.json["message"]


def test_dp_needs_a_granted_budget(make_party: Any, admin: Actor, keys: Any) -> None:
    w = world(make_party, admin, 3)
    r = submit(w, keys, spec=DP_SPEC)
    assert r.status_code == 409 and r.json["error"] == "policy_violation"


def test_epsilon_is_reserved_at_submission_and_refunded_on_failure(
        make_party: Any, admin: Actor, keys: Any) -> None:
    w = world(make_party, admin, 3, epsilon=0.0)  # strictest budget: 1.0
    first = submit(w, keys, spec=DP_SPEC).json["id"]
    assert w["requester"].get(f"/permits/{w['permit']}").json["epsilon_spent"] == 0.5
    assert submit(w, keys, spec=DP_SPEC).status_code == 201  # 0.5 + 0.5 = 1.0
    r = submit(w, keys, spec=DP_SPEC)  # nothing left, though nothing was released yet
    assert r.status_code == 409 and "budget" in r.json["message"]
    # The first job fails (a forged signature): its reservation is given back.
    play_agents(w["hospitals"], forged={0: Ed25519PrivateKey.generate()})
    assert w["requester"].get(f"/joint-jobs/{first}").json["state"] == "failed"
    assert w["requester"].get(f"/permits/{w['permit']}").json["epsilon_spent"] == 0.5


def test_mask_keys_are_bound_and_logged(make_party: Any, admin: Actor, keys: Any) -> None:
    w = world(make_party, admin, 3)
    joint_id = submit(w, keys).json["id"]
    hs = w["hospitals"]
    first = lease(hs[0])
    job = first["task"]["job_id"]
    # Not complete until every provider announced: nobody masks against a partial set.
    assert hs[0]["agent"].get(f"/agent/jobs/{job}/mask-keys").json["complete"] is False
    # The same key again is a retry; another key for the same part is refused.
    agent = hs[0]["agent"]
    assert agent.post(f"/agent/jobs/{job}/mask-key", first["announcement"]).status_code == 200
    other = announce(new_mask_key(), job_id=joint_id,
                     provider_id=first["task"]["datasets"][0]["provider_id"],
                     signing_key=hs[0]["key"])
    assert agent.post(f"/agent/jobs/{job}/mask-key", other).status_code == 409
    # A key signed by someone else, or for another provider's part, is refused.
    forged = announce(new_mask_key(), job_id=joint_id,
                      provider_id=first["task"]["datasets"][0]["provider_id"],
                      signing_key=Ed25519PrivateKey.generate())
    assert agent.post(f"/agent/jobs/{job}/mask-key", forged).status_code == 403
    parts = [first, *[lease(h) for h in hs[1:]]]
    got = agent.get(f"/agent/jobs/{job}/mask-keys").json
    assert got["complete"] and len(got["announcements"]) == 3
    page = make_party("regulator").get("/ledger/entries?start=0&end=1000").json
    entries = [json.loads(base64.b64decode(e["data"])) for e in page["entries"]]
    logged = {e["body"]["public_key"] for e in entries
              if e["kind"] == "joint.mask_key" and e["body"]["joint_id"] == joint_id}
    assert logged == {p["announcement"]["public_key"] for p in parts}
    for h, part in zip(hs, parts, strict=True):
        assert finish(h, part).status_code == 200
    assert w["requester"].get(f"/joint-jobs/{joint_id}").json["state"] == "combined"


def test_a_provider_that_never_submits_fails_the_job(make_party: Any, admin: Actor,
                                                     keys: Any) -> None:
    w = world(make_party, admin, 3)
    joint_id = submit(w, keys).json["id"]
    parts = [lease(h) for h in w["hospitals"]]
    for h, part in list(zip(w["hospitals"], parts, strict=True))[:2]:
        assert finish(h, part).status_code == 200
    # The third provider's run fails: the other two masked sums are never combined.
    r = w["hospitals"][2]["agent"].post(f"/agent/jobs/{parts[2]['task']['job_id']}/result", {
        "state": "failed", "reason": "the script exited with an error status",
        "rows_read": 0, "bytes_read": 0, "input_sha256": "a" * 64, "runner_image": "img",
        "outputs": []})
    assert r.status_code == 200, r.json
    joint = w["requester"].get(f"/joint-jobs/{joint_id}").json
    assert joint["state"] == "failed" and joint["aggregate"] is None


class AgentChannel:
    """The agent's mask-key calls, over the test client (the real controller app)."""

    def started(self, job_id: str, mask_key: dict[str, object] | None = None
                ) -> dict[str, object]:
        r = self.agent.post(f"/agent/jobs/{job_id}/started",
                            {} if mask_key is None else {"mask_key": mask_key})
        if r.status_code >= 400:
            raise RuntimeError(r.json["message"])
        out: dict[str, object] = r.json
        return out

    def __init__(self, agent: Actor) -> None:
        self.agent = agent

    def mask_key(self, job_id: str, announcement: dict[str, object]) -> None:
        r = self.agent.post(f"/agent/jobs/{job_id}/mask-key", announcement)
        if r.status_code >= 400:
            raise RuntimeError(r.json["message"])

    def mask_keys(self, job_id: str, wait_s: float = 0.0) -> dict[str, object]:
        r = self.agent.get(f"/agent/jobs/{job_id}/mask-keys?wait={wait_s}")
        if r.status_code >= 400:
            raise RuntimeError(r.json["message"])
        out: dict[str, object] = r.json
        return out


def test_agent_side_waits_for_every_key(make_party: Any, admin: Actor, keys: Any,
                                        tmp_path: Any) -> None:
    w = world(make_party, admin, 3)
    submit(w, keys)
    hs = w["hospitals"]
    tasks = [RunTask.model_validate(h["agent"].post("/agent/tasks/next").json["task"])
             for h in hs]
    dirs = [tmp_path / f"job{i}" for i in range(3)]
    first = agent_masks.announce_key(AgentChannel(hs[0]["agent"]), tasks[0], dirs[0], hs[0]["key"])
    assert (dirs[0] / agent_masks.KEY_FILE).stat().st_mode & 0o777 == 0o600
    # Not everyone announced: the agent gives up at its deadline and submits nothing.
    with pytest.raises(ExecutorError, match="did not arrive"):
        agent_masks.wait_for_session(AgentChannel(hs[0]["agent"]), tasks[0], dirs[0],
                                     hs[0]["key"], timeout_s=0.3)
    sessions = []
    for h, t, d in zip(hs[1:], tasks[1:], dirs[1:], strict=True):
        agent_masks.announce_key(AgentChannel(h["agent"]), t, d, h["key"])
    for h, t, d in zip(hs, tasks, dirs, strict=True):
        sessions.append(agent_masks.wait_for_session(AgentChannel(h["agent"]), t, d, h["key"],
                                                     timeout_s=5))
    # A restarted agent reads its key back: the announced key is the one it masks with.
    assert sessions[0].key.public_hex == first.public_hex
    assert len({s.digest for s in sessions}) == 1


def test_agent_computes_its_part_itself(make_party: Any, admin: Actor, keys: Any,
                                        tmp_path: Any) -> None:
    """The agent's own path (containers.joint_part, no container): aggregate the projected
    input, mask, encrypt, sign; the controller combines the reports into the exact mean."""
    import functools

    from containers import joint_part

    w = world(make_party, admin, 3)
    joint_id = submit(w, keys).json["id"]
    hs = w["hospitals"]
    tasks = [RunTask.model_validate(h["agent"].post("/agent/tasks/next").json["task"])
             for h in hs]
    dirs = [tmp_path / f"job{i}" for i in range(3)]
    for i, (h, t, d) in enumerate(zip(hs, tasks, dirs, strict=True)):
        (d / "in").mkdir(parents=True)
        frame = h["frame"][[f.name for f in t.datasets[0].fields]].copy()
        if i == 0:  # one missing cost is a cell of one record: it leaves the whole part
            frame.loc[frame.index[0], "cost"] = None
        frame.to_csv(d / "in" / "data.csv", index=False)
        (d / "input.json").write_text(json.dumps({"rows": len(h["frame"]), "bytes": 1,
                                                  "sha256": "a" * 64}))
        agent_masks.announce_key(AgentChannel(h["agent"]), t, d, h["key"])
    for h, t, d in zip(hs, tasks, dirs, strict=True):
        masking = functools.partial(agent_masks.wait_for_session, AgentChannel(h["agent"]), t,
                                    d, h["key"], 5.0)
        report = joint_part.run_part(t, d, h["key"], masking)
        r = h["agent"].post(f"/agent/jobs/{t.job_id}/result",
                            json.loads(report.model_dump_json()))
        assert r.status_code == 200, r.json
    joint = w["requester"].get(f"/joint-jobs/{joint_id}").json
    assert joint["state"] == "combined", joint["reason"]
    spec = spec_from_json(joint["spec"], {"age": "integer", "cost": "number"})
    result = derive(spec, decrypt_aggregate(joint["aggregate"], keys, spec))
    pooled = np.concatenate([h["frame"]["cost"].to_numpy() for h in hs])[1:]
    assert result.columns["cost"]["n"] == result.columns["age"]["n"] == len(pooled)
    assert result.columns["cost"]["missing"] == 0
    assert abs(result.columns["cost"]["mean"] - pooled.mean()) <= 1e-9 * pooled.mean()
    with pytest.raises(ExecutorError, match="signing key"):
        joint_part.run_part(tasks[0], dirs[0], None, masking)
