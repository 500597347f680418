"""Domain helpers shared by the API tests: a dataset, a request, approvals, a permit."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import Actor

PATIENT_FIELDS = [
    {"name": "patient_id", "type": "string", "sensitivity": "identifier"},
    {"name": "age", "type": "integer", "sensitivity": "internal"},
    {"name": "sex", "type": "string", "sensitivity": "internal"},
    {"name": "diagnosis", "type": "string", "sensitivity": "sensitive"},
    {"name": "cost", "type": "number", "sensitivity": "sensitive"},
]


def dataset_body(location: str = "patients.csv", openness: str = "conditional",
                 **over: Any) -> dict[str, Any]:
    body = {
        "code": f"DS-{uuid.uuid4().hex[:8]}", "name": "Inpatient episodes",
        "category": "health", "summary": "One row per inpatient episode.", "format": "csv",
        "openness": openness, "update_cycle": "monthly", "publish_date": "2026-01-15",
        "fields": PATIENT_FIELDS, "location": location,
    }
    body.update(over)
    return body


def register(provider: Actor, agent: Actor | None = None, **over: Any) -> dict[str, Any]:
    """Register a dataset; with an agent, report a passing schema check (the agent API)."""
    r = provider.post("/datasets", dataset_body(**over))
    assert r.status_code == 202, r.json
    ds: dict[str, Any] = r.json
    if agent is not None:
        v = agent.post(f"/agent/datasets/{ds['id']}/schema", {"ok": True, "rows": 500})
        assert v.status_code == 200, v.json
        ds = provider.get(f"/datasets/{ds['id']}").json
    return ds


def approval(days: int = 30, max_runs: int = 5, min_cell: int = 10, **over: Any
             ) -> dict[str, Any]:
    body = {"expires_at": (datetime.now(UTC) + timedelta(days=days)).isoformat(),
            "max_runs": max_runs, "min_cell_count": min_cell,
            "risk_assessment": "aggregate statistics only; no identifiers requested",
            "script_release": "automatic"}
    body.update(over)
    return body


def request_access(requester: Actor, *datasets: dict[str, Any],
                   columns: tuple[str, ...] = ("age", "sex", "diagnosis", "cost"),
                   people: tuple[str, ...] = ()) -> dict[str, Any]:
    body: dict[str, Any] = {
        "purpose": "Average treatment cost by age band and diagnosis for pricing.",
        "use_kind": "statistics", "business_system": "insurer-pricing-v2",
        "items": [{"dataset_id": d["id"], "columns": list(columns)} for d in datasets],
    }
    if people:
        body["people"] = list(people)
    r = requester.post("/requests", body)
    assert r.status_code == 201, r.json
    out: dict[str, Any] = r.json
    return out


def permit_for(requester: Actor, provider: Actor, agent: Actor,
               people: tuple[str, ...] = (), **approve: Any) -> tuple[dict[str, Any], str]:
    ds = register(provider, agent)
    req = request_access(requester, ds, people=people)
    r = provider.post(f"/requests/{req['id']}/items/{ds['id']}/approve", approval(**approve))
    assert r.status_code == 200, r.json
    permit_id: str = r.json["permit_id"]
    return ds, permit_id


SCRIPT = "import pandas as pd\nprint('hello')\n"
