"""A lost answer or an expired lease never costs a second run on the provider's data."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask

from authz import lifecycle, runs
from authz.context import Ctx
from authz.models import Agent, Job
from tests.api.helpers import SCRIPT, permit_for
from tests.conftest import Actor

CONTENT = b"age_band,n\n0-17,12\n"


def _released() -> dict[str, Any]:
    return {"state": "released", "exit_code": 0, "rows_read": 500, "bytes_read": 9000,
            "input_sha256": "a" * 64, "runner_image": "data-sandbox-runner:test", "log": "",
            "outputs": [{"name": "t.csv", "sha256": hashlib.sha256(CONTENT).hexdigest(),
                         "bytes": len(CONTENT), "decision": "released", "reasons": [],
                         "content_b64": base64.b64encode(CONTENT).decode()}]}


def _expire_lease(app: Flask, job_id: str) -> None:
    with app.extensions["sandbox"].sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.lease_expires_at = datetime.now(UTC) - timedelta(seconds=1)
        s.commit()


def _requeue(app: Flask, job_id: str) -> None:
    """Requeued after its lease expired, not yet taken by any agent."""
    with app.extensions["sandbox"].sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        lifecycle.requeue(Ctx(s, app.extensions["sandbox"].log, "test"), job, "lease expired")
        s.commit()


def _claim(agent: Actor, key: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {agent.token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return agent.client.post("/api/v1/agent/tasks/next", headers=headers, json={})


def _world(make_party: Any, make_agent: Any, jobs: int = 1, **approve: Any
           ) -> tuple[Actor, Actor, list[str], str]:
    provider, requester = make_party("provider"), make_party("requester")
    agent = make_agent(provider)
    ds, permit_id = permit_for(requester, provider, agent, **approve)
    ids = [requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds["id"]],
                                    "script": SCRIPT}).json["id"] for _ in range(jobs)]
    return requester, agent, ids, permit_id


def test_a_claim_retried_with_its_key_gets_the_same_job(make_party: Any,
                                                         make_agent: Any) -> None:
    requester, agent, ids, permit_id = _world(make_party, make_agent, jobs=2)
    first = _claim(agent, "claim-1").json["task"]
    again = _claim(agent, "claim-1").json["task"]  # the answer to the first was lost
    assert first["job_id"] == again["job_id"] == ids[0]
    assert requester.get(f"/permits/{permit_id}").json["runs_used"] == 1
    other = _claim(agent, "claim-2").json["task"]
    assert other["job_id"] == ids[1]
    r = _claim(agent, "bad key!")
    assert r.status_code == 400 and r.json["field"] == "Idempotency-Key"


def test_a_late_report_after_requeue_is_accepted_and_the_job_is_not_run_again(
        app: Flask, make_party: Any, make_agent: Any) -> None:
    requester, agent, [job_id], permit_id = _world(make_party, make_agent)
    assert _claim(agent).json["task"]["job_id"] == job_id
    agent.post(f"/agent/jobs/{job_id}/started")
    _requeue(app, job_id)  # the controller was unreachable longer than the lease
    assert requester.get(f"/jobs/{job_id}").json["state"] == "queued"
    lease = agent.get(f"/agent/jobs/{job_id}").json
    assert lease == {"version": 1, "job_id": job_id, "state": "queued", "active": False,
                     "released_outputs": []}
    r = agent.post(f"/agent/jobs/{job_id}/result", _released())
    assert r.status_code == 200, r.json
    job = requester.get(f"/jobs/{job_id}").json
    assert job["state"] == "released"
    assert requester.get(f"/jobs/{job_id}/outputs/t.csv").data == CONTENT
    assert requester.get(f"/permits/{permit_id}").json["runs_used"] == 1
    assert _claim(agent).json["task"] is None  # nothing left to run


def test_a_late_report_is_refused_once_another_agent_took_the_job(
        app: Flask, make_party: Any, make_agent: Any) -> None:
    provider, requester = make_party("provider"), make_party("requester")
    first, second = make_agent(provider), make_agent(provider)
    ds, permit_id = permit_for(requester, provider, first)
    job_id = requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds["id"]],
                                      "script": SCRIPT}).json["id"]
    assert _claim(first).json["task"]["job_id"] == job_id
    _expire_lease(app, job_id)
    assert _claim(second).json["task"]["job_id"] == job_id  # requeued and taken
    r = first.post(f"/agent/jobs/{job_id}/result", _released())
    assert r.status_code == 404
    assert first.post(f"/agent/jobs/{job_id}/started").status_code == 404
    assert requester.get(f"/jobs/{job_id}").json["state"] == "dispatched"
    assert requester.get(f"/permits/{permit_id}").json["runs_used"] == 1
    assert second.post(f"/agent/jobs/{job_id}/result", _released()).status_code == 200


def test_notices_for_a_requeued_job_are_refused(app: Flask, make_party: Any,
                                                make_agent: Any) -> None:
    _, agent, [job_id], _ = _world(make_party, make_agent)
    _claim(agent)
    _requeue(app, job_id)
    assert agent.post(f"/agent/jobs/{job_id}/started").status_code == 409
    assert agent.post(f"/agent/jobs/{job_id}/checking").status_code == 409


def test_long_poll_probes_with_a_write_only_when_work_may_be_there(
        app: Flask, make_party: Any, make_agent: Any) -> None:
    """``runs.may_have_task`` (read-only) is true exactly when ``next_task`` could find
    something: a file to check, a queued job, or a job whose lease expired."""
    from authz.runs import may_have_task

    provider, requester = make_party("provider"), make_party("requester")
    agent = make_agent(provider)

    def may() -> bool:
        with app.extensions["sandbox"].readers() as s:
            return may_have_task(s, agent.id, datetime.now(UTC))

    assert not may()
    ds, permit_id = permit_for(requester, provider, agent)  # its check is done
    assert not may()
    job = requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds["id"]],
                                   "script": SCRIPT}).json
    assert may()
    assert agent.post("/agent/tasks/next?wait=0").json["task"]["job_id"] == job["id"]
    assert not may()
    _expire_lease(app, job["id"])
    assert may()
    assert not may_have_task(app.extensions["sandbox"].readers(), "agt_nobody",
                             datetime.now(UTC))


def test_a_report_is_refused_if_its_agent_is_deactivated_while_it_is_read(
        app: Flask, make_party: Any, make_agent: Any, monkeypatch: Any) -> None:
    """The report is authenticated through the read-only engine and read before the job's
    transaction starts; that transaction checks the agent again."""
    requester, agent, [job_id], _ = _world(make_party, make_agent)
    assert _claim(agent).json["task"]["job_id"] == job_id
    agent.post(f"/agent/jobs/{job_id}/started")
    read_report = runs.read_report

    def deactivated_meanwhile(body: object) -> runs.ReadReport:
        with app.extensions["sandbox"].sessions() as s:
            row = s.get(Agent, agent.id)
            assert row is not None
            row.active = False
            s.commit()
        return read_report(body)

    monkeypatch.setattr(runs, "read_report", deactivated_meanwhile)
    r = agent.post(f"/agent/jobs/{job_id}/result", _released())
    assert r.status_code == 401, r.json
    assert requester.get(f"/jobs/{job_id}").json["state"] == "running"
