"""Regressions for the findings of the independent security review."""

from __future__ import annotations

from typing import Any

from tests.api.helpers import SCRIPT, permit_for
from tests.api.test_joint import SPEC, lease, submit, world
from tests.conftest import Actor


def test_joint_permit_cannot_run_plain_jobs(make_party: Any, admin: Actor) -> None:
    from compute.protocol import requester_keygen

    w = world(make_party, admin, 3)
    ds = w["hospitals"][0]["ds"]["id"]
    r = w["requester"].post("/jobs", {"permit_id": w["permit"], "dataset_ids": [ds],
                                      "script": SCRIPT})
    assert r.status_code == 409 and "joint statistics only" in r.json["message"]
    # …and joint jobs must cover exactly the permit's datasets (no differencing subsets).
    keys = requester_keygen()
    r = submit(w, keys, dataset_ids=[h["ds"]["id"] for h in w["hospitals"][:2]] + [ds])
    assert r.status_code == 400 and r.json["field"] in ("dataset_ids", "dataset_ids[2]")


def test_statistics_permit_cannot_run_joint_jobs(make_party: Any, make_agent: Any) -> None:
    import base64

    from compute.protocol import requester_keygen

    provider, requester = make_party("provider"), make_party("requester")
    _, permit_id = permit_for(requester, provider, make_agent(provider))
    keys = requester_keygen()
    r = requester.post("/joint-jobs", {
        "permit_id": permit_id, "dataset_ids": list(requester.get(
            f"/permits/{permit_id}").json["columns"]), "spec": SPEC,
        "public_context_b64": base64.b64encode(keys.public_bytes).decode(),
        "context_fingerprint": keys.fingerprint})
    assert r.status_code == 409 and r.json["error"] == "policy_violation"


def test_granted_budget_forces_dp(make_party: Any, admin: Actor) -> None:
    from compute.protocol import requester_keygen

    w = world(make_party, admin, 3, epsilon=1.0)
    r = submit(w, requester_keygen(), spec=SPEC)
    assert r.status_code == 409 and "dp" in r.json["message"]


def test_cancelled_joint_part_fails_the_joint_job(make_party: Any, admin: Actor) -> None:
    from compute.protocol import requester_keygen

    w = world(make_party, admin, 3)
    joint = submit(w, requester_keygen()).json
    leased = [lease(h) for h in w["hospitals"][1:]]  # they wait for the third's mask key
    queued = [p["job_id"] for p in w["requester"].get(f"/joint-jobs/{joint['id']}").json[
        "parts"] if p["state"] == "queued"]
    assert w["requester"].post(f"/jobs/{queued[0]}/cancel").status_code == 200
    assert w["requester"].get(f"/joint-jobs/{joint['id']}").json["state"] == "failed"
    # The waiting agents learn the job failed: they never mask against a partial key set.
    h = w["hospitals"][1]
    r = h["agent"].get(f"/agent/jobs/{leased[0]['task']['job_id']}/mask-keys")
    assert r.status_code == 409


def test_deactivating_a_requester_revokes_its_permits(admin: Actor, make_party: Any,
                                                      make_agent: Any) -> None:
    provider, requester = make_party("provider"), make_party("requester")
    agent = make_agent(provider)
    ds, permit_id = permit_for(requester, provider, agent)
    job = requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds["id"]],
                                   "script": SCRIPT}).json
    assert admin.post(f"/parties/{requester.id}/deactivate").status_code == 200
    assert agent.post("/agent/tasks/next").json["task"] is None
    seen = provider.get(f"/permits/{permit_id}").json
    assert seen["status"] == "revoked" and requester.id in seen["revoked_reason"]
    assert provider.get(f"/jobs/{job['id']}").json["state"] == "cancelled"


def test_deactivated_provider_gets_no_work(admin: Actor, make_party: Any,
                                           make_agent: Any) -> None:
    provider = make_party("provider")
    agent = make_agent(provider)
    from tests.api.helpers import dataset_body

    provider.post("/datasets", dataset_body())
    admin.post(f"/parties/{provider.id}/deactivate")
    assert agent.post("/agent/tasks/next").json["task"] is None


def test_bad_numbers_in_query_strings_are_400(make_party: Any, make_agent: Any) -> None:
    agent = make_agent(make_party("provider"))
    for wait in ("nan", "inf", "-inf", "abc"):
        r = agent.post(f"/agent/tasks/next?wait={wait}")
        assert r.status_code == 400 and r.json["field"] == "wait"
    regulator = make_party("regulator")
    r = regulator.get("/ledger/entries?start=²&end=3")
    assert r.status_code == 400 and r.json["field"] == "start"


def test_released_result_must_name_its_input(make_party: Any, make_agent: Any) -> None:
    provider, requester = make_party("provider"), make_party("requester")
    agent = make_agent(provider)
    ds, permit_id = permit_for(requester, provider, agent)
    job = requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds["id"]],
                                   "script": SCRIPT}).json
    agent.post("/agent/tasks/next")
    r = agent.post(f"/agent/jobs/{job['id']}/result", {
        "state": "released", "rows_read": 1, "bytes_read": 1, "outputs": []})
    assert r.status_code == 400 and r.json["field"] == "input_sha256"


def test_deeply_nested_json_is_400(make_party: Any) -> None:
    provider = make_party("provider")
    r = provider.client.post("/api/v1/datasets", data="[" * 100_000,
                             headers={"Authorization": f"Bearer {provider.token}"},
                             content_type="application/json")
    assert r.status_code == 400 and r.is_json
