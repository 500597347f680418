"""Controller and agent as separate processes, killed with SIGKILL mid-batch and restarted.

Every job must end in a terminal state with exactly one run entry on the ledger, no permit
may be used more often than it allows, and no container or /out mount may be left over.
The same harness runs two agent processes against one PostgreSQL-backed controller.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from authz.wire import TERMINAL
from containers import stage, warm
from containers.engine import docker_client
from containers.executor import DockerExecutor
from sandbox import create_app, db
from sandbox.bootstrap import create_first_admin
from sandbox.client import Client
from sandbox.demo_data import FIELDS, write_hospital
from sandbox.migrate import upgrade

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SLOW_AGGREGATE = """\
import time
import pandas as pd
time.sleep(3)
df = pd.read_csv("/in/data.csv")
t = df.groupby("diagnosis")["cost"].agg(n="count", mean_cost="mean").reset_index()
t["mean_cost"] = t["mean_cost"].round(0)
t.to_csv("/out/t.csv", index=False)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Cluster:
    """A controller process and agent processes on loopback, restartable."""

    def __init__(self, tmp: Path, db_url: str, runtime: str) -> None:
        self.tmp, self.db_url, self.runtime = tmp, db_url, runtime
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "SANDBOX_DATABASE_URL": db_url,
                    "SANDBOX_LOG_KEY_FILE": str(tmp / "log.key"),
                    "SANDBOX_INSTANCE": str(tmp / "instance")}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.work_roots: set[Path] = set()

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        # Its own process group: a kill takes the controller's workers with it, as a
        # service manager would (KillMode=control-group), not only the master.
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "sandbox.cli", *args],
                                            env=self.env, stdout=log, stderr=log,
                                            start_new_session=True)

    def start_controller(self) -> None:
        # Two workers whatever the machine: the restarts' time and memory stay those of
        # the test, not of the CPUs it runs on (serve's default is 2 per CPU).
        self._spawn("controller", ["serve", "--port", str(self.port), "--workers", "2"])
        # Serving, not only listening: a listening socket accepts before any worker booted.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                    if s.recv(64).split(b" ")[1:2] == [b"200"]:
                        return
            except OSError:
                pass
            if self.procs["controller"].poll() is not None:
                break
            time.sleep(0.2)
        tail = (self.tmp / "controller.log").read_text(errors="replace")[-3000:]
        raise AssertionError(f"controller did not start serving:\n{tail}")

    def start_agent(self, name: str, token: str, root: Path, slots: int = 2) -> None:
        self.work_roots.add(self.tmp / f"work-{name}")
        self._spawn(name, ["--url", self.url, "--token", token, "agent", "--data-root",
                           str(root), "--work-root", str(self.tmp / f"work-{name}"),
                           "--slots", str(slots), "--runtime", self.runtime,
                           # Crash recovery of the real runs. (The mock run first is
                           # tested in tests/docker/test_mock_first.py, not its recovery
                           # from a SIGKILL.)
                           "--no-mock-first"])

    def kill(self, name: str) -> None:
        p = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()

    def stop_all(self) -> None:
        """Agents get SIGTERM (a graceful stop removes their warm containers), the rest
        SIGKILL; a warm container an agent still left behind is the test's failure."""
        for name in [n for n in self.procs if n != "controller"]:
            p = self.procs.pop(name)
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for name in list(self.procs):
            self.kill(name)
        executor = DockerExecutor(docker_client())
        left = {root: warm.reset(executor, root) for root in self.work_roots}
        assert not any(left.values()), f"warm containers left by stopped agents: {left}"


@pytest.fixture
def cluster_factory(tmp_path: Path, runtime: str) -> Iterator[Any]:
    made: list[Cluster] = []

    def make(db_url: str) -> Cluster:
        upgrade(db_url)
        c = Cluster(tmp_path, db_url, runtime)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop_all()


def setup_world(cluster: Cluster, jobs: int) -> dict[str, Any]:
    app = create_app({"DATABASE_URL": cluster.db_url, "LOG_KEY_FILE": cluster.env[
        "SANDBOX_LOG_KEY_FILE"], "START_CHECKPOINTER": False})
    admin = Client(cluster.url, create_first_admin(app, "operator").token)
    db.dispose(app)
    provider = admin.post("/parties", {"name": "Hospital", "role": "provider", "code": "H1"})
    requester = admin.post("/parties", {"name": "Insurer", "role": "requester"})
    regulator = admin.post("/parties", {"name": "Bureau", "role": "regulator"})
    agent = admin.post("/agents", {"name": "h1", "providers": [provider["id"]]})
    root = cluster.tmp / "domain"
    write_hospital(root, 7, 300, "H1")
    return {"admin": admin, "provider": Client(cluster.url, provider["token"]),
            "requester": Client(cluster.url, requester["token"]),
            "regulator": Client(cluster.url, regulator["token"]),
            "agent_token": agent["token"], "root": root, "jobs": jobs}


def register_and_permit(w: dict[str, Any], max_runs: int) -> tuple[str, str]:
    ds = w["provider"].post("/datasets", {
        "code": "H1-IPE", "name": "episodes", "category": "health", "summary": "episodes",
        "format": "csv", "openness": "conditional", "update_cycle": "monthly",
        "publish_date": "2026-01-01", "fields": FIELDS, "location": "inpatient_episodes.csv"})
    req = w["requester"].post("/requests", {
        "purpose": "Mean cost by diagnosis, resilience test.", "use_kind": "statistics",
        "business_system": "test", "items": [{"dataset_id": ds["id"],
                                              "columns": ["diagnosis", "cost"]}]})
    r = w["provider"].post(f"/requests/{req['id']}/items/{ds['id']}/approve", {
        "expires_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        "max_runs": max_runs, "min_cell_count": 5, "risk_assessment": "test",
        "script_release": "automatic"})
    return ds["id"], r["permit_id"]


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def ledger_kinds(w: dict[str, Any]) -> list[dict[str, Any]]:
    entries = []
    start = 0
    while True:
        page = w["regulator"].get("/ledger/entries", start=start, end=start + 1000)
        entries += [json.loads(base64.b64decode(e["data"])) for e in page["entries"]]
        if page["end"] >= page["tree_size"]:
            return entries
        start = page["end"]


