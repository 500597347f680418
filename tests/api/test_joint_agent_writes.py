"""A joint part costs the controller three write transactions: the claim, the start notice
(carrying the part's mask key) and the report (carrying the checking step). Counted, not
timed: the real agent (containers.agent.Agent, no container for a joint part) runs each
part against the real controller app, and every step is still on the ledger in order."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from sqlalchemy import event

from authz.wire import LeaseState, RunReport, RunTask, dump, parse
from compute.masking import announce, new_mask_key
from containers.agent import Agent
from containers.agent_config import AgentConfig
from containers.controller_client import ControllerRefused
from sandbox import db
from tests.api.test_joint import keys, submit, world
from tests.conftest import Actor

__all__ = ["keys"]  # the module-scoped requester key fixture, shared

PART_STEPS = ["job.dispatched", "job.running", "joint.mask_key", "job.checking",
              "run.finished"]


class AgentCalls:
    """The agent's controller calls (containers.controller_client), over the Flask test
    client of the real app instead of HTTP; counts the calls that write."""

    def __init__(self, agent: Actor) -> None:
        self.agent = agent
        self.stop = threading.Event()
        self.writes: list[str] = []

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.writes.append(path.rsplit("/", 1)[-1])
        r = self.agent.post(f"/agent{path}", body)
        if r.status_code >= 400:
            raise ControllerRefused(r.status_code, str(r.json))
        out: dict[str, Any] = r.json
        return out

    def started(self, job_id: str, mask_key: dict[str, object] | None = None
                ) -> dict[str, Any]:
        return self._post(f"/jobs/{job_id}/started", {} if mask_key is None else
                          {"mask_key": mask_key})

    def checking(self, job_id: str) -> None:
        self._post(f"/jobs/{job_id}/checking", {})

    def mask_key(self, job_id: str, announcement: dict[str, object]) -> None:
        self._post(f"/jobs/{job_id}/mask-key", announcement)

    def mask_keys(self, job_id: str, wait_s: float = 0.0) -> dict[str, object]:
        r = self.agent.get(f"/agent/jobs/{job_id}/mask-keys?wait={wait_s}")
        if r.status_code >= 400:
            raise ControllerRefused(r.status_code, str(r.json))
        out: dict[str, object] = r.json
        return out

    def leased(self, job_id: str) -> LeaseState | None:
        return parse(LeaseState, self.agent.get(f"/agent/jobs/{job_id}").json)

    def result(self, job_id: str, report: RunReport) -> dict[str, Any]:
        return self._post(f"/jobs/{job_id}/result", dump(report))


class _Executor:
    """A joint part runs in the agent itself: the executor is only asked to clean up."""

    def cleanup(self, job_id: str, work_dir: Path | None = None) -> None:
        pass


def test_a_joint_part_costs_three_writes_and_records_every_step(
        app: Flask, make_party: Any, admin: Actor, keys: Any, tmp_path: Path) -> None:
    w = world(make_party, admin, 3)
    hospitals = w["hospitals"]
    agents, tasks = [], []
    for i, h in enumerate(hospitals):
        root = tmp_path / f"data{i}"
        root.mkdir()
        h["frame"].to_csv(root / h["ds"]["location"], index=False)
        cfg = AgentConfig(controller_url="http://127.0.0.1:9", token="agt_x.y",
                          data_roots=[root], work_root=tmp_path / f"work{i}", image="img",
                          signing_key=h["key"], warm_start=False, timing_grain_s=0.0)
        agent = Agent(cfg, _Executor())  # type: ignore[arg-type]  # no container runs
        agent.controller = AgentCalls(h["agent"])  # type: ignore[assignment]
        agents.append(agent)
    joint_id = submit(w, keys).json["id"]
    commits: list[int] = []

    def count(conn: Any) -> None:
        commits.append(1)

    event.listen(db.services(app).engine, "commit", count)
    try:
        for h in hospitals:
            tasks.append(RunTask.model_validate(
                h["agent"].post("/agent/tasks/next").json["task"]))
        # The parts wait for each other's mask keys: one thread each, as on three agents.
        runs = [threading.Thread(target=a.run_job, args=(t,)) for a, t in
                zip(agents, tasks, strict=True)]
        for t in runs:
            t.start()
        for t in runs:
            t.join(timeout=60)
    finally:
        event.remove(db.services(app).engine, "commit", count)
    # The requester's long poll answers at once for a job no longer running.
    joint = w["requester"].get(f"/joint-jobs/{joint_id}?wait=10").json
    assert joint["state"] == "combined", joint["reason"]
    assert w["requester"].get(f"/joint-jobs/{joint_id}?wait=nan").status_code == 400
    for agent in agents:
        assert agent.controller.writes == ["started", "result"]  # type: ignore[attr-defined]
    # Claim, start (with the mask key), report (with the checking step): 3 per part.
    assert len(commits) == 3 * len(hospitals)
    page = make_party("regulator").get("/ledger/entries?start=0&end=1000").json
    entries = [json.loads(base64.b64decode(e["data"])) for e in page["entries"]]
    for task in tasks:
        steps = [e["kind"] for e in entries
                 if e["body"].get("job_id") == task.job_id and e["kind"] in PART_STEPS]
        assert steps == PART_STEPS


def test_a_start_notice_carries_the_mask_key_all_or_nothing(
        make_party: Any, admin: Actor, keys: Any) -> None:
    """The key rides with the start notice under the same checks as on its own: a forged
    one refuses the notice whole (the part stays dispatched), a retry records nothing
    twice, and a failed run cannot claim its outputs were checked."""
    w = world(make_party, admin, 3)
    joint_id = submit(w, keys).json["id"]
    h = w["hospitals"][0]
    task = h["agent"].post("/agent/tasks/next").json["task"]
    job, pid = task["job_id"], task["datasets"][0]["provider_id"]
    mine = new_mask_key()
    forged = announce(mine, job_id=joint_id, provider_id=pid,
                      signing_key=Ed25519PrivateKey.generate())
    r = h["agent"].post(f"/agent/jobs/{job}/started", {"mask_key": forged})
    assert r.status_code == 403, r.json
    assert h["agent"].get(f"/agent/jobs/{job}").json["state"] == "dispatched"
    ann = announce(mine, job_id=joint_id, provider_id=pid, signing_key=h["key"])
    for _ in range(2):  # the second: a retry after a lost answer
        r = h["agent"].post(f"/agent/jobs/{job}/started", {"mask_key": ann})
        assert r.status_code == 200 and r.json == {"state": "running", "announced": True}
    r = h["agent"].post(f"/agent/jobs/{job}/result",
                        {**dump(RunReport.failed("the run failed")), "checked": True})
    assert r.status_code == 400 and r.json["field"] == "checked", r.json
    page = make_party("regulator").get("/ledger/entries?start=0&end=1000").json
    entries = [json.loads(base64.b64decode(e["data"])) for e in page["entries"]]
    kinds = [e["kind"] for e in entries if e["body"].get("job_id") == job]
    assert kinds == ["job.dispatched", "job.running", "joint.mask_key"]
