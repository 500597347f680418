"""A small joint job against a single-provider statistics job over the pooled data.

Side by side in one run on one stack (SQLite controller, real agents talking HTTP, the real
engine). ``--stack processes`` (the default) runs it as deployed: the controller under
``sandbox serve`` (gunicorn; ``--workers``/``--threads`` as given, else its defaults) and
each provider's agent (``sandbox agent``) in its own process; ``--stack embedded`` runs
controller and agents as threads of this one process (one GIL). A joint job over 4
hospitals (one agent each; count, mean, variance and a grouped mean of cost by diagnosis,
masked and encrypted under CKKS) through the requester SDK (``JointStatistics``: keygen,
submit, wait, decrypt, derive), and a statistics job (declared spec computed and checked by
the agent itself) giving the mean cost by diagnosis over one dataset holding the 4
hospitals' rows pooled. Wall time from the first request until the requester holds the
figures. N times each after one warm-up each, alternating. Each joint run's time is also
split into its phases from the parts' own timestamps. Prints the load average seen, both
medians, the write transactions committed during each (median; embedded stack only), and
``ratio=<joint median / statistics median>`` last (goal <= 1.5).

    .venv/bin/python -m bench.joint_small [N] [ROWS_PER_HOSPITAL] [--stack embedded]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, event

from bench.api_load_world import Processes
from bench.fixtures import admin_token_for_server
from containers.engine import docker_client
from containers.image import ensure_runner_image
from sandbox import create_app, db
from sandbox.bootstrap import create_first_admin
from sandbox.client import Client
from sandbox.demo_data import DIAGNOSES, FIELDS, hospital_table
from sandbox.embedded import EmbeddedStack
from sandbox.migrate import upgrade
from sandbox.sdk import JointStatistics

PROVIDERS = 4
POLL_S = 0.02
JOINT_SPEC = {"version": 1, "columns": ["age", "cost"],
              "statistics": ["count", "mean", "variance", "grouped"],
              "groups": {"by": "diagnosis", "categories": DIAGNOSES, "values": ["cost"]}}
STATS_SPEC = {"analyses": [{"kind": "magnitude", "dims": ["diagnosis"], "value": "cost",
                            "statistics": ["mean"]}]}


def dataset(client: Client, code: str) -> str:
    ds = client.post("/datasets", {
        "code": code, "name": "Episodes", "category": "health", "summary": "bench",
        "format": "csv", "openness": "conditional", "update_cycle": "monthly",
        "publish_date": "2026-10-01", "fields": FIELDS, "location": "inpatient_episodes.csv"})
    assert ds["status"] == "active", ds
    return str(ds["id"])


StartAgent = Callable[[str, str, Path, Ed25519PrivateKey], None]


def provider(admin: Client, url: str, start_agent: StartAgent, work: Path, code: str,
             frame: pd.DataFrame) -> tuple[Client, str]:
    p = admin.post("/parties", {"name": f"Bench {code}", "role": "provider", "code": code})
    root = work / "domains" / code
    root.mkdir(parents=True)
    frame.to_csv(root / "inpatient_episodes.csv", index=False)
    key = Ed25519PrivateKey.generate()
    agent = admin.post("/agents", {"name": f"{code} agent", "providers": [p["id"]],
                                   "public_key": key.public_key().public_bytes_raw().hex()})
    start_agent(code, agent["token"], root, key)
    client = Client(url, p["token"])
    return client, dataset(client, f"{code}-IPE")


def approve(requester: Client, use_kind: str, items: list[tuple[Client, str]]) -> str:
    req = requester.post("/requests", {
        "purpose": "Benchmark of joint and single-provider statistics.", "use_kind": use_kind,
        "business_system": "bench",
        "items": [{"dataset_id": ds, "columns": ["age", "diagnosis", "cost"]}
                  for _, ds in items]})
    expires = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    for client, ds in items:
        r = client.post(f"/requests/{req['id']}/items/{ds}/approve", {
            "expires_at": expires, "max_runs": 1000, "min_cell_count": 10,
            "risk_assessment": "bench", "script_release": "automatic"})
    return str(r["permit_id"])


def stamp(job: dict[str, Any], name: str) -> float:
    value = job.get(name)
    return datetime.fromisoformat(value).timestamp() if value else float("nan")


def joint_once(sdk: JointStatistics, permit: str, ds_ids: list[str],
               phases: dict[str, list[float]]) -> float:
    t0 = time.perf_counter()
    w0 = time.time()
    run = sdk.submit(permit, ds_ids, JOINT_SPEC)
    t_submit = time.time()
    joint = sdk.wait(run)
    t_seen = time.time()
    result = sdk.result(run, joint)
    elapsed = time.perf_counter() - t0
    assert result.columns["cost"]["n"], "no rows"
    parts = [sdk.client.get(f"/jobs/{p['job_id']}") for p in joint["parts"]]
    started = max(stamp(p, "started_at") for p in parts)
    finished = max(stamp(p, "finished_at") for p in parts)
    phases["keygen+submit"].append(t_submit - w0)
    phases["submit->last part started"].append(started - t_submit)
    phases["last started->last finished"].append(finished - started)
    phases["last finished->requester saw it"].append(t_seen - finished)
    phases["decrypt+derive"].append(time.time() - t_seen)
    return elapsed


def stats_once(requester: Client, permit: str, ds_id: str) -> float:
    t0 = time.perf_counter()
    job = requester.post("/jobs", {"permit_id": permit, "dataset_ids": [ds_id],
                                   "statistics": STATS_SPEC})
    job = requester.wait_job(job["id"], poll_s=POLL_S)
    elapsed = time.perf_counter() - t0
    assert job["state"] == "released", (job["state"], job["reason"])
    return elapsed


class CommitCounter:
    """Counts the controller's committed write transactions (SQLite: each one durable)."""

    def __init__(self, engine: Engine) -> None:
        self.n = 0
        event.listen(engine, "commit", self._one)

    def _one(self, _conn: Any) -> None:
        self.n += 1

    @contextlib.contextmanager
    def counting(self, into: list[int]) -> Iterator[None]:
        start = self.n
        yield
        into.append(self.n - start)


