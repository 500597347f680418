"""The cell-holders rounds through the controller (authz/joint_cell_holders.py): the agent
routes, their refusals, and real agents (containers.agent.Agent, no container for a joint
part) withdrawing a group only one hospital holds before the data round."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from authz.wire import RunTask
from compute import cell_holders
from compute.derive import derive
from compute.masking import announce, new_mask_key, session
from compute.protocol import decrypt_aggregate
from compute.spec import spec_from_json
from containers.agent import Agent
from containers.agent_config import AgentConfig
from containers.controller_client import ControllerRefused
from containers.joint_cell_holders import withdrawn_records
from containers.runspec import ExecutorError
from tests.api.test_joint import keys, submit, world
from tests.api.test_joint_agent_writes import AgentCalls, _Executor
from tests.conftest import Actor

__all__ = ["keys"]  # the module-scoped requester key fixture, shared

# Age groups [0, 100) and [100, 150]: only hospital 0 has patients of 100 and over.
SPEC = {"version": 1, "statistics": ["grouped"], "groups": {
    "by": [{"column": "age", "edges": [0, 100, 150]}], "values": ["cost"]}}


class RoundCalls(AgentCalls):
    """The agent's controller calls over the test client, with the cell-holders routes;
    ``asked`` notes which answers came complete and which sets the agent asked for."""

    def __init__(self, agent: Actor) -> None:
        super().__init__(agent)
        self.asked: list[tuple[str, int | None]] = []

    def started(self, job_id: str, mask_key: dict[str, object] | None = None
                ) -> dict[str, Any]:
        answer = super().started(job_id, mask_key)
        if "key_set" in answer:
            self.asked.append(("key set with the start", None))
        return answer

    def mask_keys(self, job_id: str, wait_s: float = 0.0) -> dict[str, object]:
        self.asked.append(("key set", None))
        return super().mask_keys(job_id, wait_s)

    def cell_holders(self, job_id: str, vector: dict[str, object]) -> dict[str, object]:
        answer: dict[str, object] = self._post(f"/jobs/{job_id}/cell-holders", vector)
        if "round_set" in answer:
            self.asked.append(("round with the vector", int(str(answer["round"]))))
        return answer

    def cell_holders_round(self, job_id: str, rnd: int, wait_s: float = 0.0
                           ) -> dict[str, object]:
        self.asked.append(("round", rnd))
        r = self.agent.get(f"/agent/jobs/{job_id}/cell-holders/{rnd}?wait={wait_s}")
        if r.status_code >= 400:
            raise ControllerRefused(r.status_code, str(r.json))
        out: dict[str, object] = r.json
        return out


def test_agents_withdraw_a_group_one_hospital_holds(make_party: Any, admin: Actor, keys: Any,
                                                    tmp_path: Path) -> None:
    w = world(make_party, admin, 3)
    hospitals = w["hospitals"]
    old = hospitals[0]["frame"].index[:15]
    hospitals[0]["frame"].loc[old, "age"] = 120
    agents = []
    for i, h in enumerate(hospitals):
        root = tmp_path / f"data{i}"
        root.mkdir()
        h["frame"].to_csv(root / h["ds"]["location"], index=False)
        cfg = AgentConfig(controller_url="http://127.0.0.1:9", token="agt_x.y",
                          data_roots=[root], work_root=tmp_path / f"work{i}", image="img",
                          signing_key=h["key"], warm_start=False, timing_grain_s=0.0)
        agent = Agent(cfg, _Executor())  # type: ignore[arg-type]  # no container runs
        agent.controller = RoundCalls(h["agent"])  # type: ignore[assignment]
        agents.append(agent)
    r = submit(w, keys, SPEC)
    assert r.status_code == 201, r.json
    joint_id = r.json["id"]
    tasks = [RunTask.model_validate(h["agent"].post("/agent/tasks/next").json["task"])
             for h in hospitals]
    assert {t.joint.min_providers for t in tasks if t.joint} == {3}
    runs = [threading.Thread(target=a.run_job, args=(t,)) for a, t in
            zip(agents, tasks, strict=True)]
    for t in runs:
        t.start()
    for t in runs:
        t.join(timeout=60)
    joint = w["requester"].get(f"/joint-jobs/{joint_id}?wait=10").json
    assert joint["state"] == "combined", joint["reason"]
    spec = spec_from_json(joint["spec"], {"age": "integer", "cost": "number"})
    result = derive(spec, decrypt_aggregate(joint["aggregate"], keys, spec))
    assert result.grouped is not None
    old_group = result.grouped["cells"][1]
    assert old_group["cost"]["n"] == 0  # withdrawn at hospital 0: not its own figure
    young = np.concatenate([h["frame"].cost[h["frame"].age < 100] for h in hospitals])
    assert result.grouped["cells"][0]["cost"]["n"] == len(young)
    # Round 0 forced the group, round 1 forced nothing: two rounds on the record, by digest.
    page = make_party("regulator").get("/ledger/entries?start=0&end=1000").json
    entries = [json.loads(base64.b64decode(e["data"])) for e in page["entries"]]
    rounds = [e["body"] for e in entries if e["kind"] == "joint.cell_holders"]
    assert [b["round"] for b in rounds] == [0, 1]
    assert all(set(b) == {"joint_id", "round", "providers", "vectors_sha256"} for b in rounds)
    # The part whose start notice completed the key set, and the part whose vector completed
    # each round, had the set in the answer and did not ask for it (one round trip less).
    calls = [a.controller.asked for a in agents]  # type: ignore[attr-defined]
    with_start = [c for c in calls if ("key set with the start", None) in c]
    assert len(with_start) == 1 and ("key set", None) not in with_start[0]
    for rnd in (0, 1):
        last = [c for c in calls if ("round with the vector", rnd) in c]
        assert len(last) == 1 and ("round", rnd) not in last[0]


def test_the_round_routes_check_what_they_relay(make_party: Any, admin: Actor, keys: Any
                                                ) -> None:
    w = world(make_party, admin, 3)
    hs = w["hospitals"]
    assert submit(w, keys, SPEC).status_code == 201
    parts = []
    for h in hs:
        task = h["agent"].post("/agent/tasks/next").json["task"]
        mask = new_mask_key()
        pid = task["datasets"][0]["provider_id"]
        ann = announce(mask, job_id=task["joint"]["joint_id"], provider_id=pid,
                       signing_key=h["key"])
        assert h["agent"].post(f"/agent/jobs/{task['job_id']}/mask-key", ann).status_code \
            == 200
        parts.append((h, task, mask, pid))
    size = cell_holders.layout_size(SPEC)
    vectors, sessions = [], []
    for h, task, mask, pid in parts:
        got = h["agent"].get(f"/agent/jobs/{task['job_id']}/mask-keys").json
        s = session(mask, got["announcements"], job_id=task["joint"]["joint_id"],
                    provider_id=pid, agent_keys={p: bytes.fromhex(k) for p, k in
                                                 got["agent_keys"].items()})
        sessions.append(s)
        vectors.append(cell_holders.publish(s, 0, np.ones(size, dtype=np.uint64), h["key"]))
    (h0, t0, _, _), (h1, t1, _, _) = parts[0], parts[1]
    url0 = f"/agent/jobs/{t0['job_id']}/cell-holders"

    def refused(body: dict[str, Any], status: int, field: str | None = None) -> None:
        r = h0["agent"].post(url0, body)
        assert r.status_code == status, r.json
        if field is not None:
            assert r.json["field"] == field, r.json

    raw = bytearray(base64.b64decode(vectors[0]["masked_b64"]))
    raw[3] ^= 4
    refused({**vectors[0], "masked_b64": base64.b64encode(bytes(raw)).decode()}, 403)
    refused({**vectors[0], "masked_b64": base64.b64encode(bytes(raw[:8])).decode()}, 400,
            "masked_b64")
    refused({**vectors[0], "cells": size + 1}, 400, "cells")
    refused({**vectors[0], "round": 1}, 400, "round")  # round 0 is not complete
    refused({**vectors[0], "round": 9}, 400, "round")
    refused({**vectors[0], "nonsense": 1}, 400)
    # Another part's vector through this part: refused.
    refused(vectors[1], 403)
    assert h0["agent"].post(url0, vectors[0]).status_code == 200
    assert h0["agent"].post(url0, vectors[0]).status_code == 200  # a retry: idempotent
    other = cell_holders.publish(sessions[0], 0, np.zeros(size, dtype=np.uint64), h0["key"])
    refused(other, 409)  # a second, different vector for the same round
    pending = h1["agent"].get(f"/agent/jobs/{t1['job_id']}/cell-holders/0").json
    assert pending == {"complete": False, "vectors": [], "agent_keys": {}}
    answers = []
    for (h, task, _, _), vec in zip(parts[1:], vectors[1:], strict=True):
        r = h["agent"].post(f"/agent/jobs/{task['job_id']}/cell-holders", vec)
        assert r.status_code == 200, r.json
        answers.append(r.json)
    got = h1["agent"].get(f"/agent/jobs/{t1['job_id']}/cell-holders/0?wait=1").json
    assert got["complete"]
    # The vector that completed the round is answered with the round, as the GET gives it.
    assert "round_set" not in answers[0] and answers[1]["round_set"] == got
    held = cell_holders.holders(got["vectors"], t1["joint"]["joint_id"], 0, size,
                                {p: bytes.fromhex(k) for p, k in got["agent_keys"].items()})
    assert (held == 3).all()
    assert h1["agent"].get(f"/agent/jobs/{t1['job_id']}/cell-holders/4").status_code == 400
    # An agent whose vector the controller refuses (here: not the one it already holds for
    # the round) fails its part: nothing is submitted.
    with pytest.raises(ExecutorError, match="cell-holders round failed"):
        withdrawn_records(RoundCalls(h1["agent"]), RunTask.model_validate(t1), hs[1]["frame"],
                          sessions[1], h1["key"], timeout_s=1.0)
