"""Web UI render time against the JSON API on the same data. Prints ``name=value`` lines.

ledger_page_p95_ms     the regulator's ledger explorer, first page (50 entries, newest)
ledger_filtered_p95_ms the explorer filtered to one event kind (``run.finished``)
ledger_json_p95_ms     ``GET /api/v1/ledger/entries`` for the same 50 entries
usage_page_p95_ms      the provider's usage dashboard (charts over every job, latest 50 rows)
usage_older_p95_ms     the dashboard's page of the 50 jobs before those
usage_json_p95_ms      ``GET /api/v1/usage?limit=50`` (the same 50 jobs)
ratio                  the larger of the two page/JSON p95 ratios (goal: at most 1.5)

Server-side time only (Flask's test client: no network, no browser), on SQLite, 100
requests each in rounds of one request per figure (a page and its JSON endpoint see the
same machine load), with ``--entries`` ledger entries (default 1,000,000) and ``--jobs``
jobs (default 100,000, one a minute back from now, from ``--requesters`` requesters).
Pass smaller figures for a quick run (``--entries 100000 --jobs 10000``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, insert
from sqlalchemy.orm import Session

from authz import usage
from authz.models import Job
from authz.sealed import for_row
from ledger.entry import encode_entry, format_ts
from ledger.log import bulk_load
from ledger.merkle import leaf_hash
from ledger.store import entries_t, head_t, nodes_t
from sandbox import create_app, db
from sandbox.bootstrap import create_first_admin
from sandbox.migrate import upgrade

PASSWORD = "bench password of some length"
KINDS = ("job.submitted", "job.dispatched", "job.running", "run.finished", "request.created")
RUNS = 100


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[18] * 1000 if len(samples) > 1 else 0.0


def timed(calls: dict[str, Callable[[], Any]], runs: int = RUNS) -> dict[str, list[float]]:
    """Each call ``runs`` times, in rounds of one call each: on a shared machine the load
    changes from one second to the next, and a page timed in another second than its
    JSON endpoint would be compared with another machine."""
    for call in calls.values():
        call()  # warm caches (templates, statements)
    out: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(runs):
        for name, call in calls.items():
            t = time.perf_counter()
            r = call()
            out[name].append(time.perf_counter() - t)
            assert r.status_code == 200, (r.status_code, r.get_data(as_text=True)[-600:])
    return out


def entries(n: int) -> list[bytes]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    out, prev = [], "0" * 64
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        body = {"job_id": f"job_{i:016x}", "permit_id": "pmt_bench", "dataset_ids": ["ds_a"]}
        data = encode_entry(i, format_ts(start + timedelta(seconds=i)), kind, "pty_bench",
                            prev, body)
        out.append(data)
        prev = leaf_hash(data).hex()
    return out


def api(client: FlaskClient, token: str, method: str, path: str, body: Any = None) -> Any:
    r = client.open(f"/api/v1{path}", method=method, json=body,
                    headers={"Authorization": f"Bearer {token}"})
    assert r.status_code < 300, r.get_json()
    return r.get_json()


def web_client(app: Flask, email: str) -> FlaskClient:
    c = app.test_client()
    c.get("/sign-in")
    token = c.get_cookie("sandbox_csrf")
    assert token is not None
    r = c.post("/sign-in", data={"csrf_token": token.value, "email": email,
                                 "password": PASSWORD})
    assert r.status_code == 302
    return c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--requesters", type=int, default=10)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    url = f"sqlite:///{tmp / 'sandbox.db'}"
    upgrade(url)
    app = create_app({"DATABASE_URL": url, "LOG_KEY_FILE": str(tmp / "log.key"),
                      "START_CHECKPOINTER": False, "SCHEMA_CHECK_WAIT_S": 0.0})
    c = app.test_client()
    admin = create_first_admin(app, "operator").token
    provider = api(c, admin, "POST", "/parties", {"name": "H", "role": "provider",
                                                  "code": "H-BENCH"})
    requesters = [api(c, admin, "POST", "/parties", {"name": f"R{i}", "role": "requester"})
                  for i in range(max(1, args.requesters))]
    requester = requesters[0]
    regulator = api(c, admin, "POST", "/parties", {"name": "G", "role": "regulator"})
    agent = api(c, admin, "POST", "/agents", {"name": "a", "providers": [provider["id"]]})
    ds = api(c, provider["token"], "POST", "/datasets", {
        "code": "DS-BENCH", "name": "d", "category": "health", "summary": "s", "format": "csv",
        "openness": "conditional", "update_cycle": "monthly", "publish_date": "2026-01-01",
        "fields": [{"name": "age", "type": "integer", "sensitivity": "internal"}],
        "location": "d.csv"})
    api(c, agent["token"], "POST", f"/agent/datasets/{ds['id']}/schema", {"ok": True, "rows": 9})
    req = api(c, requester["token"], "POST", "/requests", {
        "purpose": "benchmark of the web pages", "use_kind": "statistics",
        "business_system": "bench", "items": [{"dataset_id": ds["id"], "columns": ["age"]}]})
    permit = api(c, provider["token"], "POST", f"/requests/{req['id']}/items/{ds['id']}/approve",
                 {"expires_at": (datetime.now(UTC) + timedelta(days=9)).isoformat(),
                  "max_runs": 9, "risk_assessment": "bench"})["permit_id"]
    emails = {}
    for name, party, role in (("auditor", regulator, "auditor"),
                              ("approver", provider, "approver")):
        emails[name] = f"{uuid.uuid4().hex[:8]}@bench.example"
        api(c, admin, "POST", f"/parties/{party['id']}/people",
            {"name": name, "email": emails[name], "roles": [role], "password": PASSWORD})
    services = db.services(app)
    t0 = time.perf_counter()
    with services.engine.begin() as conn:
        for table in (nodes_t, head_t, entries_t):
            conn.execute(delete(table))
        bulk_load(conn, entries(args.entries))
        now = datetime.now(UTC)
        rows = [{"id": f"job_{i:016x}", "permit_id": permit,
                 "requester_id": requesters[i % len(requesters)]["id"],
                 "provider_id": provider["id"], "dataset_ids": [ds["id"]], "kind": "script",
                 # A Core insert names each sealed value's row itself (authz/sealed.py).
                 "script": for_row(b"print(1)", "jobs", "script", f"job_{i:016x}"),
                 "script_sha256": "0" * 64, "state": "released",
                 "submitted_at": now - timedelta(minutes=i), "rows_read": 120}
                for i in range(args.jobs)]
        for i in range(0, len(rows), 10_000):
            conn.execute(insert(Job), rows[i:i + 10_000])
        # A Core bulk insert bypasses the ORM, which keeps the dashboard's rollup.
        usage.rebuild_rollup(Session(bind=conn))
    print(f"setup_s={time.perf_counter() - t0:.1f} entries={args.entries} jobs={args.jobs}")
    auditor, approver = web_client(app, emails["auditor"]), web_client(app, emails["approver"])
    size = args.entries
    hdr = {"Authorization": f"Bearer {regulator['token']}"}
    usage_hdr = {"Authorization": f"Bearer {provider['token']}"}
    older = c.get("/api/v1/usage?limit=50", headers=usage_hdr).get_json()["next_before"]
    calls: dict[str, Callable[[], Any]] = {
        "ledger_page": lambda: auditor.get("/regulator/ledger"),
        "ledger_filtered": lambda: auditor.get("/regulator/ledger?kind=run.finished"),
        "ledger_json": lambda: c.get(f"/api/v1/ledger/entries?start={size - 50}&end={size}",
                                     headers=hdr),
        "usage_page": lambda: approver.get("/provider/usage"),
        "usage_older": lambda: approver.get(f"/provider/usage?before={older}"),
        "usage_json": lambda: c.get("/api/v1/usage?limit=50", headers=usage_hdr),
    }
    if not older:
        del calls["usage_older"]
    figures = timed(calls)
    figures.setdefault("usage_older", [0.0, 0.0])
    for name, samples in figures.items():
        print(f"{name}_p95_ms={p95(samples):.1f}")
    ratio = max(p95(figures["ledger_page"]) / p95(figures["ledger_json"]),
                p95(figures["usage_page"]) / p95(figures["usage_json"]))
    db.dispose(app)
    print(f"ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
