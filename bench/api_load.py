"""Read throughput of the production server against the development server.

One SQLite database (migrated, one admin, a few hundred ledger entries), served in turn by

- gunicorn: ``python -m sandbox.cli serve`` (2 workers × 8 threads, keep-alive, JSON logs);
- dev:      werkzeug's ``run_simple(..., threaded=True)`` on ``create_app()``,

each in its own process on loopback. N concurrent readers (threads here, one keep-alive
connection each) send a fixed number of authenticated reads, alternating ``GET /me`` and
``GET /ledger/entries?start=0&end=20``, after a warm-up. Prints reads/s and latency
percentiles per server, and last ``ratio=<gunicorn reads/s over dev reads/s>``.
Usage: ``.venv/bin/python -m bench.api_load [READERS] [REQUESTS]`` (default 16 4000).
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sandbox import create_app, db
from sandbox.bootstrap import create_first_admin
from sandbox.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
PATHS = ("/api/v1/me", "/api/v1/ledger/entries?start=0&end=20")
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


def prepare(work: Path) -> tuple[dict[str, str], str]:
    url = f"sqlite:///{work / 'sandbox.db'}"
    upgrade(url)
    app = create_app({"DATABASE_URL": url, "LOG_KEY_FILE": str(work / "log.key"),
                      "START_CHECKPOINTER": False})
    try:
        token = create_first_admin(app, "operator").token
        svc = db.services(app)
        with svc.sessions() as s:
            for i in range(300):
                svc.log.append(s, "bench.read", "system", {"i": i})
            s.commit()
    finally:
        db.dispose(app)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env.update({"PYTHONPATH": str(ROOT), "SANDBOX_DATABASE_URL": url,
                "SANDBOX_INSTANCE": str(work / "instance"),
                "SANDBOX_LOG_KEY_FILE": str(work / "log.key")})
    return env, token


def start(args: list[str], env: dict[str, str], log: Path, port: int
          ) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen([sys.executable, *args], env=env, stdout=out, stderr=out)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                c.close()
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"server did not start; see {log}")


def load(port: int, token: str, readers: int, requests: int) -> tuple[float, list[float]]:
    per = requests // readers
    latencies: list[list[float]] = [[] for _ in range(readers)]
    errors: list[str] = []
    gate = threading.Barrier(readers + 1)

    def reader(i: int) -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        h = {"Authorization": f"Bearer {token}"}
        gate.wait()
        for n in range(per):
            t0 = time.perf_counter()
            c.request("GET", PATHS[(i + n) % len(PATHS)], headers=h)
            r = c.getresponse()
            r.read()
            latencies[i].append(time.perf_counter() - t0)
            if r.status != 200:
                errors.append(str(r.status))
        c.close()

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(readers)]
    for t in threads:
        t.start()
    gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{len(errors)} reads failed, e.g. {errors[:3]}")
    return per * readers / elapsed, sorted(x for lat in latencies for x in lat)


def pct(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


def run(name: str, args: list[str], env: dict[str, str], work: Path, token: str,
        readers: int, requests: int) -> float:
    port = free_port()
    proc = start([*args, str(port)] if name == "dev" else [*args, "--port", str(port)],
                 env, work / f"{name}.log", port)
    try:
        load(port, token, readers, max(readers, requests // 10))  # warm-up
        rate, lat = load(port, token, readers, requests)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    print(f"server={name} readers={readers} reads={len(lat)} reads_per_s={rate:.0f} "
          f"p50_ms={pct(lat, 0.50):.1f} p95_ms={pct(lat, 0.95):.1f} "
          f"p99_ms={pct(lat, 0.99):.1f} mean_ms={statistics.fmean(lat) * 1000:.1f}",
          flush=True)
    return rate


def main(readers: int = 16, requests: int = 4000) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env, token = prepare(work)
        prod = run("gunicorn", ["-m", "sandbox.cli", "serve", "--workers", "2",
                                "--threads", "8"], env, work, token, readers, requests)
        dev = run("dev", ["-c", DEV_SERVER], env, work, token, readers, requests)
    print(f"ratio={prod / dev:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*(int(a) for a in sys.argv[1:3])))