@dataclass
class Stack:
    url: str
    admin_token: str
    start_agent: StartAgent
    #: The controller's engine when it runs in this process (commits are counted then).
    engine: Engine | None


@contextlib.contextmanager
def embedded_stack(work: Path) -> Iterator[Stack]:
    """Controller, agents and requester in this one process (threads, one GIL)."""
    url = f"sqlite:///{work / 'sandbox.db'}"
    upgrade(url)
    app = create_app({"DATABASE_URL": url, "LOG_KEY_FILE": str(work / "log.key"),
                      "AGENT_POLL_WAIT_S": 10.0})
    admin_token = create_first_admin(app, "operator").token
    image = ensure_runner_image(docker_client()).tag
    stack = EmbeddedStack(app).start()

    def start_agent(code: str, token: str, root: Path, key: Ed25519PrivateKey) -> None:
        # No timing grain: it is a privacy delay, not the pipeline's cost.
        stack.start_agent(token, [root], work / "jobs" / code, image, signing_key=key,
                          timing_grain_s=0.0)

    try:
        yield Stack(stack.url, admin_token, start_agent, db.services(app).engine)
    finally:
        stack.stop()


@contextlib.contextmanager
def process_stack(work: Path, serve_args: list[str]) -> Iterator[Stack]:
    """As deployed: the controller under ``sandbox serve`` and each provider's agent
    (``sandbox agent``) in its own process; the requester in this one."""
    url = f"sqlite:///{work / 'sandbox.db'}"
    upgrade(url)
    admin_token = admin_token_for_server(url, work)
    procs = Processes(work, url, serve_args)

    def start_agent(code: str, token: str, root: Path, key: Ed25519PrivateKey) -> None:
        key_file = work / f"{code}.key"
        key_file.write_text(key.private_bytes_raw().hex() + "\n")
        key_file.chmod(0o600)
        procs.start_agent(code, token, root, slots=1, signing_key_file=key_file)

    try:
        procs.start_server("gunicorn")
        yield Stack(procs.url, admin_token, start_agent, None)
    finally:
        procs.stop_all()


