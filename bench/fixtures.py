"""What several benchmarks set up the same way: a controller in the benchmark's own
process, the first admin of a database another process serves, and a hospital's
episodes table with a statistics permit on it.

Kept in one place so the benchmarks measure the same setup; each benchmark keeps what
it varies (rows, slots, runtimes) in its own module.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sandbox import create_app, db
from sandbox.bootstrap import create_first_admin
from sandbox.client import Client
from sandbox.demo_data import FIELDS
from sandbox.embedded import EmbeddedStack
from sandbox.migrate import upgrade


def embedded_controller(work: Path, **config: Any) -> tuple[EmbeddedStack, str]:
    """A controller on a new SQLite database in ``work``, serving from this process:
    (the started stack, the first admin's token). ``config``: settings beyond the
    database and the log key (e.g. ``AGENT_POLL_WAIT_S``)."""
    url = f"sqlite:///{work / 'sandbox.db'}"
    upgrade(url)
    app = create_app({"DATABASE_URL": url, "LOG_KEY_FILE": str(work / "log.key"), **config})
    token = create_first_admin(app, "operator").token
    return EmbeddedStack(app).start(), token


def admin_token_for_server(url: str, work: Path) -> str:
    """The first admin's token, written into the migrated database at ``url`` that a
    controller in another process will serve: the app made here starts no checkpointer
    and lets its connections go."""
    app = create_app({"DATABASE_URL": url, "LOG_KEY_FILE": str(work / "log.key"),
                      "START_CHECKPOINTER": False})
    try:
        return create_first_admin(app, "operator").token
    finally:
        db.dispose(app)


def statistics_permit(provider: Client, requester: Client, *, code: str, location: str,
                      purpose: str, columns: Sequence[str], max_runs: int = 1000
                      ) -> tuple[str, str]:
    """Register the provider's episodes table at ``location`` as ``code`` and grant the
    requester a day's statistics permit on ``columns`` (minimum count 10, released
    automatically); (permit id, dataset id)."""
    ds = provider.post("/datasets", {
        "code": code, "name": "Episodes", "category": "health", "summary": "bench",
        "format": "csv", "openness": "conditional", "update_cycle": "monthly",
        "publish_date": "2026-10-01", "fields": FIELDS, "location": location})
    assert ds["status"] == "active", ds
    req = requester.post("/requests", {
        "purpose": purpose, "use_kind": "statistics", "business_system": "bench",
        "items": [{"dataset_id": ds["id"], "columns": list(columns)}]})
    approved = provider.post(f"/requests/{req['id']}/items/{ds['id']}/approve", {
        "expires_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        "max_runs": max_runs, "min_cell_count": 10, "risk_assessment": "bench",
        "script_release": "automatic"})
    return str(approved["permit_id"]), str(ds["id"])
