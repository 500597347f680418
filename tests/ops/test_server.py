"""The controller as deployed: `sandbox serve` (gunicorn, several workers) on loopback."""

from __future__ import annotations

import fcntl
import os
import re
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sandbox.leader import LOCK_SUFFIX
from tests.ops.harness import METRICS_TOKEN, Controller, metric_value

pytestmark = pytest.mark.slow

WORKERS = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    c = Controller(tmp_path_factory.mktemp("ops"), workers=WORKERS).prepare().start()
    yield c
    c.stop()


def test_every_answer_carries_the_security_headers_and_no_server_version(
        server: Controller) -> None:
    answers = [server.request("GET", "/healthz"),
               server.request("GET", "/api/v1/me"),  # 401
               server.request("GET", "/nowhere"),  # 404
               server.admin("GET", "/api/v1/me")]
    assert [r.status for r in answers] == [200, 401, 404, 200]
    for r in answers:
        assert r.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert r.headers["Cache-Control"] == "no-store"
        assert r.headers["X-Frame-Options"] == "DENY"
        servers = r.headers.get_all("Server") or []
        assert len(servers) == 1 and not re.search(r"[0-9]", servers[0])
        assert not re.search(r"gunicorn|werkzeug|python", servers[0], re.IGNORECASE)
        # Plain HTTP, no proxy hops configured: no HSTS (it would be ignored, or wrong).
        assert "Strict-Transport-Security" not in r.headers
        assert r.headers["Content-Type"].startswith("application/json")


def test_keep_alive_serves_two_requests_on_one_connection(server: Controller) -> None:
    conn = server.connect()
    try:
        first = server.request("GET", "/healthz", conn=conn)
        sock = conn.sock
        assert sock is not None
        second = server.admin("GET", "/api/v1/me", conn=conn)
        assert conn.sock is sock, "the connection was closed after the first request"
        assert first.status == 200 and second.status == 200
        assert first.headers["Connection"].lower() == "keep-alive"
    finally:
        conn.close()


def test_healthz_needs_nothing(server: Controller) -> None:
    r = server.request("GET", "/healthz")
    assert r.status == 200 and r.json() == {"status": "ok"}


def test_readyz_reports_each_check(server: Controller) -> None:
    r = server.wait_ready()
    assert r.status == 200, r.body
    assert r.json() == {"status": "ready", "checks": {
        "database": "ok", "schema": "ok", "checkpoint": "ok",
        "witnesses": "not configured"}}