def main() -> None:
    ap = argparse.ArgumentParser(prog="bench.joint_small")
    ap.add_argument("n", nargs="?", type=int, default=5, help="runs of each job")
    ap.add_argument("rows", nargs="?", type=int, default=5000, help="rows per hospital unit")
    ap.add_argument("--stack", choices=("processes", "embedded"), default="processes",
                    help="processes: controller and agents as deployed; embedded: one "
                         "process (threads)")
    ap.add_argument("--workers", type=int, help="sandbox serve --workers (its default)")
    ap.add_argument("--threads", type=int, help="sandbox serve --threads (its default)")
    args = ap.parse_args()
    n, rows = args.n, args.rows
    frames = [hospital_table(200 + i, rows * (i + 1) // 2, f"H{i}") for i in range(PROVIDERS)]
    serve_args = [*(["--workers", str(args.workers)] if args.workers else []),
                  *(["--threads", str(args.threads)] if args.threads else [])]
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        with (embedded_stack(work) if args.stack == "embedded"
              else process_stack(work, serve_args)) as st:
            admin = Client(st.url, st.admin_token)
            hospitals = [provider(admin, st.url, st.start_agent, work, f"JH{i}", f)
                         for i, f in enumerate(frames)]
            pooled = provider(admin, st.url, st.start_agent, work, "JPOOL",
                              pd.concat(frames, ignore_index=True))
            r = admin.post("/parties", {"name": "Bench Requester", "role": "requester"})
            requester = Client(st.url, r["token"])
            joint_permit = approve(requester, "joint_statistics", hospitals)
            stats_permit = approve(requester, "statistics", [pooled])
            sdk = JointStatistics(requester)
            ds_ids = [ds for _, ds in hospitals]
            phases: dict[str, list[float]] = {k: [] for k in (
                "keygen+submit", "submit->last part started", "last started->last finished",
                "last finished->requester saw it", "decrypt+derive")}
            # Warm-up (and, on the process stack, until the agents have started).
            joint_once(sdk, joint_permit, ds_ids, phases)
            stats_once(requester, stats_permit, pooled[1])
            for v in phases.values():
                v.clear()
            times: dict[str, list[float]] = {"joint": [], "statistics": []}
            commits: dict[str, list[int]] = {"joint": [], "statistics": []}
            counter = None if st.engine is None else CommitCounter(st.engine)
            for _ in range(n):
                with counter.counting(commits["joint"]) if counter else contextlib.nullcontext():
                    times["joint"].append(joint_once(sdk, joint_permit, ds_ids, phases))
                with (counter.counting(commits["statistics"]) if counter
                      else contextlib.nullcontext()):
                    times["statistics"].append(stats_once(requester, stats_permit, pooled[1]))
                load.append(os.getloadavg()[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"stack={args.stack} serve_args={' '.join(serve_args) or 'defaults'} "
          f"providers={PROVIDERS} rows_pooled={sum(len(f) for f in frames)} runs_each={n} "
          f"load_average_1m={min(load):.1f}-{max(load):.1f}")
    for name, v in phases.items():
        print(f"  joint phase {name:<34} median {statistics.median(v):7.3f} s")
    # Durable write transactions committed while the job ran: its own, plus the idle
    # agents' first long-poll probes and the checkpointer's signatures meanwhile (about 5
    # a second, so a longer job counts a few more). Counted when the controller runs here.
    for kind, counts in commits.items():
        if counts:
            print(f"{kind}_commits_median={statistics.median(counts):.0f}")
    print(f"joint_median_s={med['joint']:.3f}")
    print(f"statistics_median_s={med['statistics']:.3f}")
    print(f"ratio={med['joint'] / med['statistics']:.2f}")


if __name__ == "__main__":
    main()
