"""The controller under load on PostgreSQL: production server against development server.

One throwaway PostgreSQL 15 cluster (tests.pgcluster), one controller port, two real
agent processes (``sandbox agent``, the Docker engine, 2 slots each) serving one
provider. The world is made through the API as people do it: an operator, a provider,
two requesters and a regulator; an analyst of each requester and an auditor of the
regulator, identified, accredited and signed in (personal tokens); each analyst's permit
names them.

Three phases on the same database, each with R readers and S submitters at once:

1. ``gunicorn``: ``sandbox serve`` with its default workers and threads, measured;
2. ``dev``: werkzeug's threaded development server on ``create_app()``, measured;
3. ``chaos``: ``sandbox serve`` again, while the controller (its process group) and then
   one agent are killed with SIGKILL and restarted at once, and PostgreSQL is stopped in
   immediate mode and started again.

A reader holds one keep-alive connection and sends, in turn, ``GET /me`` and
``GET /jobs`` (the reading analyst's token; that requester has a fixed set of jobs) and
``GET /ledger/entries?start=0&end=20`` (the auditor's token). A submitter submits a
statistics job (mean cost by sex and diagnosis, computed and checked by the agent, no
container) as the submitting analyst, polls it every 0.2 s until it is terminal, and
submits the next. Statistics jobs keep the submitters' cost in the controller and the
queue, not in container start-up (bench.jobs_throughput measures that).

Prints reads/s and p50/p95/p99 latency of the readers and jobs per minute per phase,
then where the CPU went in the phase's window (cores per controller worker, agent,
PostgreSQL, the bench, everything else) and the controller's requests per second per
route (bench.api_load_cpu);
for the chaos phase what the checks found: every job acknowledged (and every job the
submitting requester has) ends released, none has more than one ``run.finished`` entry,
the permit counts as many runs as jobs ran, and no answer was a 5xx other than a 503
while PostgreSQL was down (or within GRACE_S after). Last ``ratio=<gunicorn reads/s
over dev reads/s>``. Also ``server_5xx=``: the 5xx answers other than 503 the controller
logged in the first two phases, to anyone (the agents' calls too). Exit status 1 when a
chaos check failed or ``server_5xx`` is not 0; ``--keep-logs`` keeps the processes' logs
either way.

Needs the Docker engine (the agents check it at start): run it under
``flock /tmp/sandbox-docker-tests.lock``. Usage:
``.venv/bin/python -m bench.api_load [--quick] [--readers R] [--submitters S]
[--seconds T] [--no-chaos] [--workers W] [--threads N] [--controller-cpus LIST]``
(default 20 readers, 20 submitters, 60 s per phase, ``sandbox serve``'s own defaults;
``--quick``: 15 s). ``--controller-cpus 0-1`` gives the controller (either server) those
CPUs and runs PostgreSQL, the agents and the clients on the others, as a deployment
would where the agents sit in the providers' domains: the goal's "2 cores" are then the
controller's own. That is the default on a machine with 4 CPUs or more (the first 2 the
bench may use); with fewer, or ``--controller-cpus all``, everything shares every CPU.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authz.wire import TERMINAL
from bench import api_load_cpu
from bench.api_load_world import SPEC, Processes, World, make_world
from bench.fixtures import admin_token_for_server
from sandbox.client import Client
from sandbox.migrate import upgrade
from tests import pgcluster

POLL_S = 0.2
GRACE_S = 5.0


class Http:
    """One keep-alive connection that reconnects after any failure."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, token: str, body: bytes | None = None
             ) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Authorization": f"Bearer {token}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            self.conn.request(method, path, body=body, headers=headers)
            r = self.conn.getresponse()
            return r.status, r.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise


@dataclass
class Run:
    """What one phase's clients saw."""

    reads: list[tuple[float, float]] = field(default_factory=list)  # (start, latency)
    errors: list[tuple[float, str]] = field(default_factory=list)  # (time, what)
    acknowledged: list[str] = field(default_factory=list)
    finished: list[tuple[float, str]] = field(default_factory=list)  # (time, state)
    cpu: str = ""  # where the CPU went in the measured window (bench.api_load_cpu)
    routes: str = ""  # the controller's requests per route in that window
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, status: int | str, path: str) -> None:
        if status == 200 or status == 201:
            return
        with self.lock:
            self.errors.append((time.monotonic(), f"{status} {path.split('?')[0]}"))


