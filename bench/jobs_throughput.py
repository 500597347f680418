"""Jobs per minute for a trivial job, with an agent of 1, 2 and 4 slots, end to end.

One embedded stack (SQLite controller on 127.0.0.1, real agents in threads talking HTTP,
real Docker engine). Each configuration has its own provider, dataset (300 rows) and agent
(``EmbeddedStack.start_agent(..., slots=N)``), so an idle agent never takes another's jobs.
For each configuration in turn: one warm-up job, then a batch of B jobs submitted at once
through the API (``POST /jobs``); the clock runs from the first submission until every job
of the batch is terminal (the provider's ``GET /jobs``, polled every 50 ms). Every job must
be released.

The job: count the rows and write a one-row aggregate with an ``n`` column; no pandas.

Prints ``jobs_per_min_slots_<N>=<x>`` per configuration, plus the load average around each
batch. Usage: ``.venv/bin/python -m bench.jobs_throughput [B] [slots ...]`` (default 16 and
1 2 4).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from authz.wire import TERMINAL
from bench.fixtures import embedded_controller, statistics_permit
from containers.engine import docker_client
from containers.executor import DockerExecutor, Limits
from containers.image import ensure_runner_image
from sandbox.client import Client
from sandbox.demo_data import write_hospital
from sandbox.embedded import EmbeddedStack

SCRIPT = ("n = sum(1 for _ in open('/in/data.csv')) - 1\n"
          "open('/out/total.csv', 'w').write(f'n\\n{n}\\n')\n")
POLL_S = 0.05
LABELS = {"data-sandbox.bench": "jobs-throughput"}
ROWS = 300


def remove_ours() -> None:
    """Containers (and /out mounts) this bench labelled; nobody else's."""
    client = docker_client()
    executor = DockerExecutor(client)
    filters = {"label": [f"{k}={v}" for k, v in LABELS.items()]}
    for c in client.containers.list(all=True, filters=filters):
        job_id = c.labels.get("data-sandbox.job")
        if job_id:
            executor.cleanup(job_id)
        else:
            c.remove(force=True)
    client.close()


class Config:
    """One provider, its dataset and its agent of ``slots`` slots; a requester's permit."""

    def __init__(self, stack: EmbeddedStack, admin: Client, requester: Client, image: str,
                 work: Path, slots: int) -> None:
        self.slots = slots
        code = f"H-TPUT-{slots}"
        p = admin.post("/parties", {"name": f"Throughput Hospital {slots}",
                                    "role": "provider", "code": code})
        root = work / f"domain-{slots}"
        write_hospital(root, slots, ROWS, code)
        agent = admin.post("/agents", {"name": f"bench agent {slots}",
                                       "providers": [p["id"]]})
        stack.start_agent(agent["token"], [root], work / f"jobs-{slots}", image,
                          Limits(timeout_s=120), poll_wait_s=1.0, labels=LABELS, slots=slots,
                          timing_grain_s=0.0)  # a privacy delay, not throughput
        self.provider = Client(stack.url, p["token"])
        self.permit_id, self.dataset_id = statistics_permit(
            self.provider, requester, code=f"{code}-IPE", location="inpatient_episodes.csv",
            purpose="Benchmark of job throughput.", columns=["age", "diagnosis"],
            max_runs=10_000)
        self.requester = requester

    def submit(self) -> str:
        job = self.requester.post("/jobs", {"permit_id": self.permit_id,
                                            "dataset_ids": [self.dataset_id],
                                            "script": SCRIPT})
        job_id: str = job["id"]
        return job_id

    def wait_all(self, ids: set[str], timeout_s: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            jobs = [j for j in self.provider.get("/jobs")["jobs"] if j["id"] in ids]
            if len(jobs) == len(ids) and all(j["state"] in TERMINAL for j in jobs):
                return jobs
            if time.monotonic() > deadline:
                states = sorted(j["state"] for j in jobs)
                raise SystemExit(f"slots={self.slots}: not all terminal after "
                                 f"{timeout_s}s: {states}")
            time.sleep(POLL_S)

    def batch(self, n: int) -> float:
        """Submit n jobs at once; seconds until all are terminal (all must be released)."""
        t0 = time.perf_counter()
        ids = {self.submit() for _ in range(n)}
        jobs = self.wait_all(ids, timeout_s=60 + 30 * n)
        elapsed = time.perf_counter() - t0
        bad = [j for j in jobs if j["state"] != "released"]
        if bad:
            raise SystemExit(f"slots={self.slots}: {len(bad)} job(s) not released: {bad[0]}")
        return elapsed


def main(batch: int = 16, slot_counts: tuple[int, ...] = (1, 2, 4)) -> int:
    remove_ours()
    work = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    stack, token = embedded_controller(work, AGENT_POLL_WAIT_S=1.0)
    admin = Client(stack.url, token)
    results: list[tuple[int, float, tuple[float, float, float], tuple[float, float, float]]]
    results = []
    try:
        image = ensure_runner_image(docker_client()).tag
        r = admin.post("/parties", {"name": "Bench Requester", "role": "requester"})
        requester = Client(stack.url, r["token"])
        configs = [Config(stack, admin, requester, image, work, n) for n in slot_counts]
        for cfg in configs:
            cfg.batch(1)  # warm-up: the agent's first poll, caches, the image's pages
            before = os.getloadavg()
            elapsed = cfg.batch(batch)
            results.append((cfg.slots, elapsed, before, os.getloadavg()))
    finally:
        stack.stop()
        remove_ours()
    cpus = os.cpu_count()
    print(f"batch={batch} trivial jobs submitted at once per configuration, {ROWS}-row "
          f"input; {cpus} CPU(s); end to end through the API (submit -> all terminal)")
    for slots, elapsed, before, after in results:
        print(f"slots={slots}: {elapsed:.2f} s for {batch} jobs, "
              f"{elapsed / batch:.2f} s/job; load average before "
              f"{before[0]:.2f}, after {after[0]:.2f}")
    for slots, elapsed, _, _ in results:
        print(f"jobs_per_min_slots_{slots}={batch / elapsed * 60:.1f}")
    return 0


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    sys.exit(main(args[0] if args else 16, tuple(args[1:]) or (1, 2, 4)))
