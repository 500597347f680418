"""Code visible to providers; a permit that requires every new script approved first."""

from __future__ import annotations

from typing import Any

from tests.api.helpers import permit_for
from tests.api.test_people import ledger

SCRIPT = "import pandas as pd\nprint(pd.read_csv('/in/data.csv').shape)\n"


def submit(who: Any, permit_id: str, ds_id: str, script: str = SCRIPT) -> Any:
    return who.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds_id],
                              "script": script})


def test_the_provider_reads_the_code_that_runs_on_its_data(make_party: Any, make_agent: Any,
                                                          make_person: Any) -> None:
    provider, requester = make_party("provider"), make_party("requester")
    ds, permit_id = permit_for(requester, provider, make_agent(provider))
    job_id = submit(requester, permit_id, ds["id"]).json["id"]
    approver = make_person(provider, "approver")
    seen = approver.get(f"/jobs/{job_id}/script").json
    assert seen["script"] == SCRIPT and seen["kind"] == "script"
    assert requester.get(f"/jobs/{job_id}/script").json["script"] == SCRIPT
    # Nobody else.
    assert make_party("provider").get(f"/jobs/{job_id}/script").status_code == 404
    assert make_party("requester").get(f"/jobs/{job_id}/script").status_code == 404


def test_a_new_script_waits_for_approval_and_an_approved_hash_does_not(
        make_party: Any, make_agent: Any, make_person: Any) -> None:
    provider, requester = make_party("provider"), make_party("requester")
    agent = make_agent(provider)
    ds, permit_id = permit_for(requester, provider, agent, approve_scripts=True)
    assert requester.get(f"/permits/{permit_id}").json["approve_scripts"] is True
    first = submit(requester, permit_id, ds["id"]).json
    assert first["state"] == "awaiting_approval"
    assert agent.post("/agent/tasks/next").json["task"] is None  # nothing runs yet
    checker = make_person(provider, "output_checker")
    approver = make_person(provider, "approver")
    assert checker.post(f"/jobs/{first['id']}/approve-script").status_code == 403
    pending = approver.get("/script-approvals").json["jobs"]
    assert [j["job_id"] for j in pending] == [first["id"]]
    r = approver.post(f"/jobs/{first['id']}/approve-script")
    assert r.status_code == 200 and r.json["state"] == "queued", r.json
    assert agent.post("/agent/tasks/next").json["task"]["job_id"] == first["id"]
    # The same script again runs at once; a changed one waits again.
    assert submit(requester, permit_id, ds["id"]).json["state"] == "queued"
    changed = submit(requester, permit_id, ds["id"], SCRIPT + "# v2\n").json
    assert changed["state"] == "awaiting_approval"
    r = approver.post(f"/jobs/{changed['id']}/refuse-script",
                      {"reason": "reads every column; narrow it"})
    assert r.status_code == 200 and r.json["state"] == "blocked"
    assert "narrow it" in requester.get(f"/jobs/{changed['id']}").json["reason"]
    approved = [e for e in ledger(make_party("regulator")) if e["kind"] == "script.approved"]
    assert [(e["actor"], e["body"]["permit_id"]) for e in approved] == [
        (approver.id, permit_id)]


def test_a_waiting_job_counts_against_the_permit(make_party: Any, make_agent: Any) -> None:
    provider, requester = make_party("provider"), make_party("requester")
    ds, permit_id = permit_for(requester, provider, make_agent(provider),
                               approve_scripts=True, max_runs=1)
    assert submit(requester, permit_id, ds["id"]).json["state"] == "awaiting_approval"
    r = submit(requester, permit_id, ds["id"])
    assert r.status_code == 409 and "no runs left" in r.json["message"]
