"""The Alembic migrations produce exactly the schema the models declare."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import authz.web_sessions  # noqa: F401  (its table is part of AuthzBase.metadata)
from authz.models import AuthzBase
from ledger.db import make_engine
from ledger.store import LedgerBase


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
