"""Demo scenario 3: a bank verifies a firm register against social-insurance filings.

The tax bureau and the social insurance fund each run their own agent on their own data;
the bank receives how many registered firms file social insurance, and per district how
many employees they declare, by private set intersection. No unified credit code leaves
either domain, and nobody learns which firms matched.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sandbox.client import ApiError, Client
from sandbox.embedded import EmbeddedStack
from sandbox.sdk import PrivateSetIntersection

DISTRICTS = ["Huangpu", "Xuhui", "Pudong", "Minhang"]
CODE = {"name": "credit_code", "type": "string", "sensitivity": "identifier",
        "description": "unified social credit code (统一社会信用代码)"}
REGISTERS = {
    "TAX": ("Municipal Tax Bureau", "firm_register.csv",
            [CODE, {"name": "industry", "type": "string", "sensitivity": "internal"}]),
    "SIF": ("Social Insurance Fund", "insured_employers.csv",
            [CODE, {"name": "district", "type": "string", "sensitivity": "internal"},
             {"name": "employees", "type": "integer", "sensitivity": "sensitive",
              "description": "insured employees declared"}]),
}


def write_registers(roots: dict[str, Path]) -> None:
    """1,500 registered firms; 1,200 insured employers, 900 of them in the register.

    Small on purpose: counts and sums cost the server one response per group (categories
    and bits), each as large as the register; the demo shows the protocol, not its scale
    (bench.joint_models measures that)."""
    rng = np.random.default_rng(31)
    codes = [f"91310{x:013d}" for x in rng.choice(10**12, size=1800, replace=False)]
    tax = pd.DataFrame({"credit_code": codes[:1500],
                        "industry": rng.choice(["C", "F", "G", "I", "M"], 1500)})
    sif = pd.DataFrame({"credit_code": codes[600:1800],
                        "district": rng.choice([*DISTRICTS, "Jinshan"], 1200,
                                               p=[0.3, 0.25, 0.3, 0.149, 0.001]),
                        "employees": rng.integers(1, 250, 1200)})
    for code, frame in (("TAX", tax), ("SIF", sif)):
        roots[code].mkdir(parents=True, exist_ok=True)
        frame.to_csv(roots[code] / REGISTERS[code][1], index=False)


def bank_verification(stack: EmbeddedStack, admin: Client, image: str, work: Path,
                      expires: str, say: Callable[[str], None]) -> bool:
    roots = {code: work / "domains" / code for code in REGISTERS}
    write_registers(roots)
    sides: dict[str, dict[str, Any]] = {}
    for code, (name, location, fields) in REGISTERS.items():
        p = admin.post("/parties", {"name": name, "role": "provider", "code": code})
        agent = admin.post("/agents", {"name": f"{code} agent", "providers": [p["id"]]})
        stack.start_agent(agent["token"], [roots[code]], work / "jobs" / code, image)
        client = Client(stack.url, p["token"])
        ds = client.post("/datasets", {
            "code": f"{code}-REG", "name": f"{name} register", "category": "economy",
            "summary": "One row per firm, keyed by its unified credit code.", "format": "csv",
            "openness": "conditional", "update_cycle": "monthly",
            "publish_date": "2026-10-01", "fields": fields, "location": location})
        sides[code] = {"client": client, "dataset": ds["id"]}
        say(f"{name} ({code}): {ds['code']} {ds['status']}, {ds['rows']} rows")
    bank_p = admin.post("/parties", {"name": "Harbor Commercial Bank", "role": "requester"})
    bank = Client(stack.url, bank_p["token"])
    req = bank.post("/requests", {
        "purpose": "Verify that registered firms file social insurance, and the employees "
                   "they declare by district, without seeing any firm's record.",
        "use_kind": "verification", "business_system": "harbor-kyc-2026",
        "items": [{"dataset_id": sides["TAX"]["dataset"], "columns": ["credit_code"]},
                  {"dataset_id": sides["SIF"]["dataset"],
                   "columns": ["credit_code", "district", "employees"]}]})
    for side in sides.values():
        r = side["client"].post(f"/requests/{req['id']}/items/{side['dataset']}/approve", {
            "expires_at": expires, "max_runs": 2, "min_cell_count": 10,
            "risk_assessment": "intersection counts only; no identifier leaves the domain"})
    sdk = PrivateSetIntersection(bank)
    try:
        psi_id = sdk.submit(r["permit_id"], sides["TAX"]["dataset"], sides["SIF"]["dataset"],
                            {"id": "credit_code",
                             "categories": {"column": "district",
                                            "values": [*DISTRICTS, "Jinshan"]},
                             "value": {"column": "employees"}})
        # Minutes on a busy two-core machine: every group's response is a pass over the
        # register's points.
        out = sdk.wait(psi_id, timeout_s=900)
    except (ApiError, RuntimeError) as e:
        say(f"PSI job refused or failed: {e}")
        return False
    say(f"PSI job {psi_id}: the agents exchanged blinded points through the controller")
    total = "employees withheld" if out["sum"] is None else \
        f"{out['sum']:,} insured employees"
    say(f"registered firms that file social insurance: {out['intersection']:,} ({total})")
    for cell in out["categories"]:
        employees = "employees withheld (dominance)" if cell["sum"] is None else \
            f"{cell['sum']:>7,} employees"
        shown = "suppressed (< minimum count)" if cell["count"] is None else \
            f"{cell['count']:>5} firms, {employees}"
        say(f"    {cell['category']:<10}{shown}")
    return True
