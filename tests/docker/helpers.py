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
import pandas as pd

from containers.executor import DockerExecutor, Limits
from containers.image import ensure_runner_image
from containers.records import ContainerRecord
from sandbox import create_app
from sandbox.bootstrap import create_first_admin
from sandbox.client import Client
from sandbox.demo_data import FIELDS, hospital_table
from sandbox.embedded import EmbeddedStack
from sandbox.migrate import upgrade

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
    runtime: str  # the OCI runtime of every agent of this stack (tests.docker.runtimes)
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
        "risk_assessment": "aggregates by band only",
        # These suites test the automatic checks themselves: the provider accepts them.
        "script_release": "automatic"})
    permit_id: str = r["permit_id"]
    return permit_id


def submit(s: Stack, permit_id: str, dataset_id: str, script: str) -> str:
    return submit_as(s.requester, permit_id, dataset_id, script)


def submit_as(client: Client, permit_id: str, dataset_id: str, script: str) -> str:
    job = client.post("/jobs", {"permit_id": permit_id, "dataset_ids": [dataset_id],
                                "script": script})
    job_id: str = job["id"]
    return job_id


class PersonClient(Client):
    """A person's client: signed in with their own token."""

    person_id: str


def person(s: Stack, party: Client, party_id: str, role: str) -> PersonClient:
    """A new person of ``party_id`` with ``role``, created by the party's service account,
    signed in with email and password."""
    email = f"{uuid.uuid4().hex[:12]}@example.org"
    password = "a long enough test password"
    made = party.post(f"/parties/{party_id}/people", {
        "name": f"{role} {email[:4]}", "email": email, "roles": [role], "password": password})
    s.admin.post(f"/people/{made['id']}/identity", {"method": "checked in person"})
    now = datetime.now(UTC)
    s.admin.post(f"/people/{made['id']}/accreditations", {
        "kind": "safe researcher training", "awarded_at": now.isoformat(),
        "expires_at": (now + timedelta(days=30)).isoformat()})
    token = Client(s.url).post("/sign-in", {"email": email, "password": password})["token"]
    client = PersonClient(s.url, token)
    client.person_id = made["id"]
    return client


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


def job_containers(client: docker.DockerClient, job_id: str) -> list[Any]:
    """A job's containers: labelled with its id (cold start) or named after it (warm start)."""
    name = f"data-sandbox-job-{job_id}"
    # ignore_removed: the agent may remove it between the engine's list and inspect
    found: list[Any] = client.containers.list(all=True, ignore_removed=True,
                                              filters={"label": f"{JOB_LABEL}={job_id}"})
    found += [c for c in client.containers.list(all=True, ignore_removed=True,
                                                filters={"name": name})
              if c.name == name and c.id not in {f.id for f in found}]
    return found


def remove_labelled(client: docker.DockerClient, labels: Mapping[str, str]) -> None:
    """Remove containers (and their /out tmpfs) carrying all ``labels``, nobody else's."""
    executor = DockerExecutor(client)
    filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
    for c in client.containers.list(all=True, filters=filters):
        record = ContainerRecord.read(executor.names, c.id, c.name, c.labels)
        if record.job_id:  # started cold, or warm and bound to its job
            executor.cleanup(record.job_id)
        elif record.work_root is not None:  # started ahead by an agent, unbound
            executor.warm.reset(record.work_root)
        else:
            c.remove(force=True)


@dataclass
class Target:
    """A registered dataset, the requester's permit on it, and the values it holds."""

    provider: Provider
    source: Path
    dataset_id: str
    permit_id: str
    values: frozenset[str]  # distinctive input values that must never reach the requester


def make_target(stack: Stack, which: str, file: str, seed: int,
                columns: list[str] = COLUMNS, max_runs: int = 50) -> Target:
    """Register ``file`` for provider ``which``; the requester gets a permit on ``columns``."""
    p = stack.providers[which]
    source = write_table(p.root, file, seed=seed)
    status, ds = register(p, file)
    assert status == 201, ds
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    # Costs (two decimals, unique per record) and patient numbers identify records; a
    # console or output channel that carried rows would carry these. Also the two-decimal
    # spelling pandas' own printing would use.
    values = set(frame["cost"]) | {f"{float(c):.2f}" for c in frame["cost"]}
    values |= set(frame["patient_id"])
    return Target(p, source, ds["id"], grant(stack, p, ds["id"], columns, max_runs),
                  frozenset(values))


def boot_stack(work: Path, engine: docker.DockerClient, runtime: str
               ) -> tuple[Stack, list[str]]:
    """An embedded controller (SQLite in ``work``) with an operator, a requester and a
    regulator, its agents to run jobs under ``runtime``; returns the stack and every token
    issued. The caller stops ``stack.stack``."""
    url = f"sqlite:///{work / 'sandbox.db'}"
    upgrade(url)
    app = create_app({"DATABASE_URL": url, "LOG_KEY_FILE": str(work / "log.key"),
                      "LOG_ORIGIN": "test.data-sandbox.local/log", "AGENT_POLL_WAIT_S": 0.5,
                      "SCHEMA_CHECK_WAIT_S": 30.0})
    admin_token = create_first_admin(app, "operator").token
    embedded = EmbeddedStack(app).start()
    try:
        image = ensure_runner_image(engine).tag
        admin = Client(embedded.url, admin_token)
        requester = admin.post("/parties", {"name": "Harbor Mutual", "role": "requester"})
        regulator = admin.post("/parties", {"name": "Data Bureau", "role": "regulator"})
    except BaseException:
        embedded.stop()
        raise
    stack = Stack(embedded, admin, Client(embedded.url, requester["token"]),
                  Client(embedded.url, regulator["token"]), image, work, runtime)
    return stack, [admin_token, requester["token"], regulator["token"]]


def add_hospital(s: Stack, name: str, code: str, limits: Limits, labels: Mapping[str, str],
                 slots: int = 1, timing_grain_s: float = 0.0) -> list[str]:
    """A provider with its own domain and agent (containers labelled ``labels``); returns
    the tokens issued."""
    p = s.admin.post("/parties", {"name": f"{name} hospital", "role": "provider",
                                  "code": code})
    root = s.work / "domains" / name
    root.mkdir(parents=True)
    a = s.admin.post("/agents", {"name": f"{name} agent", "providers": [p["id"]]})
    s.stack.start_agent(a["token"], [root], s.work / "jobs" / name, s.image, limits,
                        poll_wait_s=0.5, labels=dict(labels), slots=slots,
                        # 0 by default for quick tests; the grain has its own test
                        timing_grain_s=timing_grain_s, runtime=s.runtime)
    s.providers[name] = Provider(f"{name} hospital", code, p["id"],
                                 Client(s.url, p["token"]), root)
    return [p["token"], a["token"]]
