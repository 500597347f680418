"""Alembic environment: the controller owns the schema of every package's tables."""

from __future__ import annotations

from alembic import context

import authz.web_sessions  # noqa: F401  (its table is part of AuthzBase.metadata)
from authz.models import AuthzBase
from ledger.db import make_engine
from ledger.store import LedgerBase

config = context.config
target_metadata = [LedgerBase.metadata, AuthzBase.metadata]


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
