"""The agent's own metrics and readiness, on a local port when asked.

``sandbox agent --metrics-port N`` (or ``SANDBOX_AGENT_METRICS_PORT``) serves, on
``--metrics-host`` (loopback by default: the figures say how busy a provider's domain is):

- ``GET /metrics``: Prometheus text. Slots configured and busy, tasks taken, runs by the
  state they ended in, output-check decisions, schema checks, and the runner image's age.
- ``GET /readyz``: 200 ``{"status": "ready"}``, or 503 ``{"error": "not_ready", "field":
  "runner_image", "rule"}`` while the runner image is older than the allowed age
  (``SANDBOX_AGENT_MAX_IMAGE_AGE_DAYS``): it lacks the security updates published since;
  rebuild it (``python -m containers.image refresh``). Jobs still run: the age is a
  patching signal, not an isolation failure.
- ``GET /healthz``: 200 while the process serves.

Nothing here holds a value from a provider's data: counts of runs and decisions only.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from authz.wire import RunReport

log = logging.getLogger("data-sandbox.agent")
DAY_S = 86_400.0


class AgentMetrics:
    """One agent's metric objects, in a registry of its own."""

    def __init__(self, slots: int = 1, max_image_age_days: float = 30.0,
                 image_age_s: Callable[[], float | None] | None = None) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.max_image_age_s = max_image_age_days * DAY_S
        self._image_age_s = image_age_s or (lambda: None)
        Gauge("sandbox_agent_slots", "Slots configured (jobs run side by side)",
              registry=reg).set(slots)
        self.slots_busy = Gauge("sandbox_agent_slots_busy",
                                "Slots working on a task now", registry=reg)
        self.tasks = Counter("sandbox_agent_tasks", "Tasks taken from the controller, by kind",
                             ["kind"], registry=reg)
        self.runs = Counter("sandbox_agent_runs",
                            "Runs finished and reported, by the state they ended in",
                            ["state"], registry=reg)
        self.verdicts = Counter("sandbox_agent_output_checks",
                                "Outputs checked, by decision", ["decision"], registry=reg)
        self.schema_checks = Counter("sandbox_agent_schema_checks",
                                     "Dataset files checked against their declared fields",
                                     ["ok"], registry=reg)
        age = Gauge("sandbox_agent_runner_image_age_seconds",
                    "Time since the runner image was built (with its security updates)",
                    registry=reg)
        age.set_function(lambda: self.image_age_s() or 0.0)
        Gauge("sandbox_agent_runner_image_max_age_seconds",
              "Allowed age of the runner image", registry=reg).set(self.max_image_age_s)

    def image_age_s(self) -> float | None:
        try:
            return self._image_age_s()
        except Exception:  # the engine away: no figure, never a failed scrape
            return None

    @contextmanager
    def busy(self, kind: str) -> Iterator[None]:
        self.tasks.labels(kind).inc()
        self.slots_busy.inc()
        try:
            yield
        finally:
            self.slots_busy.dec()

    def observe_run(self, report: RunReport) -> None:
        self.runs.labels(str(report.state)).inc()
        for output in report.outputs:
            self.verdicts.labels(str(output.decision)).inc()

    def observe_schema_check(self, ok: bool) -> None:
        self.schema_checks.labels("true" if ok else "false").inc()

    def image_verdict(self) -> str | None:
        """Why the runner image is not fit (too old), or None."""
        age = self.image_age_s()
        if age is not None and age > self.max_image_age_s:
            return (f"the runner image must be younger than "
                    f"{self.max_image_age_s / DAY_S:g} days (rebuild it: "
                    f"python -m containers.image refresh)")
        return None

    def banner(self) -> None:
        """Say at start how old the runner image is, and warn when it is too old."""
        age = self.image_age_s()
        if age is None:
            return
        if (why := self.image_verdict()) is not None:
            log.warning("runner image is %.1f days old: %s", age / DAY_S, why)
        else:
            log.info("runner image is %.1f days old", age / DAY_S)


def _handler(metrics: AgentMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "data-sandbox-agent"
        sys_version = ""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._json(200, {"status": "ok"})
            elif path == "/readyz":
                why = metrics.image_verdict()
                if why is None:
                    self._json(200, {"status": "ready", "checks": {"runner_image": "ok"}})
                else:
                    self._json(503, {"error": "not_ready", "message": "agent not ready",
                                     "field": "runner_image", "rule": why,
                                     "checks": {"runner_image": "failed"}})
            else:
                self._json(404, {"error": "not_found", "message": "no such endpoint"})

        def _json(self, status: int, body: dict[str, object]) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every few seconds would drown the agent's log

    return Handler


def serve_metrics(metrics: AgentMetrics, host: str, port: int) -> ThreadingHTTPServer:
    """Start the endpoint in a daemon thread; the caller may ``shutdown()`` it."""
    server = ThreadingHTTPServer((host, port), _handler(metrics))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="agent-metrics", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics", host, server.server_address[1])
    return server
