"""Overhead of a sandboxed job over a bare container run of the same script, per runtime.

For each OCI runtime (runc, then gVisor's runsc), a fresh embedded stack whose agent uses
that runtime, and side by side in one run, N times each after one warm-up each:

- job:  POST /jobs through the API of an embedded stack (SQLite, real agent, real engine)
        until ``GET /jobs/<id>`` says released (polled every 20 ms);
- bare: ``client.containers.run(image, ["python3", "-c", SCRIPT], network_mode="none",
        runtime=<the same runtime>)`` with the same input mounted read-only at /in and a host
        dir at /out.

Each bare run starts once the agent has cleaned up the previous job (so the two never share
the engine). The agent runs each new script on mock data first and remembers the scripts
that passed: the runs above repeat one script (no mock run); then K first runs of new
scripts (each a mock run, then the run) give ``mock_first_added_s``, the latency a first
run adds. Then a realistic scenario the same way (M runs each): a pandas script
aggregating a 10,000-row input. Prints both medians, a breakdown of the trivial job from its
own timestamps, the realistic ratio and ``ratio[<runtime>]=<x>`` for each runtime, and last
``ratio=<x>``: median job / median bare, trivial script, under the runtime the agent uses by
default (runsc when the engine has it). Usage:
``.venv/bin/python -m bench.job_overhead [N] [M] [RUNTIMES]`` (M=0: trivial only; RUNTIMES
comma-separated, default ``runc,runsc``).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.fixtures import embedded_controller, statistics_permit
from containers.engine import choose_runtime, docker_client, engine_facts
from containers.image import ensure_runner_image
from sandbox.client import Client
from sandbox.demo_data import write_hospital
from sandbox.embedded import EmbeddedStack

# The trivial job: count the rows, write a one-row aggregate.
SCRIPT = ("n = sum(1 for _ in open('/in/data.csv')) - 1\n"
          "open('/out/total.csv', 'w').write(f'n\\n{n}\\n')\n")
# The realistic job: pandas, an aggregate of 10,000 rows (every cell well above k).
REALISTIC = """import pandas as pd
df = pd.read_csv("/in/data.csv")
df["age_band"] = pd.cut(df["age"], [0, 18, 40, 65, 120], right=False,
                        labels=["0-17", "18-39", "40-64", "65+"])