def test_metrics_need_the_scrape_token(server: Controller) -> None:
    assert server.request("GET", "/metrics").status == 401
    r = server.request("GET", "/metrics", {"Authorization": f"Bearer {server.admin_token}"})
    assert r.status == 401, "a party's token, even an admin's, does not read the metrics"
    r = server.request("GET", "/metrics", {"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")


def test_metrics_label_routes_by_rule_and_read_state_from_the_database(
        server: Controller) -> None:
    missing = "job_0123456789abcdef"
    assert server.admin("GET", f"/api/v1/jobs/{missing}").status in (403, 404)
    assert server.admin("GET", "/api/v1/me").status == 200
    text = server.metrics()
    assert 'route="/api/v1/jobs/<job_id>"' in text
    assert missing not in text, "a raw path (with its id) reached a label"
    assert (metric_value(text, "sandbox_http_requests_total",
                         'method="GET",route="/api/v1/me",status="200"') or 0) >= 1
    assert metric_value(text, "sandbox_jobs", 'state="queued"') == 0
    assert metric_value(text, "sandbox_queue_depth") == 0
    assert metric_value(text, "sandbox_database_up") == 1
    size = metric_value(text, "sandbox_ledger_size")
    assert size is not None and size >= 1  # the first admin is on the ledger
    for name in ("sandbox_http_request_duration_seconds_bucket", "sandbox_jobs_requeued_total",
                 "sandbox_ledger_checkpoint_age_seconds", "sandbox_jobs_lease_expired",
                 "sandbox_auth_failures_total", 'sandbox_rate_limited_total{limit="address"}'):
        assert name in text, name


def test_one_checkpointer_signs_however_many_workers(server: Controller) -> None:
    r = server.admin("POST", "/api/v1/parties", {"name": "Hospital", "role": "provider",
                                                 "code": "H-OPS"})
    assert r.status == 201, r.body
    deadline = time.monotonic() + 60
    text = server.metrics()
    while time.monotonic() < deadline and (
            metric_value(text, "sandbox_ledger_unsigned_entries") != 0
            or metric_value(text, "sandbox_checkpointer_leader") != 1):
        time.sleep(0.25)
        text = server.metrics()
    # The leader gauge sums over the live workers: exactly one of them signs.
    assert metric_value(text, "sandbox_checkpointer_leader") == 1
    assert metric_value(text, "sandbox_ledger_unsigned_entries") == 0
    leaders = {line["pid"] for line in server.log_lines()
               if line.get("msg") == "checkpointer leading"}
    booted = {line["pid"] for line in server.log_lines()
              if str(line.get("msg", "")).startswith("Booting worker")}
    assert len(booted) == WORKERS and len(leaders) == 1 and leaders <= booted
    # And the lock itself is held, by a process other than this one.
    fd = os.open(str(server.db_path) + LOCK_SUFFIX, os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_request_log_lines_are_json_with_the_request_id_and_no_token(
        server: Controller) -> None:
    r = server.admin("GET", "/api/v1/me", headers={"X-Request-Id": "ops-test.42"})
    assert r.headers["X-Request-Id"] == "ops-test.42"
    bad = server.request("GET", "/api/v1/me", {"X-Request-Id": "no spaces\tallowed",
                                               "Authorization": "Bearer pty_nobody.wrong1"})
    made = bad.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    deadline = time.monotonic() + 30
    lines = server.log_lines()
    while time.monotonic() < deadline and not any(
            x.get("request_id") == made for x in lines):
        time.sleep(0.2)
        lines = server.log_lines()
    mine = [x for x in lines if x.get("request_id") == "ops-test.42"]
    assert len(mine) == 1
    assert mine[0]["logger"] == "sandbox.access"
    assert mine[0]["route"] == "/api/v1/me" and mine[0]["status"] == 200
    assert mine[0]["caller"] == server.admin_id and mine[0]["method"] == "GET"
    assert isinstance(mine[0]["duration_ms"], float | int)
    theirs = [x for x in lines if x.get("request_id") == made]
    assert len(theirs) == 1 and theirs[0]["status"] == 401 and theirs[0]["caller"] is None
    raw = server.log_path.read_text()
    secret = server.admin_token.partition(".")[2]
    assert secret not in raw and "wrong1" not in raw and METRICS_TOKEN not in raw
    assert "gunicorn.access" not in {x["logger"] for x in lines}


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Controller]:
    c = Controller(tmp_path, workers=2).prepare()
    yield c
    c.stop()


def test_readyz_fails_naming_the_database_once_it_is_gone(fresh: Controller) -> None:
    fresh.start()
    assert fresh.wait_ready().status == 200
    # Moved away in one step, not removed file by file: the running server's pooled
    # connections keep writing (the checkpointer), and rmtree would race them.
    fresh.db_dir.rename(fresh.db_dir.with_name("db-gone"))
    r = fresh.request("GET", "/readyz")
    assert r.status == 503
    body = r.json()
    assert body["error"] == "not_ready" and body["field"] == "database"
    assert body["checks"]["database"] == "failed"
    assert set(body) == {"error", "message", "field", "rule", "checks"}
    # Liveness does not look at the database: the process is fine, only not ready.
    assert fresh.request("GET", "/healthz").status == 200


def test_readyz_fails_naming_the_schema_before_init_db(tmp_path: Path) -> None:
    c = Controller(tmp_path, workers=1)
    try:
        c.start()
        r = c.request("GET", "/readyz")
        assert r.status == 503 and r.json()["field"] == "schema"
        assert "sandbox init-db" in r.json()["rule"]
    finally:
        c.stop()


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "tls.crt", tmp / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_from_the_settings_with_hsts(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    c = Controller(tmp_path, workers=1, tls=ctx, env={"SANDBOX_TLS_CERT_FILE": str(cert),
                                                      "SANDBOX_TLS_KEY_FILE": str(key)})
    try:
        r = c.prepare().start().request("GET", "/healthz")
        assert r.status == 200
        assert r.headers["Strict-Transport-Security"] == "max-age=31536000"
    finally:
        c.stop()


def test_workers_die_with_a_killed_master_and_the_port_is_free_again(
        fresh: Controller) -> None:
    """SIGKILL of the master leaves no worker serving on: a restart gets the port."""
    fresh.start()
    assert fresh.wait_ready().status == 200
    assert fresh.proc is not None
    master = fresh.proc.pid
    workers = [int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text()
               .split()]
    assert workers
    fresh.proc.kill()
    fresh.proc.wait()
    deadline = time.monotonic() + 30  # generous: a loaded machine, never a timing claim
    while any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in workers):
        assert time.monotonic() < deadline, "a worker outlived its killed master"
        time.sleep(0.1)
    fresh.start()
    assert fresh.wait_ready().status == 200


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"