def check_outcome(w: dict[str, Any], job_ids: list[str], permit_id: str) -> None:
    jobs = [w["requester"].get(f"/jobs/{j}") for j in job_ids]
    assert all(j["state"] in TERMINAL for j in jobs), [j["state"] for j in jobs]
    assert [j["state"] for j in jobs].count("released") == len(jobs), [
        (j["state"], j["reason"]) for j in jobs]
    runs = Counter(e["body"]["job_id"] for e in ledger_kinds(w) if e["kind"] == "run.finished")
    assert all(runs[j] == 1 for j in job_ids), runs
    permit = w["requester"].get(f"/permits/{permit_id}")
    assert permit["runs_used"] == len(job_ids) <= permit["max_runs"]
    left = docker_client().containers.list(all=True, filters={"label": "data-sandbox.job"})
    assert not [c for c in left if c.labels["data-sandbox.job"] in job_ids]
    mounts = Path("/proc/mounts").read_text()
    assert not [j for j in job_ids if j in mounts]
    assert not [st for st in stage.stages(stage.STAGE_ROOT) if st.owner().get("job") in job_ids]


def test_sigkill_agent_and_controller_mid_batch(cluster_factory: Any, tmp_path: Path) -> None:
    cluster = cluster_factory(f"sqlite:///{tmp_path / 'sandbox.db'}")
    cluster.start_controller()
    w = setup_world(cluster, jobs=6)
    cluster.start_agent("agent", w["agent_token"], w["root"])
    ds_id, permit_id = register_and_permit(w, max_runs=6)
    job_ids = [w["requester"].post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds_id],
                                             "script": SLOW_AGGREGATE})["id"] for _ in range(6)]

    def running() -> bool:
        states = [w["requester"].get(f"/jobs/{j}")["state"] for j in job_ids]
        return states.count("running") >= 2

    wait_for(running, 120, "two jobs running")
    # The agent said at start which runtime its jobs run under.
    assert f"jobs run under the {cluster.runtime}" in (
        tmp_path / "agent.log").read_text()
    cluster.kill("agent")
    cluster.kill("controller")
    cluster.start_controller()
    cluster.start_agent("agent", w["agent_token"], w["root"])
    wait_for(lambda: all(w["requester"].get(f"/jobs/{j}")["state"] in TERMINAL
                         for j in job_ids), 240, "every job terminal")
    check_outcome(w, job_ids, permit_id)


def test_a_controller_outage_mid_run_costs_no_second_run(cluster_factory: Any,
                                                         tmp_path: Path) -> None:
    """The controller is away while runs finish: the agent retries its notices and reports
    instead of abandoning the runs (which would sit leased until the 420 s lease ran out,
    then be requeued and run on the data a second time)."""
    cluster = cluster_factory(f"sqlite:///{tmp_path / 'sandbox.db'}")
    cluster.start_controller()
    w = setup_world(cluster, jobs=4)
    cluster.start_agent("agent", w["agent_token"], w["root"])
    ds_id, permit_id = register_and_permit(w, max_runs=4)
    job_ids = [w["requester"].post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds_id],
                                             "script": SLOW_AGGREGATE})["id"] for _ in range(4)]
    wait_for(lambda: [w["requester"].get(f"/jobs/{j}")["state"] for j in job_ids]
             .count("running") >= 2, 120, "two jobs running")
    cluster.kill("controller")
    time.sleep(8)  # the running jobs (3 s of sleep) finish while nobody answers
    cluster.start_controller()
    # Well inside the lease: only an agent that kept its runs gets them terminal in time.
    wait_for(lambda: all(w["requester"].get(f"/jobs/{j}")["state"] in TERMINAL
                         for j in job_ids), 180, "every job terminal")
    check_outcome(w, job_ids, permit_id)
    entries = ledger_kinds(w)
    dispatched = Counter(e["body"]["job_id"] for e in entries if e["kind"] == "job.dispatched")
    assert all(dispatched[j] == 1 for j in job_ids), dispatched
    assert not [e for e in entries if e["kind"] == "job.requeued"]


@pytest.mark.postgres
def test_two_agent_processes_share_one_postgres_controller(cluster_factory: Any,
                                                           pg_url: str) -> None:
    from tests.conftest import _fresh_pg

    cluster = cluster_factory(_fresh_pg(pg_url, "template0"))
    cluster.start_controller()
    w = setup_world(cluster, jobs=8)
    cluster.start_agent("agent-1", w["agent_token"], w["root"], slots=2)
    cluster.start_agent("agent-2", w["agent_token"], w["root"], slots=2)
    ds_id, permit_id = register_and_permit(w, max_runs=8)
    job_ids = [w["requester"].post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds_id],
                                             "script": SLOW_AGGREGATE})["id"] for _ in range(8)]
    wait_for(lambda: all(w["requester"].get(f"/jobs/{j}")["state"] in TERMINAL
                         for j in job_ids), 240, "every job terminal")
    check_outcome(w, job_ids, permit_id)
    dispatched = Counter(e["body"]["job_id"] for e in ledger_kinds(w)
                         if e["kind"] == "job.dispatched")
    assert all(dispatched[j] == 1 for j in job_ids), dispatched
