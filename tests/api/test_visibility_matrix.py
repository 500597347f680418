"""Every object endpoint × every role × someone else's object: never 200, never a leak."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.helpers import SCRIPT, approval, dataset_body, permit_for

# (method, path template, roles allowed to call it at all)
ENDPOINTS = [
    ("GET", "/requests/{req}", {"requester", "provider"}),
    ("POST", "/requests/{req}/items/{ds}/approve", {"provider"}),
    ("POST", "/requests/{req}/items/{ds}/deny", {"provider"}),
    ("GET", "/permits/{permit}", {"requester", "provider"}),
    ("POST", "/permits/{permit}/revoke", {"provider"}),
    ("GET", "/jobs/{job}", {"requester", "provider"}),
    ("POST", "/jobs/{job}/cancel", {"requester"}),
    ("GET", "/jobs/{job}/outputs/table.csv", {"requester"}),
    ("GET", "/datasets/{pending}", {"provider", "requester", "regulator", "admin"}),
]
AGENT_ENDPOINTS = [
    ("POST", "/agent/jobs/{job}/started"),
    ("POST", "/agent/jobs/{job}/result"),
    ("POST", "/agent/datasets/{pending}/schema"),
]


@pytest.fixture
def world(make_party: Any, make_agent: Any) -> dict[str, Any]:
    owner, requester = make_party("provider"), make_party("requester")
    agent = make_agent(owner)
    ds, permit_id = permit_for(requester, owner, agent, max_runs=5)
    job = requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds["id"]],
                                   "script": SCRIPT}).json
    agent.post("/agent/tasks/next")  # the job is now leased to the owner's agent
    pending = owner.post("/datasets", dataset_body()).json
    req_id = requester.get(f"/permits/{permit_id}").json["request_id"]
    ids = {"req": req_id, "ds": ds["id"], "permit": permit_id, "job": job["id"],
           "pending": pending["id"]}
    others = {
        "other provider": make_party("provider"),
        "other requester": make_party("requester"),
        "regulator": make_party("regulator"),
        "admin": make_party("admin"),
    }
    return {"ids": ids, "others": others, "other_agent": make_agent(make_party("provider"))}


@pytest.mark.parametrize(("method", "path", "roles"), ENDPOINTS)
def test_other_parties_get_404_or_403(world: dict[str, Any], method: str, path: str,
                                      roles: set[str]) -> None:
    url = path.format(**world["ids"])
    for label, actor in world["others"].items():
        body = approval() if url.endswith("/approve") else {"reason": "not mine to decide"}
        r = actor.get(url) if method == "GET" else actor.post(url, body)
        expected = 404 if actor.role in roles else 403
        assert r.status_code == expected, (label, url, r.status_code, r.get_data()[:200])
        assert b"patients.csv" not in r.get_data()


@pytest.mark.parametrize(("method", "path"), AGENT_ENDPOINTS)
def test_other_agents_get_404(world: dict[str, Any], method: str, path: str) -> None:
    url = path.format(**world["ids"])
    # A body each endpoint accepts, so that the answer is about the object, not the body.
    body: dict[str, Any] = {"ok": True, "rows": 1} if "schema" in url else {} if (
        url.endswith("/started")) else {
        "state": "failed", "rows_read": 0, "bytes_read": 0, "outputs": []}
    r = world["other_agent"].post(url, body)
    assert r.status_code == 404


def test_lists_hold_only_own_objects(world: dict[str, Any]) -> None:
    for actor in world["others"].values():
        if actor.role in ("requester", "provider"):
            assert actor.get("/jobs").json["jobs"] == []
            assert actor.get("/requests").json["requests"] == []
        if actor.role == "provider":
            assert actor.get("/usage").json["usage"] == []
