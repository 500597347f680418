"""The controller's CPU per authenticated read, per route, in process, on PostgreSQL.

CPU time, not wall time: on a shared, loaded machine a request's latency says more about
the other sessions than about the controller, while the CPU it burns is its own. For each
route of ``bench.api_load``'s readers (``GET /me`` and ``GET /jobs`` with an analyst's
personal token, ``GET /ledger/entries?start=0&end=20`` with an auditor's), and of its
submitters' poll of their job (``GET /jobs/<id>``, one of the analyst's), N requests
are sent straight to the app's WSGI callable (no test client, no HTTP server) and timed
with ``time.process_time()`` (every thread of the process), and PostgreSQL's backends'
CPU over the same requests is read from ``/proc``. The process runs as under
``sandbox serve``: JSON access log at INFO (to a file), prometheus-client in
multiprocess mode, the request looking as if gunicorn served it.

Side by side: one throwaway cluster and one world (made with this tree's code), then
rounds in which each tree measured (``--against`` another checkout, e.g. ``/work/main``,
and this one) runs in a fresh process of its own, alternating, so both see the same load.
Prints, per route, the median over rounds of the controller's CPU ms per read and
PostgreSQL's, for each tree; "mean" is the readers' three routes' (the poll apart).

Usage: ``.venv/bin/python -m bench.read_cpu [--against DIR] [--reads N] [--rounds R]``
(default: this tree only, 600 reads per route, 3 rounds).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ROUTES = {"me": "/api/v1/me", "jobs": "/api/v1/jobs",
          "ledger": "/api/v1/ledger/entries?start=0&end=20", "poll": "/api/v1/jobs/{job}"}
#: The readers' routes: their mean is comparable with the figures before "poll" was added.
READER_ROUTES = ("me", "jobs", "ledger")
READER_JOBS = 10


def _backends_cpu(postmaster: int) -> float:
    """CPU seconds (user + system) of the postmaster's children so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:  # ppid
            total += int(fields[11]) + int(fields[12])
    return total / tick


