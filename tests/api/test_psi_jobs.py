"""Private set intersection through the API: the agents' real PSI code on both sides, the
controller relaying blinded messages only; the release against a plain intersection."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import compute.psi
from authz.wire import RunReport, RunTask
from compute.psi import parse_psi_spec
from containers import psi_part
from tests.api.helpers import approval, dataset_body
from tests.conftest import Actor

TAX = [{"name": "credit_code", "type": "string", "sensitivity": "identifier"},
       {"name": "industry", "type": "string", "sensitivity": "internal"}]
SOCIAL = [{"name": "credit_code", "type": "string", "sensitivity": "identifier"},
          {"name": "district", "type": "string", "sensitivity": "internal"},
          {"name": "employees", "type": "integer", "sensitivity": "sensitive"}]
DISTRICTS = ["Huangpu", "Xuhui", "Pudong", "Minhang"]
SPEC = {"id": "credit_code", "categories": {"column": "district", "values": DISTRICTS},
        "value": {"column": "employees"}}


class Relay:
    """The agent's two PSI calls over the test client (the real controller app), chunked
    as the agent's client chunks (containers/controller_client.py), in small chunks so that
    every message of these tests travels in several."""

    CHUNK = 16 * 1024

    def __init__(self, agent: Actor) -> None:
        self.agent = agent

    def psi_post(self, job_id: str, name: str, data: bytes) -> None:
        chunks = max(1, -(-len(data) // self.CHUNK))
        for seq in range(chunks):
            part = data[seq * self.CHUNK:(seq + 1) * self.CHUNK]
            r = self.agent.post(f"/agent/jobs/{job_id}/psi/{name}", {
                "data_b64": base64.b64encode(part).decode(), "chunk": seq,
                "chunks": chunks})
            if r.status_code >= 400:
                raise RuntimeError(r.json["message"])

    def psi_get(self, job_id: str, name: str) -> bytes | None:
        parts: list[bytes] = []
        while True:
            r = self.agent.get(f"/agent/jobs/{job_id}/psi/{name}?chunk={len(parts)}")
            if r.status_code >= 400:
                raise RuntimeError(r.json["message"])
            if not r.json["ready"]:
                return None
            parts.append(base64.b64decode(r.json["data_b64"]))
            if len(parts) == r.json["chunks"]:
                return b"".join(parts)



@pytest.fixture(autouse=True)
def narrow_platform_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """The platform's value width, set to 10 bits here (controller and agents run in this
    process): every value of these registers fits, and each bit less is one group less
    per sum to compute under a shared CI machine's load."""
    monkeypatch.setattr(compute.psi, "PSI_VALUE_BITS", 10)

def registers() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(5)
    codes = [f"91310{x:013d}" for x in rng.choice(10**12, size=700, replace=False)]
    tax = pd.DataFrame({"credit_code": codes[:400],
                        "industry": rng.choice(["C", "F", "I"], 400)})
    social = pd.DataFrame({"credit_code": codes[150:700],
                           "district": rng.choice([*DISTRICTS, "Other"], 550,
                                                  p=[0.3, 0.3, 0.3, 0.05, 0.05]),
                           "employees": rng.integers(0, 1000, 550)})
    return tax, social


def world(make_party: Any, admin: Actor, use_kind: str = "verification") -> dict[str, Any]:
    requester = make_party("requester")
    sides = {}
    for name, fields in (("tax", TAX), ("social", SOCIAL)):
        p = make_party("provider")
        r = admin.post("/agents", {"name": f"{name} agent", "providers": [p.id]})
        agent = Actor(admin.client, r.json["id"], r.json["token"], "agent")
        ds = p.post("/datasets", dataset_body(fields=fields)).json
        assert agent.post(f"/agent/datasets/{ds['id']}/schema",
                          {"ok": True, "rows": 500}).status_code == 200
        sides[name] = {"provider": p, "agent": agent, "ds": ds}
    r = requester.post("/requests", {
        "purpose": "Verify a firm register against social insurance filings.",
        "use_kind": use_kind, "business_system": "bank-kyc",
        "items": [{"dataset_id": sides["tax"]["ds"]["id"], "columns": ["credit_code"]},
                  {"dataset_id": sides["social"]["ds"]["id"],
                   "columns": ["credit_code", "district", "employees"]}]})
    assert r.status_code == 201, r.json
    for s in sides.values():
        r2 = s["provider"].post(f"/requests/{r.json['id']}/items/{s['ds']['id']}/approve",
                                approval(max_runs=4))
    return {"requester": requester, "sides": sides, "permit": r2.json["permit_id"]}


def submit(w: dict[str, Any], spec: Any = SPEC) -> Any:
    return w["requester"].post("/psi-jobs", {
        "permit_id": w["permit"], "client_dataset_id": w["sides"]["tax"]["ds"]["id"],
        "server_dataset_id": w["sides"]["social"]["ds"]["id"], "spec": spec})


