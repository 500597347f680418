"""A COMMIT that fails on SQLite must not leave its pooled connection holding the write lock."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from ledger.db import make_engine, make_session_factory


def test_a_failed_commit_does_not_poison_the_pool(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", pool_size=1, max_overflow=0)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        conn.exec_driver_sql("CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER "
                             "REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)")
    factory = make_session_factory(engine)
    with factory() as s:
        s.execute(text("INSERT INTO child VALUES (1, 42)"))  # checked only at COMMIT
        with pytest.raises(IntegrityError):
            s.commit()
    with factory() as s:  # the same pooled connection: usable, and nothing was kept
        s.execute(text("INSERT INTO parent VALUES (1)"))
        s.commit()
    with factory() as s:
        assert s.execute(text("SELECT count(*) FROM child")).scalar() == 0
        assert s.execute(text("SELECT count(*) FROM parent")).scalar() == 1
    engine.dispose()


def test_timestamps_take_ascii_digits_only() -> None:
    from ledger.entry import TS_RE

    assert TS_RE.match("2025-03-01T10:00:00.000000Z")
    assert not TS_RE.match("２０２５-03-01T10:00:00.000000Z")


def test_access_time_takes_ascii_digits_only() -> None:
    """run.finished audit.access_time is RFC 3339: ASCII digits, as the entry timestamp."""
    from ledger.entry import check_run_finished
    from ledger.errors import MalformedEntryError
    from tests.ledger.helpers import run_finished_body

    body = run_finished_body(0)
    check_run_finished(body)
    for at in ("\u0662\u0660\u0662\u0665-03-01T10:00:00Z",  # Arabic-Indic digits
               "2025-03-01T１０:00:00Z", "2025-03-01T10:00:00.\u0665Z",
               "2025-03-01T10:00:00+0\u0668:00"):
        body["audit"]["access_time"] = at
        with pytest.raises(MalformedEntryError):
            check_run_finished(body)
