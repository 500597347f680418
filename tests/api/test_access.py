from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.api.helpers import approval, register, request_access


def test_multi_provider_request_needs_every_approval(make_party: Any, make_agent: Any) -> None:
    a, b = make_party("provider"), make_party("provider")
    agent = make_agent(a, b)
    ds_a, ds_b = register(a, agent), register(b, agent)
    requester = make_party("requester")
    req = request_access(requester, ds_a, ds_b)
    assert req["status"] == "pending" and req["permit_id"] is None

    r = a.post(f"/requests/{req['id']}/items/{ds_a['id']}/approve",
               approval(days=30, max_runs=5, min_cell=10, columns=["age", "cost", "sex"]))
    assert r.status_code == 200 and r.json["status"] == "pending"
    r = b.post(f"/requests/{req['id']}/items/{ds_b['id']}/approve",
               approval(days=10, max_runs=8, min_cell=20))
    assert r.json["status"] == "approved"

    permit = requester.get(f"/permits/{r.json['permit_id']}").json
    # Strictest wins: earliest expiry, fewest runs, largest minimum cell.
    assert permit["max_runs"] == 5 and permit["min_cell_count"] == 20
    assert datetime.fromisoformat(permit["expires_at"]) < datetime.now(UTC) + timedelta(days=11)
    assert permit["columns"][ds_a["id"]] == ["age", "sex", "cost"]
    assert permit["columns"][ds_b["id"]] == ["age", "sex", "diagnosis", "cost"]
    # Classification is the highest sensitivity among permitted columns.
    assert permit["classification"] == "sensitive"


def test_one_denial_denies_the_request(make_party: Any, make_agent: Any) -> None:
    a, b = make_party("provider"), make_party("provider")
    agent = make_agent(a, b)
    ds_a, ds_b = register(a, agent), register(b, agent)
    requester = make_party("requester")
    req = request_access(requester, ds_a, ds_b)
    r = a.post(f"/requests/{req['id']}/items/{ds_a['id']}/deny",
               {"reason": "purpose does not justify diagnosis codes"})
    assert r.json["status"] == "denied"
    r = b.post(f"/requests/{req['id']}/items/{ds_b['id']}/approve", approval())
    assert r.status_code == 409
    seen = requester.get(f"/requests/{req['id']}").json
    assert seen["items"][0]["reason"] == "purpose does not justify diagnosis codes"
    assert seen["permit_id"] is None


def test_provider_cannot_decide_for_another(make_party: Any, make_agent: Any) -> None:
    a, b = make_party("provider"), make_party("provider")
    agent = make_agent(a, b)
    ds_a = register(a, agent)
    req = request_access(make_party("requester"), ds_a)
    r = b.post(f"/requests/{req['id']}/items/{ds_a['id']}/approve", approval())
    assert r.status_code == 404


def test_approval_may_only_narrow_columns(make_party: Any, make_agent: Any) -> None:
    a = make_party("provider")
    ds = register(a, make_agent(a))
    req = request_access(make_party("requester"), ds, columns=("age",))
    r = a.post(f"/requests/{req['id']}/items/{ds['id']}/approve",
               approval(columns=["age", "patient_id"]))
    assert r.status_code == 400 and r.json["field"] == "columns[1]"


def test_approval_in_the_past_is_refused(make_party: Any, make_agent: Any) -> None:
    a = make_party("provider")
    ds = register(a, make_agent(a))
    req = request_access(make_party("requester"), ds)
    r = a.post(f"/requests/{req['id']}/items/{ds['id']}/approve", approval(days=-1))
    assert r.status_code == 400 and r.json["field"] == "expires_at"


def test_not_open_dataset_never_requested(make_party: Any, make_agent: Any) -> None:
    a = make_party("provider")
    ds = register(a, make_agent(a), openness="not_open")
    r = make_party("requester").post("/requests", {
        "purpose": "Trying to use data that is not open.", "use_kind": "statistics",
        "business_system": "x", "items": [{"dataset_id": ds["id"], "columns": ["age"]}]})
    assert r.status_code == 400 and r.json["field"] == "items[0].dataset_id"


def test_unconditional_dataset_is_approved_automatically(make_party: Any,
                                                          make_agent: Any) -> None:
    a = make_party("provider")
    ds = register(a, make_agent(a), openness="unconditional")
    req = request_access(make_party("requester"), ds)
    assert req["status"] == "approved" and req["permit_id"]
    assert req["items"][0]["decided_by"] == "system:unconditional"


def test_unknown_column_is_named(make_party: Any, make_agent: Any) -> None:
    a = make_party("provider")
    ds = register(a, make_agent(a))
    r = make_party("requester").post("/requests", {
        "purpose": "Average cost per something.", "use_kind": "statistics",
        "business_system": "x", "items": [{"dataset_id": ds["id"], "columns": ["salary"]}]})
    assert r.status_code == 400 and r.json["field"] == "items[0].columns[0]"


def test_provider_lists_only_requests_touching_its_data(make_party: Any,
                                                        make_agent: Any) -> None:
    a, b = make_party("provider"), make_party("provider")
    agent = make_agent(a, b)
    ds_a, ds_b = register(a, agent), register(b, agent)
    requester = make_party("requester")
    req_a = request_access(requester, ds_a)
    request_access(requester, ds_b)
    assert [r["id"] for r in a.get("/requests").json["requests"]] == [req_a["id"]]