def measure(world: dict[str, Any], reads: int) -> dict[str, Any]:
    """In a process of its own, with PYTHONPATH naming the tree measured."""
    import logging

    from werkzeug.test import EnvironBuilder

    from sandbox import create_app, db, logging_setup

    logging_setup.configure("INFO")
    app = create_app({"START_CHECKPOINTER": False})
    logging.getLogger("sandbox.server").info("measuring", extra={"tree": sys.path[0]})
    environs: dict[str, dict[str, Any]] = {}
    for name, path in ROUTES.items():
        token = world["auditor"] if name == "ledger" else world["reader"]
        base: dict[str, Any] = {"REMOTE_ADDR": "127.0.0.1",
                                "SERVER_SOFTWARE": "gunicorn/23.0.0"}
        b = EnvironBuilder(path=path.format(job=world["job"]),
                           headers=[("Authorization", f"Bearer {token}")], environ_base=base)
        environs[name] = b.get_environ()

    status: list[str] = []

    def start_response(s: str, _headers: Any, _exc: Any = None) -> Any:
        status.append(s)

    def call(name: str) -> None:
        env = dict(environs[name])
        env["wsgi.input"] = io.BytesIO(b"")
        status.clear()
        body = app.wsgi_app(env, start_response)
        try:
            for _ in body:
                pass
        finally:
            getattr(body, "close", lambda: None)()
        if not status[0].startswith("200"):
            raise SystemExit(f"{name}: {status[0]}")

    for _ in range(30):  # warm: pools, caches, the first statements' preparation
        for name in ROUTES:
            call(name)
    profile_to = os.environ.get("READ_CPU_PROFILE")  # a cProfile dump of the measured reads
    if profile_to:
        import cProfile

        profiler = cProfile.Profile(time.process_time)  # CPU, not waits
        profiler.enable()
    # Per batch of requests, so that a burst of other work on the machine moves only the
    # batches it fell on: each figure is the median batch's.
    cpu: dict[str, list[float]] = {name: [] for name in ROUTES}
    pg: dict[str, list[float]] = {name: [] for name in ROUTES}
    wall: dict[str, list[float]] = {name: [] for name in ROUTES}
    batch = 20
    for _ in range(max(1, reads // batch)):
        for name in ROUTES:
            # Reading /proc costs this process CPU too: outside the timed span.
            b0 = _backends_cpu(world["postmaster"])
            p0, w0 = time.process_time(), time.perf_counter()
            for _ in range(batch):
                call(name)
            cpu[name].append(time.process_time() - p0)
            wall[name].append(time.perf_counter() - w0)
            pg[name].append(_backends_cpu(world["postmaster"]) - b0)
    if profile_to:
        profiler.disable()
        profiler.dump_stats(profile_to)
    db.dispose(app)
    # PostgreSQL's figure is a mean: /proc counts in clock ticks (10 ms), too coarse for
    # a batch's median.
    return {name: {"cpu_ms": statistics.median(cpu[name]) * 1000 / batch,
                   "pg_ms": statistics.fmean(pg[name]) * 1000 / batch,
                   "wall_ms": statistics.median(wall[name]) * 1000 / batch}
            for name in ROUTES}


def make_world(work: Path) -> dict[str, Any]:
    """Parties, people and jobs as bench.api_load has them, through the test client."""
    from sandbox import create_app, db
    from sandbox.bootstrap import create_first_admin
    from tests.api.helpers import permit_for
    from tests.api.test_read_path import released_job
    from tests.conftest import PASSWORD, Actor, accredit

    app = create_app({"START_CHECKPOINTER": False})
    client = app.test_client()
    issued = create_first_admin(app, "operator")
    admin = Actor(client, issued.id, issued.token, "admin")

    def party(role: str, name: str) -> Actor:
        body = {"name": name, "role": role} | ({"code": "RC"} if role == "provider" else {})
        made = admin.post("/parties", body).get_json()
        return Actor(client, made["id"], made["token"], role)

    def person(p: Actor, role: str) -> Actor:
        email = f"{role}.{p.id.lower()}@bench.example"
        made = admin.post(f"/parties/{p.id}/people", {
            "name": f"Bench {role}", "email": email, "roles": [role],
            "password": PASSWORD}).get_json()
        accredit(admin, made["id"])
        signed = client.post("/api/v1/sign-in", json={"email": email, "password": PASSWORD})
        return Actor(client, made["id"], signed.get_json()["token"], p.role)

    provider = party("provider", "Bench Hospital")
    made = admin.post("/agents", {"name": "bench agent", "providers": [provider.id]}).get_json()
    agent = Actor(client, made["id"], made["token"], "agent")
    analyst = person(party("requester", "Bench Readers"), "analyst")
    ds, permit_id = permit_for(analyst, provider, agent, people=(analyst.id,), max_runs=100)
    jobs = [released_job(analyst, agent, permit_id, ds["id"], n) for n in range(READER_JOBS)]
    auditor = person(party("regulator", "Bench Bureau"), "auditor")
    db.dispose(app)
    return {"reader": analyst.token, "auditor": auditor.token, "job": jobs[-1]}


def _median(runs: list[dict[str, Any]], name: str, key: str) -> float:
    """The median over rounds of one route's figure ("mean": of the readers' routes')."""
    if name == "mean":
        return float(statistics.median(
            statistics.fmean(run[n][key] for n in READER_ROUTES) for run in runs))
    return float(statistics.median(run[name][key] for run in runs))


def _postmaster(url: str) -> int:
    from urllib.parse import parse_qs, urlsplit

    sock = Path(parse_qs(urlsplit(url).query)["host"][0])
    return int((sock.parent / "data" / "postmaster.pid").read_text().split()[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", type=Path, help="another checkout to measure beside this")
    ap.add_argument("--reads", type=int, default=600, help="requests per route and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--hold", action="store_true",
                    help="make the world, print its environment, and wait (for profiling)")
    args = ap.parse_args(argv)
    if args.measure is not None:
        print(json.dumps(measure(json.loads(args.measure.read_text()), args.reads)))
        return 0

    from sandbox.migrate import upgrade
    from tests import pgcluster

    trees = ([args.against.resolve()] if args.against else []) + [ROOT]
    with tempfile.TemporaryDirectory(prefix="read-cpu-") as tmp, pgcluster.cluster() as url:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
        env.update({"SANDBOX_DATABASE_URL": url, "SANDBOX_INSTANCE": str(work / "instance"),
                    "SANDBOX_LOG_KEY_FILE": str(work / "log.key"),
                    "PROMETHEUS_MULTIPROC_DIR": str(work / "metrics")})
        (work / "metrics").mkdir()
        os.environ.update(env)
        upgrade(url)
        world = make_world(work) | {"postmaster": _postmaster(url)}
        (work / "world.json").write_text(json.dumps(world))
        if args.hold:
            print(json.dumps({k: v for k, v in env.items() if k.startswith(("SANDBOX_", "PROM"))}
                             | {"WORLD": str(work / "world.json")}), flush=True)
            # Until SIGTERM (or ^C): then the cluster is stopped and removed as usual.
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            while True:
                time.sleep(3600)
        seen: dict[Path, list[dict[str, Any]]] = {t: [] for t in trees}
        for r in range(args.rounds):
            for tree in trees:
                with open(work / "controller.log", "ab") as log:
                    out = subprocess.run(
                        [sys.executable, str(ROOT / "bench" / "read_cpu.py"), "--measure",
                         str(work / "world.json"), "--reads", str(args.reads)],
                        env=env | {"PYTHONPATH": str(tree)}, cwd=tree, stdout=subprocess.PIPE,
                        stderr=log, check=False)
                if out.returncode != 0:
                    sys.stderr.write((work / "controller.log").read_text()[-3000:])
                    return 1
                seen[tree].append(json.loads(out.stdout))
                print(f"round {r + 1} {tree}: {out.stdout.decode().strip()}", flush=True)
        loadavg = os.getloadavg()[0]
    print(f"\nmedian over {args.rounds} rounds, {args.reads} reads per route and round "
          f"(load average {loadavg:.1f}): controller CPU ms / PostgreSQL CPU ms per read")
    print("route   " + "".join(f"{t!s:>34}" for t in trees))
    for name in [*ROUTES, "mean"]:
        cells = [f"{_median(seen[t], name, 'cpu_ms'):.2f} / {_median(seen[t], name, 'pg_ms'):.2f}"
                 for t in trees]
        print(f"{name:<8}" + "".join(f"{c:>34}" for c in cells))
    return 0


if __name__ == "__main__":
    # Run by its path (the measured process), its own folder would come first on the path,
    # and bench/ledger.py would hide the ledger package.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
    sys.exit(main())
