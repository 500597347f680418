"""Private set intersection among three providers through the API: every agent's real PSI
code (containers/psi_part.py) on its own thread, the controller relaying the ring's blinded
sets only; the release against a plain pandas intersection, and the refusals."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flask import Flask
from sqlalchemy import select

import compute.psi
from authz.models import PsiChunk
from authz.wire import RunReport, RunTask
from compute.psi import parse_psi_spec, shown_cells
from compute.psi_ring import pack
from containers import psi_part
from sandbox import db
from tests.api.helpers import approval, dataset_body
from tests.api.test_psi_jobs import DISTRICTS, SOCIAL, TAX, Relay, prepared
from tests.conftest import Actor

BANK = [{"name": "credit_code", "type": "string", "sensitivity": "identifier"},
        {"name": "segment", "type": "string", "sensitivity": "internal"}]
SPEC = {"id": "credit_code", "categories": {"column": "district", "values": DISTRICTS},
        "value": {"column": "employees"}}
ORDER = ("tax", "social", "bank")  # ring order; the social insurance fund holds the columns



@pytest.fixture(autouse=True)
def narrow_platform_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """The platform's value width, set to 8 bits here (controller and agents run in this
    process): every value of these registers fits, and each bit less is one group less
    per sum to compute under a shared CI machine's load."""
    monkeypatch.setattr(compute.psi, "PSI_VALUE_BITS", 8)

def registers() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(11)
    codes = [f"91310{x:013d}" for x in rng.choice(10**12, size=700, replace=False)]
    return {"tax": pd.DataFrame({"credit_code": codes[:400],
                                 "industry": rng.choice(["C", "F", "I"], 400)}),
            "social": pd.DataFrame({"credit_code": codes[150:650],
                                    "district": rng.choice([*DISTRICTS, "Other"], 500,
                                                           p=[0.3, 0.3, 0.3, 0.05, 0.05]),
                                    "employees": rng.integers(0, 250, 500)}),
            "bank": pd.DataFrame({"credit_code": rng.choice(codes, 450, replace=False),
                                  "segment": rng.choice(["sme", "corp"], 450)})}


def world(make_party: Any, admin: Actor, max_runs: int = 4) -> dict[str, Any]:
    requester = make_party("requester")
    sides = {}
    for name, fields in (("tax", TAX), ("social", SOCIAL), ("bank", BANK)):
        p = make_party("provider")
        r = admin.post("/agents", {"name": f"{name} agent", "providers": [p.id]})
        agent = Actor(admin.client, r.json["id"], r.json["token"], "agent")
        ds = p.post("/datasets", dataset_body(fields=fields)).json
        assert agent.post(f"/agent/datasets/{ds['id']}/schema",
                          {"ok": True, "rows": 500}).status_code == 200
        sides[name] = {"provider": p, "agent": agent, "ds": ds}
    cols = {"tax": ["credit_code"], "social": ["credit_code", "district", "employees"],
            "bank": ["credit_code"]}
    r = requester.post("/requests", {
        "purpose": "Verify which share of registered firms file social insurance and bank.",
        "use_kind": "verification", "business_system": "bank-kyc",
        "items": [{"dataset_id": sides[n]["ds"]["id"], "columns": cols[n]} for n in ORDER]})
    assert r.status_code == 201, r.json
    for s in sides.values():
        r2 = s["provider"].post(f"/requests/{r.json['id']}/items/{s['ds']['id']}/approve",
                                approval(max_runs=max_runs))
    return {"requester": requester, "sides": sides, "permit": r2.json["permit_id"]}


def submit(w: dict[str, Any], **over: Any) -> Any:
    body = {"permit_id": w["permit"],
            "dataset_ids": [w["sides"][n]["ds"]["id"] for n in ORDER],
            "holder_dataset_id": w["sides"]["social"]["ds"]["id"], "spec": SPEC, **over}
    return w["requester"].post("/psi-jobs", body)


def leased(w: dict[str, Any], name: str) -> RunTask:
    task = RunTask.model_validate(
        w["sides"][name]["agent"].post("/agent/tasks/next").json["task"])
    assert task.psi is not None and task.psi.role == "ring" and task.psi.ring is not None
    return task


def stored_messages(app: Flask, joint_id: str) -> dict[str, bytes]:
    """The messages the controller holds for the job, each whole (its chunks joined)."""
    with app.app_context(), db.services().sessions() as s:
        held: dict[str, list[bytes]] = {}
        for c in s.scalars(select(PsiChunk).where(PsiChunk.joint_id == joint_id)
                           .order_by(PsiChunk.name, PsiChunk.seq)):
            held.setdefault(c.name, []).append(c.data)
        return {name: b"".join(parts) for name, parts in held.items()}


