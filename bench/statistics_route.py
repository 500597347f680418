"""The trusted statistics route against a script job computing the same table.

Side by side in one run on one embedded stack (SQLite controller, a real agent, the real
engine), N times each after one warm-up each, alternating: a statistics job (declared
spec, computed and checked by the agent itself) and a script job (pandas in a hardened
container, outputs checked by the file-level rules), both giving the mean cost by sex
and diagnosis over the same 10,000-row dataset. Wall time from
``POST /jobs`` until the job is released, polled every 20 ms. Prints both medians and
``ratio=<statistics median / script median>`` last (goal ≤ 1.2). Usage:
``.venv/bin/python -m bench.statistics_route [N]``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.fixtures import embedded_controller, statistics_permit
from containers.engine import docker_client
from containers.image import ensure_runner_image
from sandbox.client import Client
from sandbox.demo_data import write_hospital
from sandbox.embedded import EmbeddedStack

ROWS = 10_000
POLL_S = 0.02
SCRIPT = """import pandas as pd
df = pd.read_csv("/in/data.csv")
t = df.groupby(["sex", "diagnosis"])["cost"].agg(n="count", mean_cost="mean").reset_index()
t["mean_cost"] = t["mean_cost"].round(2)
t.to_csv("/out/cost_by_sex_and_diagnosis.csv", index=False)
"""
SPEC = {"analyses": [{"kind": "magnitude", "dims": ["sex", "diagnosis"], "value": "cost",
                      "statistics": ["mean"]}]}


def setup(stack: EmbeddedStack, admin: Client, image: str, work: Path
          ) -> tuple[Client, str, str]:
    p = admin.post("/parties", {"name": "Bench Hospital", "role": "provider",
                                "code": "H-STATS"})
    root = work / "domain"
    write_hospital(root, 11, ROWS, "H-STATS")
    agent = admin.post("/agents", {"name": "bench agent", "providers": [p["id"]]})
    # No timing grain for either route: it is a privacy delay, not the route's cost.
    stack.start_agent(agent["token"], [root], work / "jobs", image, timing_grain_s=0.0)
    provider = Client(stack.url, p["token"])
    r = admin.post("/parties", {"name": "Bench Requester", "role": "requester"})
    requester = Client(stack.url, r["token"])
    permit_id, dataset_id = statistics_permit(
        provider, requester, code="H-STATS-IPE", location="inpatient_episodes.csv",
        purpose="Benchmark of the statistics route.",
        columns=["age", "sex", "diagnosis", "cost"])
    return requester, permit_id, dataset_id


def one(requester: Client, permit_id: str, dataset_id: str, body: dict[str, Any]) -> float:
    t0 = time.perf_counter()
    job = requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [dataset_id],
                                   **body})
    job = requester.wait_job(job["id"], poll_s=POLL_S)
    elapsed = time.perf_counter() - t0
    assert job["state"] == "released", (job["state"], job["reason"])
    return elapsed


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        image = ensure_runner_image(docker_client()).tag
        stack, admin_token = embedded_controller(work, AGENT_POLL_WAIT_S=0.5)
        try:
            requester, permit_id, ds_id = setup(stack, Client(stack.url, admin_token),
                                                image, work)
            routes: dict[str, dict[str, Any]] = {"statistics": {"statistics": SPEC},
                                                 "script": {"script": SCRIPT}}
            for body in routes.values():
                one(requester, permit_id, ds_id, body)  # warm-up
            times: dict[str, list[float]] = {k: [] for k in routes}
            for _ in range(n):
                for name, body in routes.items():
                    times[name].append(one(requester, permit_id, ds_id, body))
        finally:
            stack.stop()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"rows={ROWS}")
    print(f"runs_each={n}")
    print(f"statistics_median_s={med['statistics']:.3f}")
    print(f"script_median_s={med['script']:.3f}")
    print(f"ratio={med['statistics'] / med['script']:.2f}")


if __name__ == "__main__":
    main()