def reader(port: int, w: World, run: Run, stop: threading.Event, i: int) -> None:
    paths = (("/api/v1/me", w.reader), ("/api/v1/jobs", w.reader),
             ("/api/v1/ledger/entries?start=0&end=20", w.auditor))
    c, n, mine = Http(port), i, []
    while not stop.is_set():
        path, token = paths[n % len(paths)]
        n += 1
        t0 = time.monotonic()
        try:
            status, _ = c.call("GET", path, token)
        except (OSError, http.client.HTTPException) as e:
            run.note(type(e).__name__, path)
            stop.wait(0.05)
            continue
        if status == 200:
            mine.append((t0, time.monotonic() - t0))
        else:
            run.note(status, path)
            stop.wait(0.05)
    with run.lock:
        run.reads.extend(mine)


def submitter(port: int, w: World, run: Run, stop: threading.Event, drain_until: list[float]
              ) -> None:
    c = Http(port)
    body = json.dumps({"permit_id": w.permit_id, "dataset_ids": [w.dataset_id],
                       "statistics": SPEC}).encode()
    while not stop.is_set():
        try:
            status, raw = c.call("POST", "/api/v1/jobs", w.submitter, body)
        except (OSError, http.client.HTTPException) as e:
            # The job may or may not exist: the final check lists the requester's jobs.
            run.note(type(e).__name__, "/api/v1/jobs")
            stop.wait(0.1)
            continue
        if status != 201:
            run.note(status, "/api/v1/jobs")
            stop.wait(0.1)
            continue
        job_id = json.loads(raw)["id"]
        with run.lock:
            run.acknowledged.append(job_id)
        # After the phase, the job in hand is still followed to its end (until drain).
        while not stop.is_set() or time.monotonic() < drain_until[0]:
            time.sleep(POLL_S)
            try:
                status, raw = c.call("GET", f"/api/v1/jobs/{job_id}", w.submitter)
            except (OSError, http.client.HTTPException) as e:
                run.note(type(e).__name__, "/api/v1/jobs/<id>")
                continue
            if status != 200:
                run.note(status, "/api/v1/jobs/<id>")
                continue
            state = json.loads(raw)["state"]
            if state in TERMINAL:
                with run.lock:
                    run.finished.append((time.monotonic(), state))
                break


def phase(procs: Processes, w: World, args: argparse.Namespace, chaos: Any = None
          ) -> tuple[Run, float, float]:
    """Run readers and submitters; returns what they saw and the measured window."""
    run, stop, drain = Run(), threading.Event(), [0.0]
    threads = [threading.Thread(target=reader, args=(procs.port, w, run, stop, i))
               for i in range(args.readers)]
    threads += [threading.Thread(target=submitter, args=(procs.port, w, run, stop, drain))
                for _ in range(args.submitters)]
    for t in threads:
        t.start()
    time.sleep(args.warmup)
    groups = {name: p.pid for name, p in procs.procs.items()}
    db_url = procs.env["SANDBOX_DATABASE_URL"]
    cpu0, wall0 = api_load_cpu.snapshot(groups, db_url), time.time()
    start = time.monotonic()
    if chaos is not None:
        chaos(start)
    time.sleep(max(0.0, start + args.seconds - time.monotonic()))
    end = time.monotonic()
    wall1 = time.time()
    # Chaos restarts the controller, an agent and PostgreSQL: their new processes were not
    # in the first snapshot, so a breakdown would leave them out.
    run.cpu = ("cpu_cores not measured (processes restarted)" if chaos is not None else
               api_load_cpu.usage(cpu0, api_load_cpu.snapshot(groups, db_url), end - start))
    drain[0] = end + args.drain
    stop.set()
    for t in threads:
        t.join()
    run.routes = api_load_cpu.routes(procs.work / "controller.log", wall0, wall1)
    return run, start, end


STATUS_RX = re.compile(r'"status": (5\d\d)\b')


def server_errors(work: Path) -> int:
    """5xx answers other than 503 the controller has logged so far (its JSON access
    lines): the agents' calls included, which the readers and submitters do not see."""
    path = work / "controller.log"
    if not path.exists():
        return 0
    return sum(1 for m in STATUS_RX.finditer(path.read_text(errors="replace"))
               if m.group(1) != "503")


