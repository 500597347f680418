"""Private set intersection among three providers end to end: real agents (each in its own
domain, talking HTTP to the embedded controller), the requester's SDK, the release against
a plain pandas intersection."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from compute.psi import PSI_VALUE_BITS
from sandbox.client import Client
from sandbox.sdk import PrivateSetIntersection
from tests.docker.helpers import TEST_LABELS, Stack

DISTRICTS = ["Huangpu", "Xuhui", "Pudong"]
CODE = {"name": "credit_code", "type": "string", "sensitivity": "identifier"}
REGISTERS = {  # ring order; the social insurance fund holds the district and employees
    "tax": [CODE, {"name": "industry", "type": "string", "sensitivity": "internal"}],
    "social": [CODE, {"name": "district", "type": "string", "sensitivity": "internal"},
               {"name": "employees", "type": "integer", "sensitivity": "sensitive"}],
    "fund": [CODE],
}


def frames() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(23)
    codes = [f"91310{x:013d}" for x in rng.choice(10**12, size=400, replace=False)]
    return {"tax": pd.DataFrame({"credit_code": codes[:300],
                                 "industry": rng.choice(["C", "F"], 300)}),
            "social": pd.DataFrame({"credit_code": codes[80:380],
                                    "district": rng.choice(DISTRICTS, 300, p=[.5, .47, .03]),
                                    "employees": rng.integers(1, 120, 300)}),
            "fund": pd.DataFrame({"credit_code": rng.choice(codes, 250, replace=False)})}


@pytest.mark.slow
def test_three_providers_psi_with_real_agents(stack: Stack) -> None:
    if stack.runtime != "runc":
        pytest.skip("PSI runs in the agent, never in a container: one runtime suffices")
    data = frames()
    sides = {}
    for name, fields in REGISTERS.items():
        code = f"PSI-{name.upper()}-{uuid.uuid4().hex[:6]}"
        p = stack.admin.post("/parties", {"name": f"{name} register", "role": "provider",
                                          "code": code})
        root = stack.work / "domains" / code
        root.mkdir(parents=True)
        data[name].to_csv(root / "register.csv", index=False)
        a = stack.admin.post("/agents", {"name": f"{code} agent", "providers": [p["id"]]})
        stack.stack.start_agent(a["token"], [root], stack.work / "jobs" / code, stack.image,
                                poll_wait_s=0.5, labels=dict(TEST_LABELS),
                                runtime=stack.runtime, mock_first=False)
        client = Client(stack.url, p["token"])
        ds = client.post("/datasets", {
            "code": code, "name": f"{name} register", "category": "economy",
            "summary": "One row per firm, keyed by its unified credit code.",
            "format": "csv", "openness": "conditional", "update_cycle": "monthly",
            "publish_date": "2026-10-01", "fields": fields, "location": "register.csv"})
        sides[name] = (client, ds["id"])
    cols = {n: [f["name"] for f in fields if f["name"] != "industry"]
            for n, fields in REGISTERS.items()}
    req = stack.requester.post("/requests", {
        "purpose": "Verify that registered firms file social insurance and contribute to "
                   "the housing fund, by district, without seeing any firm's record.",
        "use_kind": "verification", "business_system": "harbor-kyc-2026",
        "items": [{"dataset_id": sides[n][1], "columns": cols[n]} for n in REGISTERS]})
    for client, ds_id in sides.values():
        r = client.post(f"/requests/{req['id']}/items/{ds_id}/approve", {
            "expires_at": (datetime.now(UTC) + timedelta(days=3)).isoformat(),
            "max_runs": 3, "min_cell_count": 10,
            "risk_assessment": "intersection counts only; no identifier leaves the domain"})
    sdk = PrivateSetIntersection(stack.requester)
    psi_id = sdk.submit_among(
        r["permit_id"], [sides[n][1] for n in REGISTERS], sides["social"][1],
        {"id": "credit_code", "categories": {"column": "district", "values": DISTRICTS},
         "value": {"column": "employees"}}, counter_dataset_id=sides["fund"][1])
    out = sdk.wait(psi_id, timeout_s=120)
    common = set(data["tax"]["credit_code"]) & set(data["fund"]["credit_code"])
    want = data["social"][data["social"]["credit_code"].isin(common)]
    assert out["intersection"] == len(want) and 10 <= len(want) < 250
    assert out["sum"] == int(want["employees"].sum())
    subs = {d: want[want["district"] == d] for d in DISTRICTS}
    # Pudong: a few firms only, and no other district: Xuhui, the smaller of the others, is
    # hidden with it, so Pudong is not the intersection less the shown districts.
    assert 1 <= len(subs["Pudong"]) < 10 <= len(subs["Xuhui"]) < len(subs["Huangpu"])
    for cell in out["categories"]:
        sub = subs[cell["category"]]
        ok = cell["category"] == "Huangpu"
        assert cell["count"] == (len(sub) if ok else None)
        assert cell["sum"] == (int(sub["employees"].sum()) if ok else None)
    assert out["suppressed_cells"] == 2 and out["values_clipped_to"] == [0, 2 ** PSI_VALUE_BITS - 1]
