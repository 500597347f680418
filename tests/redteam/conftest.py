"""The red-team stack: a real controller, a real agent, the real engine, a hostile analyst.

One provider ("red" hospital) with an ordinary permit per dataset: identifier column not
permitted, minimum cell count 10, and automatic release of script outputs accepted (the
strongest position for an attacker: nothing waits for a person unless the checks say so).
The agent has a timing grain, like a production agent. Each test registers the dataset it
attacks (2,000 episodes by default, or data built for the attack), so one test's changes
to its file never touch another's.

Built from ``tests.docker.helpers`` (boot, hospital, register, grant) with its own
container labels, parametrized by runtime like the adversarial suite
(``SANDBOX_TEST_RUNTIMES=runc`` narrows it to one).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import docker
import pandas as pd
import pytest

from containers.engine import docker_client
from containers.executor import Limits
from sandbox.demo_data import hospital_table
from tests.docker.helpers import (
    Stack,
    add_hospital,
    boot_stack,
    fetch_output,
    ledger_entries,
    register,
    remove_labelled,
    wait_job,
)
from tests.docker.runtimes import RUNTIMES, require_runtime

LABELS = {"data-sandbox.test": "1", "data-sandbox.suite": "redteam"}
ROWS = 2000
MIN_CELL = 10
PERMITTED = ["age", "sex", "diagnosis", "los", "cost"]  # never patient_id
GRAIN_S = 1.0


@dataclass
class Data:
    """One attacked dataset and the requester's permit on it."""

    frame: pd.DataFrame
    file: str
    dataset_id: str
    permit_id: str


@dataclass
class Red:
    stack: Stack

    @property
    def provider(self) -> Any:
        return self.stack.providers["red"]

    def dataset(self, frame: pd.DataFrame | None = None, seed: int = 7,
                **approval: Any) -> Data:
        """Register ``frame`` (default: 2,000 episodes) and grant the requester a permit."""
        frame = hospital_table(seed, ROWS, "R") if frame is None else frame
        file = f"red-{uuid.uuid4().hex[:8]}.csv"
        frame.to_csv(self.provider.root / file, index=False)
        status, ds = register(self.provider, file)
        assert status == 201, ds
        req = self.stack.requester.post("/requests", {
            "purpose": "Cost of inpatient care by diagnosis, for pricing review.",
            "use_kind": "statistics", "business_system": "harbor-pricing-2026",
            "items": [{"dataset_id": ds["id"], "columns": PERMITTED}]})
        body = {"expires_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
                "max_runs": 50, "min_cell_count": MIN_CELL,
                "risk_assessment": "aggregates only", "script_release": "automatic",
                **approval}
        r = self.provider.client.post(f"/requests/{req['id']}/items/{ds['id']}/approve", body)
        return Data(frame, file, ds["id"], r["permit_id"])

    def rewrite(self, data: Data, frame: pd.DataFrame) -> None:
        """The provider's file changes between runs (a record added, removed, edited)."""
        frame.to_csv(self.provider.root / data.file, index=False)

    def script(self, data: Data, script: str) -> dict[str, Any]:
        job = self.stack.requester.post("/jobs", {
            "permit_id": data.permit_id, "dataset_ids": [data.dataset_id], "script": script})
        return wait_job(self.stack.requester, job["id"], 120)

    def statistics(self, data: Data, spec: dict[str, Any]
                   ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        job = self.stack.requester.post("/jobs", {
            "permit_id": data.permit_id, "dataset_ids": [data.dataset_id],
            "statistics": spec})
        job = wait_job(self.stack.requester, job["id"], 120)
        if job["state"] != "released":
            return job, None
        status, raw = fetch_output(self.stack.requester, job["id"], "statistics.json")
        assert status == 200, raw[:200]
        return job, json.loads(raw)

    def everything_seen(self, job: dict[str, Any]) -> str:
        """All the requester and the regulator can read about the job, as one text: the
        job as the requester sees it, every output it can fetch, every ledger entry."""
        parts = [json.dumps(job)]
        for o in job["outputs"]:
            status, raw = fetch_output(self.stack.requester, job["id"], o["name"])
            if status == 200:
                parts.append(raw.decode("utf-8", "replace"))
        # The regulator audits through the ledger (it sees no one's jobs directly).
        parts += [json.dumps(e) for e in ledger_entries(self.stack.regulator)]
        return "\n".join(parts)


@pytest.fixture(scope="session", params=RUNTIMES)
def red(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Red]:
    engine: docker.DockerClient = docker_client()
    runtime = require_runtime(engine, request.param)
    remove_labelled(engine, LABELS)
    s, _ = boot_stack(tmp_path_factory.mktemp(f"redteam-{runtime}"), engine, runtime)
    try:
        add_hospital(s, "red", f"H-RED-{uuid.uuid4().hex[:6]}", Limits(timeout_s=60),
                     LABELS, slots=2, timing_grain_s=GRAIN_S)
        yield Red(s)
    finally:
        s.stack.stop()
        remove_labelled(engine, LABELS)
        engine.close()