def report(name: str, run: Run, start: float, end: float, loadavg: float) -> float:
    lat = sorted(x for t0, x in run.reads if start <= t0 < end)
    rate = len(lat) / (end - start)
    jobs = sum(1 for t, _ in run.finished if start <= t < end)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")

    mean = statistics.fmean(lat) * 1000 if lat else float("nan")
    print(f"server={name} reads={len(lat)} reads_per_s={rate:.0f} p50_ms={pct(0.50):.1f} "
          f"p95_ms={pct(0.95):.1f} p99_ms={pct(0.99):.1f} mean_ms={mean:.1f} "
          f"jobs_per_min={jobs * 60 / (end - start):.0f} "
          f"errors={len([e for t, e in run.errors if start <= t < end])} "
          f"load_avg_1m={loadavg:.1f}", flush=True)
    print(f"{name} {run.cpu}\n{name} {run.routes}", flush=True)
    return rate


def ledger_runs(url: str, auditor: str) -> Counter[str]:
    """How many ``run.finished`` entries the ledger holds per job."""
    client, runs, start = Client(url, auditor), Counter[str](), 0
    while True:
        page = client.get("/ledger/entries", start=start, end=start + 1000)
        for e in page["entries"]:
            entry = json.loads(base64.b64decode(e["data"]))
            if entry["kind"] == "run.finished":
                runs[entry["body"]["job_id"]] += 1
        if page["end"] >= page["tree_size"]:
            return runs
        start = page["end"]


def chaos_phase(procs: Processes, w: World, args: argparse.Namespace, db_url: str,
                earlier: list[str]) -> bool:
    """The chaos run, then the checks over every job of the run (earlier phases' too)."""
    outage: list[float] = []

    def chaos(start: float) -> None:
        def act() -> None:
            third = args.seconds / 4
            time.sleep(third)
            procs.kill("controller")
            procs.start_server("gunicorn")
            time.sleep(max(0.0, start + 2 * third - time.monotonic()))
            procs.kill("agent-1")
            procs.restart_agent("agent-1")
            time.sleep(max(0.0, start + 3 * third - time.monotonic()))
            outage.append(time.monotonic())
            with pgcluster.stopped(db_url, mode="immediate"):
                pass
            outage.append(time.monotonic())

        threading.Thread(target=act, daemon=True).start()

    run, start, end = phase(procs, w, args, chaos)
    report("chaos", run, start, end, os.getloadavg()[0])
    # Every job the submitting requester has, acknowledged or not (a POST cut by the
    # controller's kill may have committed), must end released.
    mine = Client(procs.url, w.submitter)
    deadline = time.monotonic() + args.drain
    while True:
        jobs = mine.get("/jobs")["jobs"]
        open_ = [j for j in jobs if j["state"] not in TERMINAL]
        if not open_ or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    states = Counter(j["state"] for j in jobs)
    ids = {j["id"] for j in jobs}
    acknowledged = earlier + run.acknowledged
    lost = [j for j in acknowledged if j not in ids]
    runs = ledger_runs(procs.url, w.auditor)
    twice = [j for j in ids if runs[j] > 1]
    permit = mine.get(f"/permits/{w.permit_id}")
    down = (outage[0], outage[1] + GRACE_S) if len(outage) == 2 else (0.0, 0.0)
    bad = [e for t, e in run.errors if e[:1] == "5"
           and not (e.startswith("503") and down[0] <= t <= down[1])]
    ran = sum(1 for j in ids if runs[j] == 1)
    ok = (not lost and not twice and not bad and not open_
          and states.get("released", 0) == len(jobs) and permit["runs_used"] == ran)
    print(f"chaos jobs={len(jobs)} acknowledged={len(acknowledged)} "
          f"states={dict(states)} not_terminal={len(open_)} lost={len(lost)} "
          f"run_twice={len(twice)} permit_runs_used={permit['runs_used']} ran={ran}",
          flush=True)
    print(f"chaos errors={dict(Counter(e for _, e in run.errors))} "
          f"bad_5xx={len(bad)} pg_down_s={down[1] - GRACE_S - down[0]:.1f} "
          f"chaos_ok={str(ok).lower()}", flush=True)
    return ok


#: The read goal's "2 cores": on a machine with at least twice as many, the controller gets
#: this many of its own unless --controller-cpus says otherwise.
GOAL_CPUS = 2


