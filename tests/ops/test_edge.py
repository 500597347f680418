"""Edge behaviour in process: proxies, HSTS, request ids, rate limits, commit counting."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text

from ledger.db import make_engine
from sandbox import create_app, db
from sandbox.bootstrap import create_first_admin
from sandbox.edge import SlidingWindow
from sandbox.leader import FileLeadership, PostgresLeadership
from sandbox.metrics import Metrics


def make_app(database_url: str, tmp_path: Path, **over: Any) -> Flask:
    return create_app({"TESTING": True, "DATABASE_URL": database_url,
                       "LOG_KEY_FILE": str(tmp_path / "log.key"), "START_CHECKPOINTER": False,
                       "SCHEMA_CHECK_WAIT_S": 0.0, "AGENT_POLL_WAIT_S": 0.0, **over})


@pytest.fixture
def proxied(database_url: str, tmp_path: Path) -> Iterator[Flask]:
    app = make_app(database_url, tmp_path, PROXY_HOPS=1, AUTH_FAILURES_PER_ADDRESS_PER_MIN=2,
                   TOKEN_REQUESTS_PER_MIN=3)
    yield app
    db.dispose(app)


def test_hsts_follows_the_trusted_proxy_scheme(proxied: Flask, app: Flask) -> None:
    https = {"X-Forwarded-Proto": "https"}
    r = proxied.test_client().get("/healthz", headers=https)
    assert r.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert "Strict-Transport-Security" not in proxied.test_client().get("/healthz").headers
    # Without proxy hops configured, a client's own X-Forwarded-Proto is not believed.
    assert "Strict-Transport-Security" not in app.test_client().get("/healthz",
                                                                    headers=https).headers


def test_failures_are_limited_per_forwarded_client(proxied: Flask) -> None:
    c = proxied.test_client()

    def me(client_address: str, token: str) -> Any:
        return c.get("/api/v1/me", headers={"X-Forwarded-For": client_address,
                                            "Authorization": f"Bearer {token}"})

    assert me("192.0.2.1", "pty_a.x").status_code == 401
    assert me("192.0.2.1", "pty_b.x").status_code == 401
    r = me("192.0.2.1", "pty_c.x")
    assert r.status_code == 429 and r.json == {
        "error": "rate_limited",
        "message": "too many failed authentications from this address; retry later"}
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert me("192.0.2.2", "pty_d.x").status_code == 401  # another client behind the proxy
    # Probes from the refused address still get their answer.
    probe = c.get("/healthz", headers={"X-Forwarded-For": "192.0.2.1"})
    assert probe.status_code == 200


def test_per_token_request_rate(proxied: Flask) -> None:
    issued = create_first_admin(proxied, "operator")
    c = proxied.test_client()
    h = {"Authorization": f"Bearer {issued.token}"}
    assert [c.get("/api/v1/me", headers=h).status_code for _ in range(3)] == [200] * 3
    r = c.get("/api/v1/me", headers=h)
    assert r.status_code == 429 and "with this token" in (r.json or {})["message"]
    assert r.headers["Retry-After"]


def test_request_ids_are_kept_when_well_formed(app: Flask) -> None:
    c = app.test_client()
    assert c.get("/healthz", headers={"X-Request-Id": "abc-123"}).headers[
        "X-Request-Id"] == "abc-123"
    for bad in ("", "x" * 129, "a b", "é", "-leading-dash"):
        got = c.get("/healthz", headers={"X-Request-Id": bad}).headers["X-Request-Id"]
        assert got != bad and len(got) == 32


def test_metrics_are_off_without_a_scrape_token(app: Flask) -> None:
    r = app.test_client().get("/metrics")
    body = r.json or {}
    assert r.status_code == 403 and body["error"] == "forbidden"
    assert "SANDBOX_METRICS_TOKEN" in body["message"]


def test_ledger_appends_are_counted_when_they_commit(app: Flask) -> None:
    svc = db.services(app)
    m: Metrics = app.extensions["sandbox_metrics"]
    with svc.sessions() as s:
        svc.log.append(s, "job.requeued", "system", {"job_id": "job_x", "reason": "test"})
        s.rollback()
        svc.log.append(s, "job.requeued", "system", {"job_id": "job_x", "reason": "test"})
        svc.log.append(s, "party.created", "system", {"party_id": "pty_x"})
        s.commit()
    assert m.registry is not None
    assert m.registry.get_sample_value("sandbox_jobs_requeued_total") == 1
    assert m.registry.get_sample_value("sandbox_ledger_appends_total",
                                       {"kind": "party.created"}) == 1


def test_sliding_window_limits_and_stays_bounded() -> None:
    w = SlidingWindow(limit=2, window_s=60, max_keys=3)
    w.hit("a")
    assert w.retry_after("a") == 0
    w.hit("a")
    assert 59 < w.retry_after("a") <= 60
    for k in "bcdef":
        w.hit(k)
    assert len(w._events) <= 3


def test_file_leadership_has_one_holder(tmp_path: Path) -> None:
    seen: list[tuple[str, bool]] = []
    a = FileLeadership(tmp_path / "l", 0.1, lambda x: seen.append(("a", x)))
    b = FileLeadership(tmp_path / "l", 0.1, lambda x: seen.append(("b", x)))
    assert a.holds() and not b.holds()
    a.release()
    b._next_try = 0.0
    assert b.holds() and seen == [("a", True), ("a", False), ("b", True)]
    b.release()


@pytest.mark.postgres
def test_postgres_leadership_has_one_holder(pg_url: str) -> None:
    e1, e2 = make_engine(pg_url), make_engine(pg_url)
    try:
        a = PostgresLeadership(e1, 0.1, lambda _: None)
        b = PostgresLeadership(e2, 0.1, lambda _: None)
        assert a.holds() and not b.holds()
        a.release()
        b._next = 0.0
        assert b.holds()
        with e1.connect() as c:
            held = c.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                  "AND granted")).scalar()
        assert held == 1
        b.release()
    finally:
        e1.dispose()
        e2.dispose()


class _Answering(BaseHTTPRequestHandler):
    """A witness's monitoring endpoint with no checkpoint for this log: 404, reachable."""

    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_readiness_needs_a_quorum_of_answering_witnesses(database_url: str,
                                                        tmp_path: Path) -> None:
    live = ThreadingHTTPServer(("127.0.0.1", 0), _Answering)
    threading.Thread(target=live.serve_forever, daemon=True).start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens once this socket is closed
    witnesses = [{"url": f"http://127.0.0.1:{live.server_address[1]}", "vkey": "w+1+AA"},
                 {"url": f"http://127.0.0.1:{closed}", "vkey": "w+2+AA"}]
    apps = [make_app(database_url, tmp_path, WITNESSES=witnesses, WITNESS_QUORUM=k)
            for k in (1, 2)]
    try:
        one, two = (a.test_client().get("/readyz") for a in apps)
        assert one.status_code == 200 and (one.json or {})["checks"]["witnesses"] == "ok"
        body = two.json or {}
        assert two.status_code == 503 and body["field"] == "witnesses"
        assert body["rule"] == "at least 2 of 2 witnesses must answer"
        m: Metrics = apps[1].extensions["sandbox_metrics"]
        assert m.registry is not None
        assert m.registry.get_sample_value("sandbox_witness_failures_total",
                                           {"witness": "1"}) == 1
        assert m.registry.get_sample_value("sandbox_witness_failures_total",
                                           {"witness": "0"}) == 0
    finally:
        for a in apps:
            db.dispose(a)
        live.shutdown()
        live.server_close()
