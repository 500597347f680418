from __future__ import annotations

from typing import Any

import pytest

from tests.api.helpers import PATIENT_FIELDS, dataset_body, register
from tests.conftest import Actor


def ledger_size(app: Any) -> int:
    ext = app.extensions["sandbox"]
    with ext.sessions() as s:
        size: int = ext.log.size(s)
        return size


def test_register_then_agent_activates(app: Any, make_party: Any, make_agent: Any) -> None:
    provider = make_party("provider")
    agent = make_agent(provider)
    r = provider.post("/datasets", dataset_body())
    assert r.status_code == 202
    assert r.json["status"] == "checking"
    task = agent.post("/agent/tasks/next").json["task"]
    assert task["type"] == "schema_check" and task["dataset"]["id"] == r.json["id"]
    v = agent.post(f"/agent/datasets/{r.json['id']}/schema", {"ok": True, "rows": 42})
    assert v.status_code == 200 and v.json["status"] == "active"
    ds = provider.get(f"/datasets/{r.json['id']}").json
    assert ds["status"] == "active" and ds["rows"] == 42


def test_rejected_schema_is_recorded_and_inert(make_party: Any, make_agent: Any) -> None:
    provider = make_party("provider")
    agent = make_agent(provider)
    r = provider.post("/datasets", dataset_body())
    v = agent.post(f"/agent/datasets/{r.json['id']}/schema",
                   {"ok": False, "error": {"field": "fields[age].type", "rule": "not integers"}})
    assert v.json["status"] == "rejected"
    ds = provider.get(f"/datasets/{r.json['id']}").json
    assert ds["status_reason"] == {"field": "fields[age].type", "rule": "not integers"}
    other = make_party("requester")
    assert other.get(f"/datasets/{r.json['id']}").status_code == 404


def test_agent_of_other_provider_cannot_answer(make_party: Any, make_agent: Any) -> None:
    provider = make_party("provider")
    stranger = make_agent(make_party("provider"))
    r = provider.post("/datasets", dataset_body())
    assert stranger.post("/agent/tasks/next").json["task"] is None
    v = stranger.post(f"/agent/datasets/{r.json['id']}/schema", {"ok": True, "rows": 1})
    assert v.status_code == 404


@pytest.mark.parametrize(("change", "field", "rule"), [
    ({"surprise": 1}, "surprise", "unknown field"),
    ({"name": None}, "name", "required"),
    ({"name": 7}, "name", "must be a string"),
    ({"openness": "sometimes"}, "openness", "must be one of unconditional, conditional, "
                                            "not_open"),
    ({"publish_date": "15/01/2026"}, "publish_date", "must be a date YYYY-MM-DD"),
    ({"format": "xlsx"}, "format", "must be one of csv, parquet"),
    ({"fields": []}, "fields", "must have between 1 and 1000 items"),
    ({"fields": [{**PATIENT_FIELDS[0], "type": "blob"}]}, "fields[0].type",
     "must be one of integer, number, string, date, boolean"),
    ({"fields": [{**PATIENT_FIELDS[0], "level": 3}]}, "fields[0].level", "unknown field"),
    ({"fields": [PATIENT_FIELDS[0], PATIENT_FIELDS[0]]}, "fields",
     "field names must be unique"),
    ({"code": "has space"}, "code", "must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}"),
])
def test_bad_metadata_is_400_and_writes_nothing(app: Any, make_party: Any, change: Any,
                                                field: str, rule: str) -> None:
    provider = make_party("provider")
    before = ledger_size(app)
    body = {k: v for k, v in {**dataset_body(), **change}.items() if v is not None}
    r = provider.post("/datasets", body)
    assert r.status_code == 400, r.json
    assert (r.json["field"], r.json["rule"]) == (field, rule)
    assert ledger_size(app) == before
    assert provider.get("/datasets").json["datasets"] == []


def test_malformed_json_and_wrong_content_type(make_party: Any) -> None:
    provider = make_party("provider")
    h = {"Authorization": f"Bearer {provider.token}"}
    r = provider.client.post("/api/v1/datasets", data="{not json", headers=h,
                             content_type="application/json")
    assert r.status_code == 400 and r.json["rule"] == "must be well-formed JSON"
    r = provider.client.post("/api/v1/datasets", data="a=b", headers=h)
    assert r.status_code == 400 and r.json["field"] == "body"
    r = provider.post("/datasets", [1, 2])
    assert r.status_code == 400 and r.json["rule"] == "must be a JSON object"


def test_a_code_is_registered_again_as_its_next_version(make_party: Any,
                                                         make_agent: Any) -> None:
    provider = make_party("provider")
    agent = make_agent(provider)
    body = dataset_body()
    first = provider.post("/datasets", body)
    assert first.status_code == 202 and first.json["version"] == 1
    # Still being checked: a second registration now is a mistake, said with what to do.
    again = provider.post("/datasets", body)
    assert again.status_code == 409 and "once it is active or rejected" in again.json["message"]
    v = agent.post(f"/agent/datasets/{first.json['id']}/schema",
                   {"ok": False, "error": {"field": "fields[age].type", "rule": "not integers"}})
    assert v.json["status"] == "rejected"
    second = provider.post("/datasets", body)
    assert second.status_code == 202 and second.json["version"] == 2
    assert second.json["code"] == first.json["code"] and second.json["id"] != first.json["id"]
    agent.post(f"/agent/datasets/{second.json['id']}/schema", {"ok": True, "rows": 9})
    # An outdated active version is replaced the same way.
    third = provider.post("/datasets", body)
    assert third.status_code == 202 and third.json["version"] == 3
    # Another provider never takes over the code.
    other = make_party("provider").post("/datasets", body)
    assert other.status_code == 409 and "another provider" in other.json["message"]


def test_location_visible_only_to_owner(make_party: Any, make_agent: Any) -> None:
    provider = make_party("provider")
    ds = register(provider, make_agent(provider))
    assert provider.get(f"/datasets/{ds['id']}").json["location"] == "patients.csv"
    for role in ("requester", "regulator", "admin"):
        seen = make_party(role).get(f"/datasets/{ds['id']}").json
        assert "location" not in seen
        assert "rows" in seen  # metadata yes, rows of data never


def test_only_providers_register(make_party: Any, admin: Actor) -> None:
    for actor in (make_party("requester"), make_party("regulator"), admin):
        assert actor.post("/datasets", dataset_body()).status_code == 403
