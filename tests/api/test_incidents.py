"""Incident controls stop work already in the system: a deactivated person's jobs, a
suspended dataset's jobs (queued, running, held for review)."""

from __future__ import annotations

from typing import Any

from tests.api.helpers import permit_for
from tests.api.test_people import ledger
from tests.conftest import Actor

SCRIPT = "print('x')\n"


def submit(who: Actor, permit_id: str, ds_id: str) -> str:
    r = who.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds_id], "script": SCRIPT})
    assert r.status_code == 201, r.json
    job_id: str = r.json["id"]
    return job_id


def test_deactivating_a_person_stops_the_jobs_they_submitted(
        admin: Actor, make_party: Any, make_agent: Any, make_person: Any) -> None:
    provider, requester = make_party("provider"), make_party("requester")
    agent = make_agent(provider)
    analyst, colleague = make_person(requester, "analyst"), make_person(requester, "analyst")
    ds, _ = permit_for(analyst, provider, agent)
    r = analyst.post("/requests", {
        "purpose": "Average cost by age band.", "use_kind": "statistics",
        "business_system": "pricing", "people": [colleague.id],
        "items": [{"dataset_id": ds["id"], "columns": ["age"]}]})
    permit_id = provider.post(f"/requests/{r.json['id']}/items/{ds['id']}/approve",
                              {"expires_at": "2099-01-01T00:00:00+00:00", "max_runs": 5,
                               "risk_assessment": "aggregates only"}).json["permit_id"]
    running = submit(analyst, permit_id, ds["id"])
    assert agent.post("/agent/tasks/next").json["task"]["job_id"] == running
    queued, theirs = submit(analyst, permit_id, ds["id"]), submit(colleague, permit_id, ds["id"])
    assert admin.post(f"/people/{analyst.id}/deactivate").status_code == 200
    states = {j: requester.get(f"/jobs/{j}").json["state"] for j in (running, queued, theirs)}
    assert states == {running: "cancelled", queued: "cancelled", theirs: "queued"}
    # The agent running it sees its lease end (and kills the container).
    assert agent.get(f"/agent/jobs/{running}").json["active"] is False


def test_a_suspended_dataset_stops_its_jobs_until_reinstated(
        make_party: Any, make_agent: Any, make_person: Any) -> None:
    provider, requester = make_party("provider"), make_party("requester")
    agent = make_agent(provider)
    ds, permit_id = permit_for(requester, provider, agent)
    running = submit(requester, permit_id, ds["id"])
    assert agent.post("/agent/tasks/next").json["task"]["job_id"] == running
    queued = submit(requester, permit_id, ds["id"])
    analyst = make_person(requester, "analyst")
    checker = make_person(provider, "output_checker")
    assert checker.post(f"/datasets/{ds['id']}/suspend",
                        {"reason": "suspected leak"}).status_code == 403
    assert make_party("provider").post(f"/datasets/{ds['id']}/suspend",
                                       {"reason": "not mine"}).status_code == 404
    steward = make_person(provider, "dataset_steward")
    r = steward.post(f"/datasets/{ds['id']}/suspend", {"reason": "suspected leak"})
    assert r.status_code == 200 and r.json["status"] == "suspended", r.json
    for job in (running, queued):
        assert requester.get(f"/jobs/{job}").json["state"] == "cancelled"
    assert agent.get(f"/agent/jobs/{running}").json["active"] is False
    # No new work on it; the catalog no longer lists it for others.
    r = requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds["id"]],
                                 "script": SCRIPT})
    assert r.status_code in (400, 403, 409), r.json
    assert requester.get(f"/datasets/{ds['id']}").status_code == 404
    assert analyst.get("/datasets").json["datasets"] == []
    assert steward.post(f"/datasets/{ds['id']}/reinstate").status_code == 200
    assert submit(requester, permit_id, ds["id"])
    kinds = [e["kind"] for e in ledger(make_party("regulator"))]
    assert "dataset.suspended" in kinds and "dataset.reinstated" in kinds