def cpu_list(text: str) -> frozenset[int] | None:
    """``0``, ``0-1``, ``0,2-3``: as taskset(1) and cpuset lists write them; ``all``: none
    set apart (None)."""
    if text == "all":
        return None
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            first, _, last = part.partition("-")
            cpus.update(range(int(first), int(last or first) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a CPU list: {text!r} (e.g. 0-1)") from None
    if not cpus:
        raise argparse.ArgumentTypeError(f"not a CPU list: {text!r} (e.g. 0-1)")
    return frozenset(cpus)


def goal_cpus() -> frozenset[int] | None:
    usable = sorted(os.sched_getaffinity(0))
    return frozenset(usable[:GOAL_CPUS]) if len(usable) >= 2 * GOAL_CPUS else None


def cpu_text(cpus: frozenset[int] | set[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.api_load")
    ap.add_argument("--quick", action="store_true", help="15 s phases")
    ap.add_argument("--readers", type=int, default=20)
    ap.add_argument("--submitters", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--no-chaos", dest="chaos", action="store_false")
    ap.add_argument("--workers", type=int, help="sandbox serve --workers (its default)")
    ap.add_argument("--threads", type=int, help="sandbox serve --threads (its default)")
    ap.add_argument("--controller-cpus", type=cpu_list, metavar="LIST",
                    default=goal_cpus(),
                    help="run the controller on these CPUs (e.g. 0-1) and everything else "
                         "(PostgreSQL, the agents, the clients) on the others; 'all': "
                         f"share every CPU (default: {GOAL_CPUS} of the controller's own "
                         f"on a machine with {2 * GOAL_CPUS} or more, else all)")
    ap.add_argument("--keep-logs", action="store_true",
                    help="keep the processes' logs even when every check passed")
    args = ap.parse_args(argv)
    args.seconds = args.seconds or (15.0 if args.quick else 60.0)
    args.warmup = 3.0 if args.quick else 5.0
    args.drain = 90.0 if args.quick else 180.0
    ok = True
    split = ""
    if args.controller_cpus is not None:
        rest = os.sched_getaffinity(0) - args.controller_cpus
        if not args.controller_cpus < os.sched_getaffinity(0) or not rest:
            ap.error(f"--controller-cpus: must name some, not all, of this process's CPUs "
                     f"{sorted(os.sched_getaffinity(0))}")
        # Before PostgreSQL and the agents start: they inherit it, as do the clients.
        os.sched_setaffinity(0, rest)
        split = (f" controller_cpus={cpu_text(args.controller_cpus)} "
                 f"other_cpus={cpu_text(rest)}")
    with pgcluster.cluster("sandbox") as url, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        upgrade(url)
        admin_token = admin_token_for_server(url, work)
        serve_args = [*(["--workers", str(args.workers)] if args.workers else []),
                      *(["--threads", str(args.threads)] if args.threads else [])]
        procs = Processes(work, url, serve_args, args.controller_cpus)
        try:
            procs.start_server("gunicorn")
            w = make_world(procs, admin_token)
            print(f"readers={args.readers} submitters={args.submitters} "
                  f"seconds={args.seconds:g} database=postgresql agents=2x2 slots "
                  f"jobs=statistics serve_args={' '.join(serve_args) or 'defaults'}{split}",
                  flush=True)
            before = server_errors(work)
            first = phase(procs, w, args)
            prod = report("gunicorn", *first, os.getloadavg()[0])
            procs.stop("controller")
            procs.start_server("dev")
            second = phase(procs, w, args)
            dev = report("dev", *second, os.getloadavg()[0])
            procs.stop("controller")
            # Any 5xx to anyone (an agent's call too) outside the chaos phase is a defect.
            steady = server_errors(work) - before
            print(f"server_5xx={steady}", flush=True)
            ok = steady == 0
            if args.chaos:
                procs.start_server("gunicorn")
                ok = chaos_phase(procs, w, args, url,
                                 first[0].acknowledged + second[0].acknowledged) and ok
        finally:
            procs.stop_all()
            if not ok or args.keep_logs:  # keep the processes' logs to find out why
                kept = Path(tempfile.mkdtemp(prefix="api-load-logs-"))
                for log in work.glob("*.log"):
                    shutil.copy(log, kept / log.name)
                print(f"logs={kept}", flush=True)
    print(f"ratio={prod / dev:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