def prepared(task: RunTask, frame: pd.DataFrame, root: Path) -> Path:
    """What the agent's prepare leaves: the projected permitted columns and input.json."""
    job_dir = root / task.job_id
    (job_dir / "in").mkdir(parents=True)
    frame[[f.name for f in task.datasets[0].fields]].to_csv(job_dir / "in" / "data.csv",
                                                             index=False)
    (job_dir / "input.json").write_text(json.dumps({"rows": len(frame), "bytes": 1,
                                                    "sha256": "a" * 64}))
    return job_dir


def play(w: dict[str, Any], tmp_path: Path) -> dict[str, RunReport]:
    tax, social = registers()
    reports: dict[str, RunReport] = {}
    tasks = {}
    for name, frame in (("tax", tax), ("social", social)):
        agent = w["sides"][name]["agent"]
        task = RunTask.model_validate(agent.post("/agent/tasks/next").json["task"])
        assert task.psi is not None and task.kind == "psi"
        tasks[name] = (task, prepared(task, frame, tmp_path / name))

    def run(name: str) -> None:
        task, job_dir = tasks[name]
        reports[name] = psi_part.run_part(Relay(w["sides"][name]["agent"]), task, job_dir,
                                          timeout_s=60)

    client = threading.Thread(target=run, args=("tax",))
    client.start()
    run("social")
    client.join()
    for name, report in reports.items():
        r = w["sides"][name]["agent"].post(f"/agent/jobs/{tasks[name][0].job_id}/result",
                                           json.loads(report.model_dump_json()))
        assert r.status_code == 200, r.json
    return reports


def test_psi_through_the_api_matches_a_plain_intersection(make_party: Any, admin: Actor,
                                                          tmp_path: Path) -> None:
    w = world(make_party, admin)
    r = submit(w)
    assert r.status_code == 201, r.json
    reports = play(w, tmp_path)
    assert reports["tax"].state == "released" and reports["social"].outputs == ()
    joint = w["requester"].get(f"/joint-jobs/{r.json['id']}").json
    assert joint["state"] == "combined", joint["reason"]
    out = joint["aggregate"]
    tax, social = registers()
    want = social[social["credit_code"].isin(set(tax["credit_code"]))]
    assert out["intersection"] == len(want) == 250
    assert out["sum"] == int(want["employees"].sum())
    for cell in out["categories"]:
        sub = want[want["district"] == cell["category"]]
        assert cell["count"] == (len(sub) if len(sub) >= 10 else None)
    # The ledger holds each relayed message's size and digest only, never identifiers.
    page = make_party("regulator").get("/ledger/entries?start=0&end=1000").json
    entries = [json.loads(base64.b64decode(e["data"])) for e in page["entries"]]
    msgs = [e for e in entries if e["kind"] == "psi.message"]
    groups = parse_psi_spec(SPEC, {f["name"]: f["type"] for f in SOCIAL}).groups()
    assert sorted(e["body"]["message"] for e in msgs) == sorted(
        ["request", "setup", *(f"response.{g}" for g in groups)])  # one response per group
    blob = json.dumps(entries)
    assert not any(code in blob for code in tax["credit_code"].head(100))


def test_psi_refusals(make_party: Any, admin: Actor, tmp_path: Path) -> None:
    w = world(make_party, admin, use_kind="joint_statistics")
    r = submit(w)
    assert r.status_code == 409 and r.json["error"] == "policy_violation"
    w = world(make_party, admin)
    r = submit(w, spec={"id": "credit_code", "value": {"column": "district"}})
    assert r.status_code == 400 and r.json["field"] == "psi.value.column"
    # The width is the platform's: another is refused on the spec, before any data.
    r = submit(w, spec={"id": "credit_code", "value": {"column": "employees", "bits": 9}})
    assert r.status_code == 400 and (r.json["field"], r.json["rule"]) == (
        "psi.value.bits", "fixed_width")
    r = w["requester"].post("/psi-jobs", {
        "permit_id": w["permit"], "client_dataset_id": w["sides"]["tax"]["ds"]["id"],
        "server_dataset_id": w["sides"]["tax"]["ds"]["id"], "spec": SPEC})
    assert r.status_code == 400
    assert submit(w).status_code == 201
    # A part sends only its own role's messages, and reads only the other's.
    tax_agent = w["sides"]["tax"]["agent"]
    task = tax_agent.post("/agent/tasks/next").json["task"]
    r = tax_agent.post(f"/agent/jobs/{task['job_id']}/psi/response.all", {"data_b64": ""})
    assert r.status_code == 403
    for name in ("response", "response.cat.9", "response.bit.99"):  # not a group of the spec
        r = tax_agent.get(f"/agent/jobs/{task['job_id']}/psi/{name}")
        assert r.status_code == 404, name
    assert tax_agent.get(f"/agent/jobs/{task['job_id']}/psi/request").status_code == 403
    assert tax_agent.get(f"/agent/jobs/{task['job_id']}/psi/setup").json["ready"] is False
