"""A service's row lock never blocks a foreign-key check on the locked row.

PostgreSQL checks a row's foreign keys again when a transaction updates a row it already
inserted or updated, taking ``FOR KEY SHARE`` on the referenced row even when no key
changes. Plain ``FOR UPDATE`` conflicts with that: a dispatch holding its permit and
waiting for the ledger head, against a job's report holding the ledger head and updating
its job a second time, deadlocked (found by ``bench.api_load``: 500s to agents). Services
lock with :data:`authz.context.ROW_LOCK` (``FOR NO KEY UPDATE``), which does not.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text, update

from authz.context import ROW_LOCK
from authz.models import Job, Permit
from sandbox import db
from tests.api.helpers import permit_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_locked_permit_does_not_block_its_jobs_key_checks(
        app: Flask, make_party: Any, make_agent: Any) -> None:
    provider, requester = make_party("provider"), make_party("requester")
    agent = make_agent(provider)
    ds, permit_id = permit_for(requester, provider, agent)
    job_id = requester.post("/jobs", {"permit_id": permit_id, "dataset_ids": [ds["id"]],
                                      "script": "print(1)\n"}).json["id"]
    svc = db.services(app)
    holder, other = svc.sessions(), svc.sessions()
    try:
        assert holder.get(Permit, permit_id, with_for_update=ROW_LOCK) is not None
        # Waiting would be the bug: fail fast instead of hanging the suite.
        other.execute(text("SET LOCAL lock_timeout = '5s'"))
        for code in (1, 2):  # the second update re-checks the job's keys
            other.execute(update(Job).where(Job.id == job_id).values(exit_code=code))
        other.commit()
    finally:
        other.rollback()
        holder.rollback()
        holder.close()
        other.close()


def test_services_lock_rows_only_with_the_shared_row_lock() -> None:
    """No plain ``FOR UPDATE`` in the controller's domain: every ``with_for_update`` names
    ``ROW_LOCK`` (``Session.get``) or ``key_share=True`` (a statement)."""
    wrong = []
    for path in sorted((ROOT / "authz").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            shared = any(k.arg == "key_share" and isinstance(k.value, ast.Constant)
                         and k.value.value is True for k in node.keywords)
            if isinstance(func, ast.Attribute) and func.attr == "with_for_update" \
                    and not shared:
                wrong.append(f"{path.name}:{node.lineno}")
            for k in node.keywords:
                if k.arg == "with_for_update" and "ROW_LOCK" not in ast.unparse(k.value):
                    wrong.append(f"{path.name}:{node.lineno}")
    assert not wrong, wrong
