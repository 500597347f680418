"""Overhead of a sandboxed job over a bare container run of the same script.

Side by side in one run, N times each after one warm-up each:

- job:  POST /jobs through the API of an embedded stack (SQLite, real agent, real engine)
        until ``GET /jobs/<id>`` says released (polled every 20 ms);
- bare: ``client.containers.run(image, ["python3", "-c", SCRIPT], network_mode="none")``
        with the same input mounted read-only at /in and a host dir at /out.

Prints both medians, a breakdown of the job from its own timestamps, and last ``ratio=<x>``
(median job / median bare). Usage: ``.venv/bin/python -m bench.job_overhead [N]``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from containers.engine import docker_client
from containers.image import ensure_runner_image
from sandbox import create_app
from sandbox.bootstrap import create_first_admin
from sandbox.client import Client
from sandbox.demo_data import FIELDS, write_hospital
from sandbox.embedded import EmbeddedStack
from sandbox.migrate import upgrade

# The trivial job: count the rows, write a one-row aggregate.
SCRIPT = ("n = sum(1 for _ in open('/in/data.csv')) - 1\n"
          "open('/out/total.csv', 'w').write(f'n\\n{n}\\n')\n")
TERMINAL = {"released", "blocked", "failed", "cancelled"}
POLL_S = 0.02
BENCH_LABEL = {"data-sandbox.bench": "job-overhead"}


TIMINGS: dict[str, list[float]] = {}


def instrument() -> None:
    """Time the agent's steps in-process (wrappers only; nothing in the product changes)."""
    import functools
    import importlib

    from containers import checks, datasets
    from containers.executor import DockerExecutor

    try:  # the agent's HTTP client lives in its own module since the agent's refactor
        client_mod = importlib.import_module("containers.controller_client")
    except ImportError:  # an older tree: it was in containers.agent
        client_mod = importlib.import_module("containers.agent")
    controller_client = client_mod.ControllerClient

    def wrap(owner: Any, name: str, label: str) -> None:
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def timed(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                TIMINGS.setdefault(label, []).append(time.perf_counter() - t0)

        setattr(owner, name, timed)

    wrap(datasets, "project", "agent: project input (pandas read/write, rare values)")
    wrap(DockerExecutor, "start", "executor.start (mount /out, create, start)")
    wrap(DockerExecutor, "wait", "executor.wait (run to exit, logs)")
    wrap(checks, "check_outputs", "agent: check outputs")
    wrap(DockerExecutor, "cleanup", "executor.cleanup (remove, unmount)")
    wrap(controller_client, "started", "POST started")
    wrap(controller_client, "result", "POST result")


def wait_job(client: Client, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}")
        if job["state"] in TERMINAL:
            return job
        time.sleep(POLL_S)
    raise SystemExit(f"job {job_id} did not finish within {timeout_s}s")


def setup(stack: EmbeddedStack, admin: Client, image: str, work: Path
          ) -> tuple[Client, str, str, Path]:
    p = admin.post("/parties", {"name": "Bench Hospital", "role": "provider",
                                "code": "H-BENCH"})
    root = work / "domain"
    write_hospital(root, 7, 300, "H-BENCH")
    agent = admin.post("/agents", {"name": "bench agent", "providers": [p["id"]]})
    stack.start_agent(agent["token"], [root], work / "jobs", image)
    provider = Client(stack.url, p["token"])
    ds = provider.post("/datasets", {
        "code": "H-BENCH-IPE", "name": "Episodes", "category": "health",
        "summary": "bench", "format": "csv", "openness": "conditional",
        "update_cycle": "monthly", "publish_date": "2026-10-01", "fields": FIELDS,
        "location": "inpatient_episodes.csv"})
    assert ds["status"] == "active", ds
    r = admin.post("/parties", {"name": "Bench Requester", "role": "requester"})
    requester = Client(stack.url, r["token"])
    req = requester.post("/requests", {
        "purpose": "Benchmark of the job overhead.", "use_kind": "statistics",
        "business_system": "bench", "items": [{"dataset_id": ds["id"],
                                              "columns": ["age", "sex", "diagnosis", "cost"]}]})
    approved = provider.post(f"/requests/{req['id']}/items/{ds['id']}/approve", {
        "expires_at": (datetime.now().astimezone() + timedelta(days=1)).isoformat(),
        "max_runs": 1000, "min_cell_count": 10, "risk_assessment": "bench"})
    # The bare run reads the same projected columns: write them once, like the agent does.
    bare_in = work / "bare-in"
    bare_in.mkdir()
    (work / "bare-out").mkdir(mode=0o777)
    (work / "bare-out").chmod(0o777)
    import pandas as pd

    (pd.read_csv(root / "inpatient_episodes.csv", dtype=str, keep_default_na=False)
     [["age", "sex", "diagnosis", "cost"]].to_csv(bare_in / "data.csv", index=False))
    return requester, approved["permit_id"], ds["id"], bare_in


def one_job(requester: Client, permit_id: str, dataset_id: str) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    job = requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [dataset_id],
                                   "script": SCRIPT})
    job = wait_job(requester, job["id"])
    elapsed = time.perf_counter() - t0
    assert job["state"] == "released", job
    return elapsed, job