t = df.groupby(["age_band", "sex"], observed=True)["cost"].agg(n="count", mean="mean")
t.round(2).reset_index().to_csv("/out/cost_by_age_and_sex.csv", index=False)
"""
BIG_ROWS = 10_000
POLL_S = 0.02
BENCH_LABEL = {"data-sandbox.bench": "job-overhead"}


TIMINGS: dict[str, list[float]] = {}
CLEANED = threading.Event()  # set when the agent cleaned up and prewarmed after a job


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

    from containers import warm

    prewarm = warm.prewarm

    @functools.wraps(prewarm)
    def prewarm_then_signal(*a: Any, **kw: Any) -> Any:
        try:
            return prewarm(*a, **kw)
        finally:
            CLEANED.set()

    # After a job the agent cleans up, then starts the slot's next container: the bare run
    # waits for both, so neither overlaps it.
    warm.prewarm = prewarm_then_signal

    wrap(datasets, "project", "agent: project input (pandas read/write, rare values)")
    wrap(DockerExecutor, "start", "executor.start (bind the warm container, trigger)")
    wrap(DockerExecutor, "wait", "executor.wait (run to exit, logs)")
    wrap(checks, "check_outputs", "agent: check outputs")
    wrap(DockerExecutor, "cleanup", "executor.cleanup (remove, unmount)")
    wrap(controller_client, "started", "POST started")
    if hasattr(controller_client, "checking"):
        wrap(controller_client, "checking", "POST checking")
    wrap(controller_client, "result", "POST result")


def bare_input(src: Path, dest: Path) -> Path:
    """The projected columns, written once like the agent does, for the bare run."""
    import pandas as pd

    dest.mkdir()
    (pd.read_csv(src, dtype=str, keep_default_na=False)
     [["age", "sex", "diagnosis", "cost"]].to_csv(dest / "data.csv", index=False))
    return dest


def setup(stack: EmbeddedStack, admin: Client, image: str, work: Path, runtime: str
          ) -> tuple[Client, list[tuple[str, str, Path]]]:
    """(requester, [(permit, dataset, bare input dir)] for the trivial and realistic data)."""
    p = admin.post("/parties", {"name": "Bench Hospital", "role": "provider",
                                "code": "H-BENCH"})
    root = work / "domain"
    write_hospital(root, 7, 300, "H-BENCH")
    write_hospital(root / "big", 11, BIG_ROWS, "H-BIG")
    agent = admin.post("/agents", {"name": "bench agent", "providers": [p["id"]]})
    # No timing grain: it is a deliberate delay (a privacy setting), not overhead.
    stack.start_agent(agent["token"], [root], work / "jobs", image, timing_grain_s=0.0,
                      runtime=runtime)
    provider = Client(stack.url, p["token"])
    r = admin.post("/parties", {"name": "Bench Requester", "role": "requester"})
    requester = Client(stack.url, r["token"])
    (work / "bare-out").mkdir(mode=0o777)
    (work / "bare-out").chmod(0o777)
    out = []
    for code, location in (("H-BENCH-IPE", "inpatient_episodes.csv"),
                           ("H-BENCH-BIG", "big/inpatient_episodes.csv")):
        permit_id, dataset_id = statistics_permit(
            provider, requester, code=code, location=location,
            purpose="Benchmark of the job overhead.",
            columns=["age", "sex", "diagnosis", "cost"])
        out.append((permit_id, dataset_id,
                    bare_input(root / location, work / f"bare-in-{code}")))
    return requester, out


def one_job(requester: Client, permit_id: str, dataset_id: str, script: str = SCRIPT
            ) -> tuple[float, dict[str, Any]]:
    CLEANED.clear()
    t0 = time.perf_counter()
    job = requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [dataset_id],
                                   "script": script})
    job = requester.wait_job(job["id"], poll_s=POLL_S)
    elapsed = time.perf_counter() - t0
    assert job["state"] == "released", job
    return elapsed, job


def one_bare(client: Any, image: str, bare_in: Path, runtime: str, script: str = SCRIPT
             ) -> float:
    CLEANED.wait(30)  # the agent's cleanup of the last job must not overlap the bare run
    t0 = time.perf_counter()
    client.containers.run(image, ["python3", "-c", script], network_mode="none",
                          runtime=runtime, remove=True, entrypoint=[], labels=BENCH_LABEL,
                          volumes={str(bare_in): {"bind": "/in", "mode": "ro"},
                                   str(bare_in.parent / "bare-out"): {"bind": "/out",
                                                                      "mode": "rw"}})
    return time.perf_counter() - t0


def phases(job: dict[str, Any]) -> tuple[float, float]:
    sub = datetime.fromisoformat(job["submitted_at"])
    start = datetime.fromisoformat(job["started_at"])
    fin = datetime.fromisoformat(job["finished_at"])
    return (start - sub).total_seconds(), (fin - start).total_seconds()


def side_by_side(n: int, requester: Client, permit: str, dataset: str, bare_in: Path,
                 docker: Any, image: str, script: str, runtime: str
                 ) -> tuple[list[float], list[float], list[tuple[float, float]]]:
    one_job(requester, permit, dataset, script)  # warm-up
    one_bare(docker, image, bare_in, runtime, script)
    jobs: list[float] = []
    bares: list[float] = []
    split: list[tuple[float, float]] = []
    for _ in range(n):  # interleaved, so drift in the host affects both alike
        elapsed, job = one_job(requester, permit, dataset, script)
        jobs.append(elapsed)
        split.append(phases(job))
        bares.append(one_bare(docker, image, bare_in, runtime, script))
    return jobs, bares, split


def measure(n: int, m: int, runtime: str) -> float:
    """One runtime's figures, printed; returns its trivial-script ratio."""
    TIMINGS.clear()
    work = Path(tempfile.mkdtemp(prefix=f"bench-overhead-{runtime}-"))
    stack, token = embedded_controller(work)
    admin = Client(stack.url, token)
    docker = docker_client()
    image = ensure_runner_image(docker).tag
    try:
        requester, data = setup(stack, admin, image, work, runtime)
        (permit, dataset, bare_in), big = data
        jobs, bares, split = side_by_side(n, requester, permit, dataset, bare_in, docker,
                                          image, SCRIPT, runtime)
        steps = {label: statistics.median(ts) for label, ts in TIMINGS.items()}
        # A new hash each: every one of these runs on mock data before the real run.
        firsts = [one_job(requester, permit, dataset, SCRIPT + f"# first run {i}\n")[0]
                  for i in range(max(3, n // 2))]
        real: tuple[list[float], list[float], Any] | None = None
        if m:
            real = side_by_side(m, requester, *big, docker, image, REALISTIC, runtime)
    finally:
        stack.stop()
        for c in docker.containers.list(all=True, filters={"label": "data-sandbox.bench"}):
            c.remove(force=True)
    job_med, bare_med = statistics.median(jobs), statistics.median(bares)
    to_start = statistics.median(s for s, _ in split)
    running = statistics.median(r for _, r in split)
    print(f"== runtime {runtime}")
    print(f"N={n} (after 1 warm-up each); trivial script, 300-row input")
    print(f"job  (API submit -> released, polled every {POLL_S * 1000:.0f} ms): "
          f"median {job_med:.3f} s  [min {min(jobs):.3f}, max {max(jobs):.3f}]")
    print(f"bare (docker SDK containers.run, network none, {runtime}):     "
          f"median {bare_med:.3f} s  [min {min(bares):.3f}, max {max(bares):.3f}]")
    print("job breakdown (medians, from the job's own timestamps):")
    print(f"  submitted -> started (dispatch, projection, container create+start): "
          f"{to_start:.3f} s")
    print(f"  started -> finished (run, wait, checks, result post):                 "
          f"{running:.3f} s")
    print(f"  rest (submit request, observing the result by polling):             "
          f"{job_med - to_start - running:.3f} s")
    print("agent steps, trivial script (medians over all runs incl. warm-up; POST started/"
          "checking may overlap the run):")
    for label, med in steps.items():
        print(f"  {label:<58} {med:.3f} s")
    first_med = statistics.median(firsts)
    print(f"first run of a new script (mock run, then the run), K={len(firsts)}: median "
          f"{first_med:.3f} s [min {min(firsts):.3f}, max {max(firsts):.3f}] against "
          f"{job_med:.3f} s for a script that already passed: "
          f"mock_first_added_s={first_med - job_med:.3f}")
    if real is not None:
        rj, rb = statistics.median(real[0]), statistics.median(real[1])
        print(f"realistic (pandas, group-by over {BIG_ROWS} rows), M={m}: job median {rj:.3f} s"
              f" [{min(real[0]):.3f}-{max(real[0]):.3f}], bare median {rb:.3f} s"
              f" [{min(real[1]):.3f}-{max(real[1]):.3f}], realistic_ratio={rj / rb:.2f}")
    print(f"ratio[{runtime}]={job_med / bare_med:.2f}")
    return job_med / bare_med


def main(n: int = 10, m: int = 5, runtimes: tuple[str, ...] = ("runc", "runsc")) -> int:
    instrument()
    client = docker_client()
    default = choose_runtime(engine_facts(client))  # what an agent uses unless told
    client.close()
    ratios = {rt: measure(n, m, rt) for rt in runtimes}
    shown = default if default in ratios else runtimes[0]
    print(f"ratio below: runtime {shown} (the agent's default here: {default})")
    print(f"ratio={ratios[shown]:.2f}")
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(int(args[0]) if args else 10, int(args[1]) if len(args) > 1 else 5,
                  tuple(args[2].split(",")) if len(args) > 2 else ("runc", "runsc")))
