"""On SQLite, safe requests read beside a writer instead of queueing for its lock."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from sandbox import db
from tests.conftest import Actor


@pytest.fixture
def sqlite_app(app: Flask) -> Flask:
    if not app.config["DATABASE_URL"].startswith("sqlite"):
        pytest.skip("the read-only engine exists for SQLite")
    return app


def test_a_get_is_served_while_a_writer_holds_the_lock(sqlite_app: Flask, admin: Actor) -> None:
    writer = sqlite_app.extensions["sandbox"]["sessions"]()
    writer.execute(text("UPDATE parties SET name = name"))  # BEGIN IMMEDIATE: write lock held
    try:
        r = admin.get("/me")
        assert r.status_code == 200 and r.json["id"] == admin.id
    finally:
        writer.rollback()
        writer.close()


def test_the_read_engine_refuses_writes(sqlite_app: Flask) -> None:
    with sqlite_app.test_request_context("/api/v1/me", method="GET"):
        with pytest.raises(OperationalError):
            db.session().execute(text("UPDATE parties SET name = name"))
        db.session().rollback()
