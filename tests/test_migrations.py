"""The Alembic migrations produce exactly the schema the models declare."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import authz.web_sessions  # noqa: F401  (its table is part of AuthzBase.metadata)
from authz.models import AuthzBase
from ledger.db import make_engine
from ledger.store import LedgerBase
from sandbox.migrate import downgrade, upgrade


def _table(item: Any) -> str | None:
    if isinstance(item, list):  # [("modify_nullable", schema, table, column, ...)]
        return str(item[0][2])
    if item[0] in ("add_column", "remove_column"):
        return str(item[2])
    obj = item[1]
    table = getattr(obj, "table", None)
    name = getattr(table if table is not None else obj, "name", None)
    return name if isinstance(name, str) else None


def test_migrated_schema_matches_models(database_url: str) -> None:
    engine = make_engine(database_url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff: list[Any] = []
        for md in (LedgerBase.metadata, AuthzBase.metadata):
            # Each package's metadata sees the other's tables (and their indexes) as extra.
            diff += [d for d in compare_metadata(ctx, md) if _table(d) in md.tables]
    engine.dispose()
    assert diff == []


def test_psi_messages_in_flight_move_into_chunks_and_back(tmp_path: Path) -> None:
    """0022_psi_chunks: a running PSI job's messages (base64 in a JSON column) become one
    chunk each, and the downgrade puts them back; nothing in flight is lost."""
    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    upgrade(url, "0020_ui_ratio")
    sent = {"request": b"\x02" * 40, "ring.0.1": bytes(range(256))}
    con = sqlite3.connect(path)
    con.execute("PRAGMA foreign_keys=OFF")
    con.execute("INSERT INTO joint_jobs (id, permit_id, requester_id, spec, public_context, "
                "context_fingerprint, min_providers, state, submitted_at, mask_keys, "
                "psi_messages) VALUES ('jnt_1', 'pmt_1', 'pty_r', x'00', x'00', ?, 2, "
                "'running', '2026-01-01 00:00:00.000000+00:00', '[]', ?)",
                ("0" * 64, json.dumps({n: base64.b64encode(d).decode()
                                       for n, d in sent.items()})))
    con.commit()
    con.close()
    upgrade(url, "0022_psi_chunks")
    con = sqlite3.connect(path)
    rows = con.execute("SELECT joint_id, name, seq, chunks, data FROM psi_chunks "
                       "ORDER BY name").fetchall()
    assert rows == [("jnt_1", n, 0, 1, d) for n, d in sorted(sent.items())]
    con.close()
    downgrade(url, "0020_ui_ratio")
    con = sqlite3.connect(path)
    (back,) = con.execute("SELECT psi_messages FROM joint_jobs").fetchone()
    con.close()
    assert {n: base64.b64decode(d) for n, d in json.loads(back).items()} == sent