@pytest.mark.slow
def test_three_providers_through_the_api_match_a_plain_intersection(
        app: Flask, make_party: Any, admin: Actor, tmp_path: Path) -> None:
    w = world(make_party, admin)
    r = submit(w)
    assert r.status_code == 201, r.json
    frames = registers()
    tasks = {n: leased(w, n) for n in ORDER}
    assert [tasks[n].psi.ring.position for n in ORDER] == [0, 1, 2]  # type: ignore[union-attr]
    reports: dict[str, RunReport] = {}

    def run(name: str) -> None:
        reports[name] = psi_part.run_part(
            Relay(w["sides"][name]["agent"]), tasks[name],
            prepared(tasks[name], frames[name], tmp_path / name), timeout_s=120)

    threads = [threading.Thread(target=run, args=(n,)) for n in ORDER]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert reports["tax"].state == "released", reports["tax"].reason  # the counter
    assert reports["social"].outputs == () and reports["bank"].outputs == ()
    # What the controller stores: nine blinded messages; no identifier, nor its SHA-256.
    stored = stored_messages(app, r.json["id"])
    assert sorted(stored) == sorted(f"ring.{o}.{h}" for o in range(3) for h in range(3))
    blob = b"".join(stored.values())
    assert len(blob) > 2 * Relay.CHUNK  # the messages travelled in several chunks
    for frame in frames.values():
        for code in frame["credit_code"].head(60):
            digest = hashlib.sha256(code.encode())
            assert code.encode() not in blob and code[-8:].encode() not in blob
            assert digest.digest() not in blob
            assert digest.hexdigest().encode() not in blob
    for name in ORDER:
        res = w["sides"][name]["agent"].post(f"/agent/jobs/{tasks[name].job_id}/result",
                                             json.loads(reports[name].model_dump_json()))
        assert res.status_code == 200, res.json
    joint = w["requester"].get(f"/joint-jobs/{r.json['id']}").json
    assert joint["state"] == "combined", joint["reason"]
    out = joint["aggregate"]
    common = set(frames["tax"]["credit_code"]) & set(frames["bank"]["credit_code"])
    social = frames["social"]
    want = social[social["credit_code"].isin(common)]
    assert out["intersection"] == len(want) and 10 <= len(want) < 400
    assert out["sum"] == int(want["employees"].sum())
    subs = [want[want["district"] == d] for d in DISTRICTS]
    # Below 10 hidden, and (secondary suppression) so many more that the hidden part is
    # not 1 to 9 records: here one more district than the small ones.
    _, shown = shown_cells(len(want), [len(sub) for sub in subs], 10)
    assert sum(not ok for ok in shown) > sum(len(sub) < 10 for sub in subs)
    for cell, sub, ok in zip(out["categories"], subs, shown, strict=True):
        assert cell["count"] == (len(sub) if ok else None)
        assert cell["sum"] == (int(sub["employees"].sum()) if ok else None)
    assert out["intersection"] - sum(len(s) for s, ok in zip(subs, shown, strict=True)
                                     if ok) >= 10
    assert stored_messages(app, r.json["id"]) == {}  # dropped once the job combined
    page = make_party("regulator").get("/ledger/entries?start=0&end=1000").json
    entries = [json.loads(base64.b64decode(e["data"])) for e in page["entries"]]
    assert sum(e["kind"] == "psi.message" for e in entries) == 9
    assert not any(code in json.dumps(entries) for code in frames["tax"]["credit_code"])


