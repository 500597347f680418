"""Liveness, readiness and metrics, for the orchestrator and the monitoring system.

``/healthz`` and ``/readyz`` need no token and say nothing but which check failed.
``/metrics`` shows the volume of work, so it is off unless ``SANDBOX_METRICS_TOKEN`` is
set, and then needs that token (a party's token, even an admin's, is not accepted: the
scraper gets a credential that can do nothing else).
"""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from compute.errors import Forbidden, Unauthenticated
from sandbox import health
from sandbox.metrics import Metrics

bp = Blueprint("ops", __name__)


def metrics() -> Metrics:
    found: Metrics = current_app.extensions["sandbox_metrics"]
    return found


@bp.get("/healthz")
def healthz() -> dict[str, Any]:
    # The process answers: no database, no token. Restart it if this fails.
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    cfg = current_app.config
    r = health.check(current_app.extensions["sandbox_probe"],
                     schema=current_app.extensions["sandbox_schema"],
                     max_age_s=float(cfg["READY_CHECKPOINT_MAX_AGE_S"]),
                     witnesses=cfg["WITNESSES"], quorum=int(cfg["WITNESS_QUORUM"]),
                     origin=cfg["LOG_ORIGIN"],
                     witness_timeout_s=float(cfg["READY_WITNESS_TIMEOUT_S"]),
                     on_witness_failure=lambda i: metrics().witness_failures.labels(
                         str(i)).inc())
    if r.failed is None:
        return jsonify({"status": "ready", "checks": r.checks}), 200
    return jsonify({"error": "not_ready", "message": f"{r.failed}: {r.rule}",
                    "field": r.failed, "rule": r.rule, "checks": r.checks}), 503


@bp.get("/metrics")
def scrape() -> Response:
    expected = current_app.config["METRICS_TOKEN"]
    if not expected:
        raise Forbidden("metrics are off: set SANDBOX_METRICS_TOKEN")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), str(expected).encode()):
        raise Unauthenticated("invalid metrics token")
    return Response(generate_latest(metrics().scrape_registry()), mimetype=None,
                    headers={"Content-Type": CONTENT_TYPE_LATEST})
