"""The world of bench.api_load: its processes (controller, agents) and its parties.

The controller and each agent run in their own process group, so that a SIGKILL takes a
gunicorn master's workers with it, as a service manager would. The parties, people,
dataset and permits are made through the API as people make them.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sandbox.client import Client
from sandbox.demo_data import FIELDS, write_hospital

ROOT = Path(__file__).resolve().parent.parent
ROWS = 2000
READER_JOBS = 10
SPEC = {"analyses": [{"kind": "magnitude", "dims": ["sex", "diagnosis"], "value": "cost",
                      "statistics": ["mean"]}]}
DEV_SERVER = """\
import logging, sys
from werkzeug.serving import run_simple
from sandbox import create_app
logging.getLogger("werkzeug").setLevel(logging.WARNING)
run_simple("127.0.0.1", int(sys.argv[1]), create_app(), threaded=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Processes:
    """The controller (``sandbox serve`` or the development server) and the agents."""

    def __init__(self, work: Path, db_url: str, serve_args: list[str],
                 controller_cpus: frozenset[int] | None = None) -> None:
        self.work, self.port, self.serve_args = work, free_port(), serve_args
        # The controller's processes (either server) run on these CPUs only; None: as
        # this process (see bench.api_load --controller-cpus).
        self.controller_cpus = controller_cpus
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
        self.env.update({"PYTHONPATH": str(ROOT), "SANDBOX_DATABASE_URL": db_url,
                         "SANDBOX_INSTANCE": str(work / "instance"),
                         "SANDBOX_LOG_KEY_FILE": str(work / "log.key")})
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.agent_args: dict[str, list[str]] = {}

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.work / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        cpus = self.controller_cpus if name == "controller" else None
        self.procs[name] = subprocess.Popen(
            [sys.executable, *args], env=self.env, stdout=log, stderr=log,
            start_new_session=True,
            # Set in the child before it runs Python: its workers inherit it, and serve
            # sizes its default workers from it.
            preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus))

    def start_server(self, kind: str) -> None:
        if kind == "dev":
            self._spawn("controller", ["-c", DEV_SERVER, str(self.port)])
        else:
            self._spawn("controller", ["-m", "sandbox.cli", "serve", "--port", str(self.port),
                                       *self.serve_args])
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, http.client.HTTPException):
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    c.close()
                    return
            if self.procs["controller"].poll() is not None:
                break
            time.sleep(0.1)
        raise SystemExit(f"controller did not start; see {self.work / 'controller.log'}")

    def start_agent(self, name: str, token: str, root: Path, slots: int = 2,
                    signing_key_file: Path | None = None) -> None:
        self.agent_args[name] = [
            "-m", "sandbox.cli", "--url", self.url, "--token", token, "agent",
            "--data-root", str(root), "--work-root", str(self.work / f"work-{name}"),
            "--slots", str(slots), "--runtime", "runc", "--no-warm-start",
            # A privacy delay on reporting, not the controller's cost.
            "--timing-grain", "0",
            *([] if signing_key_file is None else ["--signing-key-file", str(signing_key_file)])]
        self._spawn(name, self.agent_args[name])

    def restart_agent(self, name: str) -> None:
        self._spawn(name, self.agent_args[name])

    def kill(self, name: str) -> None:
        p = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()

    def stop(self, name: str) -> None:
        p = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


@dataclass
class World:
    submitter: str  # the submitting analyst's token
    reader: str  # the reading analyst's token
    auditor: str  # the regulator's auditor's token
    permit_id: str
    dataset_id: str


def person(url: str, admin: Client, party: Client, party_id: str, role: str) -> tuple[str, str]:
    """A person of ``party_id`` with ``role``, identified, accredited, signed in."""
    email = f"{role}.{party_id.lower()}@bench.example"
    password = base64.urlsafe_b64encode(os.urandom(18)).decode()
    made = party.post(f"/parties/{party_id}/people",
                      {"name": f"Bench {role}", "email": email, "roles": [role],
                       "password": password})
    admin.post(f"/people/{made['id']}/identity", {"method": "photo ID checked in person"})
    now = datetime.now(UTC)
    admin.post(f"/people/{made['id']}/accreditations", {
        "kind": "safe researcher training", "awarded_at": (now - timedelta(days=1)).isoformat(),
        "expires_at": (now + timedelta(days=365)).isoformat()})
    token: str = Client(url).post("/sign-in", {"email": email, "password": password})["token"]
    return made["id"], token


def permit_for(url: str, admin: Client, provider: Client, name: str, ds_id: str
               ) -> tuple[str, str]:
    """A requester, its analyst, and a permit naming the analyst: (analyst token, permit)."""
    r = admin.post("/parties", {"name": name, "role": "requester"})
    _, token = person(url, admin, Client(url, r["token"]), r["id"], "analyst")
    req = Client(url, token).post("/requests", {
        "purpose": "Load benchmark of the controller.", "use_kind": "statistics",
        "business_system": "bench", "items": [
            {"dataset_id": ds_id, "columns": ["age", "sex", "diagnosis", "cost"]}]})
    approved = provider.post(f"/requests/{req['id']}/items/{ds_id}/approve", {
        "expires_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        "max_runs": 10_000, "min_cell_count": 5, "risk_assessment": "bench",
        "script_release": "automatic"})
    return token, approved["permit_id"]


def make_world(procs: Processes, admin_token: str) -> World:
    url = procs.url
    admin = Client(url, admin_token)
    p = admin.post("/parties", {"name": "Bench Hospital", "role": "provider", "code": "HB"})
    root = procs.work / "domain"
    write_hospital(root, 3, ROWS, "HB")
    agent = admin.post("/agents", {"name": "bench agent", "providers": [p["id"]]})
    for name in ("agent-1", "agent-2"):
        procs.start_agent(name, agent["token"], root)
    provider = Client(url, p["token"])
    ds = provider.post("/datasets", {
        "code": "HB-IPE", "name": "Episodes", "category": "health", "summary": "bench",
        "format": "csv", "openness": "conditional", "update_cycle": "monthly",
        "publish_date": "2026-10-01", "fields": FIELDS, "location": "inpatient_episodes.csv"})
    assert ds["status"] == "active", ds
    submitter, permit_id = permit_for(url, admin, provider, "Bench Submitters", ds["id"])
    reader, reader_permit = permit_for(url, admin, provider, "Bench Readers", ds["id"])
    reading = Client(url, reader)
    for _ in range(READER_JOBS):  # a fixed, typical list for GET /jobs
        job = reading.post("/jobs", {"permit_id": reader_permit, "dataset_ids": [ds["id"]],
                                     "statistics": SPEC})
        assert reading.wait_job(job["id"], poll_s=0.1)["state"] == "released"
    reg = admin.post("/parties", {"name": "Bench Bureau", "role": "regulator"})
    _, auditor = person(url, admin, Client(url, reg["token"]), reg["id"], "auditor")
    return World(submitter, reader, auditor, permit_id, ds["id"])