def one_bare(client: Any, image: str, bare_in: Path) -> float:
    t0 = time.perf_counter()
    client.containers.run(image, ["python3", "-c", SCRIPT], network_mode="none",
                          remove=True, entrypoint=[], labels=BENCH_LABEL,
                          volumes={str(bare_in): {"bind": "/in", "mode": "ro"},
                                   str(bare_in.parent / "bare-out"): {"bind": "/out",
                                                                      "mode": "rw"}})
    return time.perf_counter() - t0


def phases(job: dict[str, Any]) -> tuple[float, float]:
    sub = datetime.fromisoformat(job["submitted_at"])
    start = datetime.fromisoformat(job["started_at"])
    fin = datetime.fromisoformat(job["finished_at"])
    return (start - sub).total_seconds(), (fin - start).total_seconds()


def main(n: int = 10) -> int:
    instrument()
    work = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    url = f"sqlite:///{work / 'sandbox.db'}"
    upgrade(url)
    app = create_app({"DATABASE_URL": url, "LOG_KEY_FILE": str(work / "log.key")})
    token = create_first_admin(app, "operator").token
    stack = EmbeddedStack(app).start()
    admin = Client(stack.url, token)
    docker = docker_client()
    image = ensure_runner_image(docker).tag
    try:
        requester, permit_id, dataset_id, bare_in = setup(stack, admin, image, work)
        one_job(requester, permit_id, dataset_id)  # warm-up
        one_bare(docker, image, bare_in)
        jobs: list[float] = []
        bares: list[float] = []
        split: list[tuple[float, float]] = []
        for _ in range(n):  # interleaved, so drift in the host affects both alike
            elapsed, job = one_job(requester, permit_id, dataset_id)
            jobs.append(elapsed)
            split.append(phases(job))
            bares.append(one_bare(docker, image, bare_in))
    finally:
        stack.stop()
        for c in docker.containers.list(all=True, filters={"label": "data-sandbox.bench"}):
            c.remove(force=True)
    job_med, bare_med = statistics.median(jobs), statistics.median(bares)
    to_start = statistics.median(s for s, _ in split)
    running = statistics.median(r for _, r in split)
    print(f"N={n} (after 1 warm-up each); trivial script, 300-row input")
    print(f"job  (API submit -> released, polled every {POLL_S * 1000:.0f} ms): "
          f"median {job_med:.3f} s  [min {min(jobs):.3f}, max {max(jobs):.3f}]")
    print(f"bare (docker SDK containers.run, network none):            "
          f"median {bare_med:.3f} s  [min {min(bares):.3f}, max {max(bares):.3f}]")
    print("job breakdown (medians, from the job's own timestamps):")
    print(f"  submitted -> started (dispatch, projection, container create+start): "
          f"{to_start:.3f} s")
    print(f"  started -> finished (run, wait, checks, result post):                 "
          f"{running:.3f} s")
    print(f"  rest (submit request, observing the result by polling):             "
          f"{job_med - to_start - running:.3f} s")
    print("agent steps (medians over all runs incl. warm-up):")
    for label, ts in TIMINGS.items():
        print(f"  {label:<58} {statistics.median(ts):.3f} s")
    print(f"ratio={job_med / bare_med:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10))