def test_three_provider_refusals(make_party: Any, admin: Actor) -> None:
    w = world(make_party, admin, max_runs=4)
    ids = [w["sides"][n]["ds"]["id"] for n in ORDER]
    social = w["sides"]["social"]["ds"]["id"]
    for over, field in (
            ({"dataset_ids": ids[:2]}, "dataset_ids"),  # a provider missing
            ({"dataset_ids": [*ids[:2], "ds_notonthepermit"]}, "dataset_ids"),
            ({"dataset_ids": [ids[0], ids[0], ids[2]]}, "dataset_ids"),
            ({"holder_dataset_id": "ds_notonthepermit"}, "holder_dataset_id"),
            ({"counter_dataset_id": social}, "counter_dataset_id"),
            ({"client_dataset_id": ids[0]}, "dataset_ids"),  # both request shapes at once
            ({"holder_dataset_id": None}, "dataset_ids"),
            ({"spec": {"id": "industry"}}, "psi.id")):
        r = submit(w, **over)
        assert r.status_code == 400 and r.json["field"] == field, (over, r.json)
    r = submit(w, holder_dataset_id=ids[0])  # the tax register has no district column
    assert r.status_code == 400 and r.json["field"] == "psi.categories.column"
    r = submit(w)
    assert r.status_code == 201, r.json
    r = submit(w)  # three queued parts hold three of the four runs
    assert r.status_code == 409 and "too few runs" in r.json["message"]
    # The relay: who sends and who reads each hop, and what a hop may hold.
    tasks = {n: leased(w, n) for n in ORDER}
    tax, bank = w["sides"]["tax"]["agent"], w["sides"]["bank"]["agent"]
    url = f"/agent/jobs/{tasks['tax'].job_id}/psi"
    point = b"\x02" + bytes(32)
    msg = {"data_b64": base64.b64encode(pack({"ids": [point] * 20})).decode()}
    assert tax.post(f"{url}/ring.1.0", msg).status_code == 403  # the holder's to send
    assert tax.post(f"{url}/ring.0.3", msg).status_code == 404  # no fourth hop in three
    assert tax.post(f"{url}/request", msg).status_code == 404  # not a two-party job
    assert tax.post(f"{url}/ring.0.0", {"data_b64": "AAAA"}).status_code == 400
    wrong = {"data_b64": base64.b64encode(pack({"all": [point] * 20})).decode()}
    assert tax.post(f"{url}/ring.0.0", wrong).json["rule"] == "psi_ring_sets"
    assert tax.post(f"{url}/ring.0.0", msg).status_code == 200
    assert tax.get(f"{url}/ring.0.0").status_code == 403  # read by the next member only
    assert tax.get(f"{url}/ring.2.0").json["ready"] is False  # bank's own set, not sent yet
    burl = f"/agent/jobs/{tasks['bank'].job_id}/psi"
    # Tax's set travels the other non-holder (bank) first and reaches the holder last.
    assert bank.get(f"{burl}/ring.0.0").json["ready"] is True
    fewer = {"data_b64": base64.b64encode(pack({"ids": [point] * 19})).decode()}
    surl = f"/agent/jobs/{tasks['social'].job_id}/psi"
    social_agent = w["sides"]["social"]["agent"]
    assert social_agent.get(f"{surl}/ring.0.0").status_code == 403
    assert social_agent.post(f"{surl}/ring.0.1", msg).status_code == 403
    r = bank.post(f"{burl}/ring.0.1", fewer)  # a hop that drops a point
    assert r.status_code == 400 and r.json["rule"] == "psi_ring_sizes"
    # The holder's own sets: one per group, each padded to one size (its identifier count).
    names = parse_psi_spec(SPEC, {f["name"]: f["type"] for f in SOCIAL}).groups()

    def holder_msg(size: Callable[[str], int]) -> dict[str, str]:
        return {"data_b64": base64.b64encode(pack({n: [point] * size(n) for n in names}))
                .decode()}
    r = social_agent.post(f"{surl}/ring.1.0", holder_msg(lambda n: 20 + (n == "cat.1")))
    assert r.status_code == 400 and r.json["rule"] == "psi_ring_layout"
    assert social_agent.post(f"{surl}/ring.1.0", holder_msg(lambda n: 30)).status_code == 200
    # The holder re-blinds tax's set last: one version per group, each the size of the set.
    assert bank.post(f"{burl}/ring.0.1", msg).status_code == 200
    assert bank.post(f"{burl}/ring.0.2", holder_msg(lambda n: 20)).status_code == 403
    assert tax.get(f"{url}/ring.0.1").status_code == 403  # the holder reads it, not tax
    r = social_agent.post(f"{surl}/ring.0.2", msg)  # not per group
    assert r.status_code == 400 and r.json["rule"] == "psi_ring_sets"
    r = social_agent.post(f"{surl}/ring.0.2", holder_msg(lambda n: 20 - (n == "bit.3")))
    assert r.status_code == 400 and r.json["rule"] == "psi_ring_sizes"
    assert social_agent.post(f"{surl}/ring.0.2", holder_msg(lambda n: 20)).status_code == 200
    assert tax.get(f"{url}/ring.0.2").json["ready"] is True  # the counter reads the last hop


def test_two_providers_in_the_new_shape_take_the_two_party_protocol(
        make_party: Any, admin: Actor) -> None:
    from tests.api.test_psi_jobs import SPEC as TWO_SPEC
    from tests.api.test_psi_jobs import world as two_world
    w = two_world(make_party, admin)
    tax, social = (w["sides"][n]["ds"]["id"] for n in ("tax", "social"))
    r = w["requester"].post("/psi-jobs", {"permit_id": w["permit"], "spec": TWO_SPEC,
                                          "dataset_ids": [social, tax],
                                          "holder_dataset_id": social})
    assert r.status_code == 201, r.json
    task = RunTask.model_validate(
        w["sides"]["tax"]["agent"].post("/agent/tasks/next").json["task"])
    assert task.psi is not None and task.psi.role == "client" and task.psi.ring is None
