"""A real controller under `sandbox serve` (gunicorn) on loopback, for the ops tests.

The server runs as `python -m sandbox.cli serve` with this worktree on PYTHONPATH (the
`sandbox` console script may belong to another checkout), SQLite in a temporary folder,
JSON logs on standard error in a file the tests read.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sandbox import create_app, db
from sandbox.bootstrap import create_first_admin
from sandbox.migrate import upgrade

ROOT = Path(__file__).resolve().parents[2]
METRICS_TOKEN = "scrape-" + "s3cr3t" * 8
START_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Response:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


class Controller:
    """One `sandbox serve` process tree; ``stop`` ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, tmp: Path, workers: int = 2, threads: int = 4,
                 env: dict[str, str] | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.tmp, self.tls = tmp, tls
        self.db_dir = tmp / "db"
        self.db_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.db_dir / "sandbox.db"
        self.db_url = f"sqlite:///{self.db_path}"
        self.port = free_port()
        self.log_path = tmp / "controller.log"
        self.workers, self.threads = workers, threads
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
        self.env.update({
            "PYTHONPATH": str(ROOT), "SANDBOX_DATABASE_URL": self.db_url,
            "SANDBOX_INSTANCE": str(tmp / "instance"),
            "SANDBOX_LOG_KEY_FILE": str(tmp / "log.key"),
            "SANDBOX_METRICS_TOKEN": METRICS_TOKEN, "SANDBOX_GRACEFUL_TIMEOUT_S": "5",
            "SANDBOX_LEADER_RETRY_S": "0.5",
        })
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_id = self.admin_token = ""

    def prepare(self) -> Controller:
        """Migrate the database and create the first admin, as an operator would."""
        upgrade(self.db_url)
        app = create_app({"DATABASE_URL": self.db_url, "LOG_KEY_FILE": str(self.tmp / "log.key"),
                          "START_CHECKPOINTER": False})
        try:
            issued = create_first_admin(app, "operator")
        finally:
            db.dispose(app)
        self.admin_id, self.admin_token = issued.id, issued.token
        return self

    def start(self) -> Controller:
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox.cli", "serve", "--port", str(self.port),
             "--workers", str(self.workers), "--threads", str(self.threads)],
            env=self.env, stdout=log, stderr=log, cwd=self.tmp)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"controller exited: {self.log_path.read_text()[-3000:]}")
            try:
                if self.request("GET", "/healthz").status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("controller did not answer /healthz in time")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def connect(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        if self.tls is not None:
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                               context=self.tls)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                body: Any = None, conn: http.client.HTTPConnection | None = None) -> Response:
        own = conn is None
        c = conn or self.connect()
        try:
            data = None if body is None else json.dumps(body).encode()
            hdrs = dict(headers or {})
            if data is not None:
                hdrs["Content-Type"] = "application/json"
            c.request(method, path, body=data, headers=hdrs)
            r = c.getresponse()
            return Response(r.status, r.headers, r.read())
        finally:
            if own:
                c.close()

    def admin(self, method: str, path: str, body: Any = None,
              conn: http.client.HTTPConnection | None = None,
              headers: dict[str, str] | None = None) -> Response:
        hdrs = {"Authorization": f"Bearer {self.admin_token}", **(headers or {})}
        return self.request(method, path, hdrs, body, conn)

    def metrics(self) -> str:
        r = self.request("GET", "/metrics", {"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert r.status == 200, r.body
        return r.body.decode()

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_text().splitlines():
            if raw.strip():
                lines.append(json.loads(raw))
        return lines

    def wait_ready(self, timeout_s: float = 60.0) -> Response:
        deadline = time.monotonic() + timeout_s
        r = self.request("GET", "/readyz")
        while r.status != 200 and time.monotonic() < deadline:
            time.sleep(0.25)
            r = self.request("GET", "/readyz")
        return r


def metric_value(text: str, name: str, labels: str = "") -> float | None:
    """The value of one sample in Prometheus text (``labels`` as printed, or empty)."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == wanted:
            return float(value)
    return None
