"""Per request: an id, one structured log line, and the request metrics.

The log line holds the request id, method, route (the URL rule, never the path: paths
carry ids), status, duration, the caller's party or agent id when it authenticated, and
the client's address. Never a header value other than the request id, never a body,
never a query string.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Response, g, request

from sandbox import auth
from sandbox.metrics import METHODS, Metrics
from sandbox.release import AwaitingWitnesses

access_log = logging.getLogger("sandbox.access")
REQUEST_ID_HEADER = "X-Request-Id"
# What a caller's or proxy's request id may look like to be kept (and logged).
REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# Probes every few seconds would drown the log: at DEBUG while they succeed.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


def init_app(app: Flask, metrics: Metrics) -> None:
    @app.before_request
    def _start() -> None:
        g.request_started = time.perf_counter()
        offered = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = offered if REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex

    @app.after_request
    def _finish(response: Response) -> Response:
        started = g.get("request_started")
        duration = 0.0 if started is None else time.perf_counter() - started
        rid = g.get("request_id") or uuid.uuid4().hex
        response.headers[REQUEST_ID_HEADER] = rid
        route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
        method = request.method if request.method in METHODS else "OTHER"
        status = response.status_code
        metrics.requests.labels(method, route, str(status)).inc()
        metrics.latency.labels(method, route).observe(duration)
        if status == 401:
            metrics.auth_failures.inc()
        elif status == 429:
            metrics.rate_limited.labels(g.get("rate_limit") or "unknown").inc()
        elif status == 503 and response.is_json:
            body = response.get_json(silent=True)
            if isinstance(body, dict) and body.get("error") == AwaitingWitnesses.code:
                metrics.quorum_failures.inc()
        level = logging.DEBUG if route in QUIET_ROUTES and status < 400 else logging.INFO
        access_log.log(level, "request", extra={
            "request_id": rid, "method": method, "route": route, "status": status,
            "duration_ms": round(duration * 1000, 2),
            "caller": auth.caller_id(), "remote": request.remote_addr,
        })
        return response
