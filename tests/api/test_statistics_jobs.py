"""Statistics jobs: a declared spec, validated against the permit before anything runs."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.api.helpers import (
    PATIENT_FIELDS,
    approval,
    permit_for,
    register,
    request_access,
)
from tests.conftest import Actor

SPEC = {"analyses": [
    {"kind": "frequency", "dims": ["sex", "diagnosis"]},
    {"kind": "magnitude", "dims": ["diagnosis"], "value": "cost",
     "statistics": ["sum", "mean", "median"]},
    {"kind": "ols", "y": "cost", "x": ["age"]},
    {"kind": "chi_square", "dims": ["sex", "diagnosis"]},
]}


def _world(make_party: Any, make_agent: Any) -> tuple[Actor, Actor, str, str]:
    provider, requester = make_party("provider"), make_party("requester")
    agent = make_agent(provider)
    ds, permit_id = permit_for(requester, provider, agent)
    return requester, agent, ds["id"], permit_id


def _submit(requester: Actor, permit_id: str, ds_id: str, spec: Any) -> Any:
    return requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds_id],
                                    "statistics": spec})


def test_a_statistics_job_is_queued_and_dispatched_without_a_script(
        make_party: Any, make_agent: Any) -> None:
    requester, agent, ds_id, permit_id = _world(make_party, make_agent)
    r = _submit(requester, permit_id, ds_id, SPEC)
    assert r.status_code == 201, r.json
    task = agent.post("/agent/tasks/next").json["task"]
    assert task["kind"] == "statistics" and task["job_id"] == r.json["id"]
    assert task["statistics"]["analyses"][0] == {"kind": "frequency",
                                                  "dims": ["sex", "diagnosis"]}
    # The spec's digest stands where a script's would, on the job and the ledger.
    assert len(r.json["script_sha256"]) == 64


@pytest.mark.parametrize(("spec", "field"), [
    ({"analyses": [{"kind": "frequency", "dims": ["patient_id"]}]},
     "statistics.analyses[0].dims[0]"),  # not a permitted column
    ({"analyses": [{"kind": "magnitude", "value": "sex", "statistics": ["mean"]}]},
     "statistics.analyses[0].value"),  # not numeric
    ({"analyses": [{"kind": "frequency", "dims": ["sex", "sex"]}]},
     "statistics.analyses[0].dims"),
    ({"analyses": [{"kind": "histogram", "dims": ["sex"]}]}, "statistics.analyses[0]"),
    ({"analyses": []}, "statistics.analyses"),
    ({"version": 2, "analyses": [{"kind": "frequency", "dims": ["sex"]}]},
     "statistics.version"),
    ({"analyses": [{"kind": "ols", "y": "cost", "x": ["cost"]}]}, "statistics.analyses[0].x"),
    ([1, 2], "statistics"),
])
def test_a_bad_spec_is_refused_naming_the_field(make_party: Any, make_agent: Any,
                                                spec: Any, field: str) -> None:
    requester, agent, ds_id, permit_id = _world(make_party, make_agent)
    r = _submit(requester, permit_id, ds_id, spec)
    assert r.status_code == 400 and r.json["field"] == field, r.json
    assert agent.post("/agent/tasks/next").json["task"] is None


def test_exactly_one_of_script_and_statistics(make_party: Any, make_agent: Any) -> None:
    requester, _, ds_id, permit_id = _world(make_party, make_agent)
    both = requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds_id],
                                    "statistics": SPEC, "script": "print(1)\n"})
    neither = requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds_id]})
    for r in (both, neither):
        assert r.status_code == 400 and r.json["field"] == "script", r.json


def test_the_spec_is_stored_canonically(make_party: Any, make_agent: Any) -> None:
    requester, agent, ds_id, permit_id = _world(make_party, make_agent)
    _submit(requester, permit_id, ds_id, {"analyses": [{"dims": ["sex"], "kind": "frequency"}]})
    task = agent.post("/agent/tasks/next").json["task"]
    assert json.loads(base64.b64decode(task["script_b64"])) == task["statistics"]


def test_disclosure_settings_are_approved_per_provider_and_the_strictest_wins(
        make_party: Any, make_agent: Any) -> None:
    a, b, requester = make_party("provider"), make_party("provider"), make_party("requester")
    agent = make_agent(a, b)
    ds_a, ds_b = register(a, agent), register(b, agent)
    req = request_access(requester, ds_a, ds_b)
    bad = a.post(f"/requests/{req['id']}/items/{ds_a['id']}/approve",
                 approval(disclosure={"p_percent": 2}))
    assert bad.status_code == 400 and bad.json["field"] == "disclosure.p_percent", bad.json
    unknown = a.post(f"/requests/{req['id']}/items/{ds_a['id']}/approve",
                     approval(disclosure={"min_count": 1}))
    assert unknown.status_code == 400 and unknown.json["field"] == "disclosure", unknown.json
    a.post(f"/requests/{req['id']}/items/{ds_a['id']}/approve",
           approval(disclosure={"p_percent": 0.2, "min_dof": 30}))
    r = b.post(f"/requests/{req['id']}/items/{ds_b['id']}/approve",
               approval(min_cell=20, disclosure={"dominance_n": 1, "dominance_k": 0.5}))
    permit = requester.get(f"/permits/{r.json['permit_id']}").json
    assert permit["min_cell_count"] == 20
    d = permit["disclosure"]
    assert (d["p_percent"], d["min_dof"]) == (0.2, 30)
    # nk rules are not ordered: both providers' rules stay in force.
    assert {(d["dominance_n"], d["dominance_k"]), *map(tuple, d["extra_dominance"])} == {
        (1, 0.5), (2, 0.9)}


def test_the_task_names_the_requester_for_the_providers_audit(
        make_party: Any, make_agent: Any) -> None:
    requester, agent, ds_id, permit_id = _world(make_party, make_agent)
    _submit(requester, permit_id, ds_id, SPEC)
    task = agent.post("/agent/tasks/next").json["task"]
    assert task["requester_id"] == requester.id


def test_the_task_names_the_datasets_identifier_fields_without_permitting_them(
        make_party: Any, make_agent: Any) -> None:
    # Contributors are persons: the agent reads the identifier to count them, whatever
    # the permit, and never projects it.
    requester, agent, ds_id, permit_id = _world(make_party, make_agent)
    _submit(requester, permit_id, ds_id, SPEC)
    ds = agent.post("/agent/tasks/next").json["task"]["datasets"][0]
    assert ds["identifiers"] == ["patient_id"]
    assert "patient_id" not in [f["name"] for f in ds["fields"]]


DP_SPEC = {"analyses": [{"kind": "frequency", "dims": ["sex", "diagnosis"]}],
           "dp": {"epsilon": 0.4}}


def test_a_noised_job_charges_the_permits_epsilon_and_says_so(
        make_party: Any, make_agent: Any) -> None:
    provider, requester = make_party("provider"), make_party("requester")
    agent = make_agent(provider)
    ds, permit_id = permit_for(requester, provider, agent, epsilon_budget=1.0)
    # A permit with a budget releases noised results only.
    plain = _submit(requester, permit_id, ds["id"], SPEC)
    assert plain.status_code == 409, plain.json
    first = _submit(requester, permit_id, ds["id"], DP_SPEC)
    assert first.status_code == 201, first.json
    assert first.json["dp"]["epsilon"] == 0.4 and "laplace" in first.json["dp"]["mechanism"]
    assert requester.get(f"/permits/{permit_id}").json["epsilon_spent"] == pytest.approx(0.4)
    _submit(requester, permit_id, ds["id"], DP_SPEC)
    over = _submit(requester, permit_id, ds["id"], DP_SPEC)
    assert over.status_code == 409 and "budget" in over.json["message"], over.json
    assert requester.get(f"/permits/{permit_id}").json["epsilon_spent"] == pytest.approx(0.8)
    # The task carries the spec's dp part to the agent, which draws the noise.
    task = agent.post("/agent/tasks/next").json["task"]
    assert task["statistics"]["dp"]["epsilon"] == 0.4


def test_a_spec_without_dp_on_a_permit_without_budget_is_refused_dp(
        make_party: Any, make_agent: Any) -> None:
    requester, _, ds_id, permit_id = _world(make_party, make_agent)
    r = _submit(requester, permit_id, ds_id, DP_SPEC)
    assert r.status_code == 409 and "budget" in r.json["message"], r.json


def _submitted(regulator: Actor, job_id: str) -> dict[str, Any]:
    page = regulator.get("/ledger/entries?start=0&end=1000").json
    entries = [json.loads(base64.b64decode(e["data"])) for e in page["entries"]]
    body: dict[str, Any] = next(e["body"] for e in entries
                                if e["kind"] == "job.submitted" and e["body"]["job_id"] == job_id)
    return body


@pytest.mark.parametrize("identified", [True, False])
def test_a_noised_jobs_privacy_unit_is_on_the_job_and_the_ledger(
        make_party: Any, make_agent: Any, identified: bool) -> None:
    provider, requester = make_party("provider"), make_party("requester")
    agent = make_agent(provider)
    fields = [{**f, "sensitivity": "internal"} if f["name"] == "patient_id" else f
              for f in PATIENT_FIELDS]
    ds = register(provider, agent, **({} if identified else {"fields": fields}))
    req = request_access(requester, ds)
    permit_id = provider.post(f"/requests/{req['id']}/items/{ds['id']}/approve",
                              approval(epsilon_budget=1.0)).json["permit_id"]
    spec = {**DP_SPEC, "dp": {"epsilon": 0.4, "max_records_per_person": 3}}
    r = _submit(requester, permit_id, ds["id"], spec)
    assert r.status_code == 201, r.json
    logged = _submitted(make_party("regulator"), r.json["id"])["dp"]
    shown = requester.get(f"/jobs/{r.json['id']}").json["dp"]
    for dp in (r.json["dp"], shown, logged):
        if identified:
            assert dp["unit"] == "person" and dp["max_records_per_person"] == 3, dp
        else:
            assert dp["unit"] == "record" and "max_records_per_person" not in dp, dp
    assert logged["epsilon"] == 0.4
    bad = _submit(requester, permit_id, ds["id"],
                  {**DP_SPEC, "dp": {"epsilon": 0.4, "max_records_per_person": 0}})
    assert bad.status_code == 400, bad.json
    assert bad.json["field"] == "statistics.dp.max_records_per_person" and bad.json["rule"]
