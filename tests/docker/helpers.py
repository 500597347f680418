"""Helpers shared by the Docker end-to-end tests: everything goes through the HTTP API."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker

from containers.executor import DockerExecutor, Limits
from sandbox.client import Client
from sandbox.demo_data import FIELDS, hospital_table
from sandbox.embedded import EmbeddedStack

TEST_LABELS = {"data-sandbox.test": "1", "data-sandbox.suite": "docker"}
JOB_LABEL = "data-sandbox.job"
ROWS = 300
MIN_CELL = 10
COLUMNS = ["age", "sex", "diagnosis", "cost"]
#: Limits of the "tight" agent: small enough that the memory and timeout attacks are quick.
TIGHT = Limits(timeout_s=5, memory_mb=128)


@dataclass
class Provider:
    name: str
    code: str
    id: str
    client: Client
    root: Path  # the provider's data root (what its agent may read)


@dataclass
class Stack:
    stack: EmbeddedStack
    admin: Client
    requester: Client
    regulator: Client
    image: str
    work: Path
    providers: dict[str, Provider] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.stack.url


def write_table(root: Path, name: str, seed: int, rows: int = ROWS) -> Path:
    path = root / name
    hospital_table(seed, rows, f"P{seed}").to_csv(path, index=False)
    return path


def dataset_body(code: str, location: str, fields: list[dict[str, Any]] | None = None
                 ) -> dict[str, Any]:
    return {"code": f"{code}-{uuid.uuid4().hex[:6]}", "name": "Inpatient episodes",
            "category": "health", "summary": "One row per inpatient episode.",
            "format": "csv", "openness": "conditional", "update_cycle": "monthly",
            "publish_date": "2026-10-01", "fields": fields or FIELDS, "location": location}


def register(provider: Provider, location: str,
             fields: list[dict[str, Any]] | None = None) -> tuple[int, dict[str, Any]]:
    """POST /datasets as the provider; (status, body) whether it succeeded or not."""
    r = provider.client.http.post(f"{provider.client.url}/api/v1/datasets",
                                  json=dataset_body(provider.code, location, fields),
                                  timeout=60)
    body: dict[str, Any] = r.json()
    return r.status_code, body


def grant(s: Stack, provider: Provider, dataset_id: str, columns: list[str],
          max_runs: int = 50) -> str:
    """The requester applies for ``columns``; the provider approves; returns the permit id."""
    req = s.requester.post("/requests", {
        "purpose": "Average treatment cost by age band and diagnosis, for pricing review.",
        "use_kind": "statistics", "business_system": "harbor-pricing-2026",
        "items": [{"dataset_id": dataset_id, "columns": columns}]})
    r = provider.client.post(f"/requests/{req['id']}/items/{dataset_id}/approve", {
        "expires_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        "max_runs": max_runs, "min_cell_count": MIN_CELL,
        "risk_assessment": "aggregates by band only"})
    permit_id: str = r["permit_id"]
    return permit_id


def submit(s: Stack, permit_id: str, dataset_id: str, script: str) -> str:
    job = s.requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [dataset_id],
                                     "script": script})
    job_id: str = job["id"]
    return job_id


def wait_job(client: Client, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    return client.wait_job(job_id, timeout_s)


def ledger_entries(regulator: Client) -> list[dict[str, Any]]:
    """Every ledger entry, decoded from its base64 canonical JSON."""
    out: list[dict[str, Any]] = []
    while True:
        page = regulator.get("/ledger/entries", start=len(out), end=len(out) + 1000)
        out += [json.loads(base64.b64decode(e["data"])) for e in page["entries"]]
        if len(out) >= page["tree_size"] or not page["entries"]:
            return out


def run_entry(regulator: Client, job_id: str) -> dict[str, Any]:
    runs = [e for e in ledger_entries(regulator)
            if e["kind"] == "run.finished" and e["body"]["job_id"] == job_id]
    assert len(runs) == 1, f"expected one run.finished entry for {job_id}, got {len(runs)}"
    return runs[0]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_output(client: Client, job_id: str, name: str) -> tuple[int, bytes]:
    r = client.http.get(f"{client.url}/api/v1/jobs/{job_id}/outputs/{name}", timeout=30)
    return r.status_code, r.content


def remove_labelled(client: docker.DockerClient, labels: Mapping[str, str]) -> None:
    """Remove containers (and their /out tmpfs) carrying all ``labels``, nobody else's."""
    executor = DockerExecutor(client)
    filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
    for c in client.containers.list(all=True, filters=filters):
        job_id = c.labels.get(JOB_LABEL)
        if job_id:
            executor.cleanup(job_id)
        else:
            c.remove(force=True)
