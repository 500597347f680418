from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from ledger import merkle
from ledger.audit import audit_entries
from ledger.db import make_engine, make_session_factory
from ledger.log import TransparencyLog
from ledger.store import LedgerBase
from tests.ledger.conftest import ORIGIN

WRITERS, PER_WRITER = 32, 5


def _hammer(factory: sessionmaker[Session], log: TransparencyLog) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(WRITERS)

    def writer(w: int) -> None:
        try:
            barrier.wait()
            for i in range(PER_WRITER):
                with factory() as s:
                    log.append(s, "test.concurrent", f"writer:{w}", {"i": i})
                    s.commit()
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def _check_no_gap_no_fork(factory: sessionmaker[Session], log: TransparencyLog) -> None:
    n = WRITERS * PER_WRITER
    with factory() as s:
        assert log.size(s) == n
        entries = log.entries(s, 0, n)
        result = audit_entries(entries)  # index == position, prev chain, time order
        assert result.size == n and result.root == log.root(s)
        assert log.root(s) == merkle.root_hash(entries)


def test_concurrent_appenders_sqlite(
    factory: sessionmaker[Session], tlog: TransparencyLog
) -> None:
    _hammer(factory, tlog)
    _check_no_gap_no_fork(factory, tlog)


@pytest.fixture
def pg_engine(pg_url: str) -> Engine:
    eng = make_engine(pg_url, pool_size=40, max_overflow=10)
    LedgerBase.metadata.drop_all(eng)
    LedgerBase.metadata.create_all(eng)
    return eng


@pytest.mark.postgres
def test_concurrent_appenders_postgres(pg_engine: Engine) -> None:
    log = TransparencyLog(ORIGIN)
    factory = make_session_factory(pg_engine)
    _hammer(factory, log)
    _check_no_gap_no_fork(factory, log)
    with factory() as s:
        for i in range(0, WRITERS * PER_WRITER, 17):
            size = WRITERS * PER_WRITER
            merkle.verify_inclusion(merkle.leaf_hash(log.entries(s, i, i + 1)[0]), i, size,
                                    log.inclusion_proof(s, i, size), log.root(s))
        assert s.execute(text("select count(*) from ledger_entries")).scalar() == size
    pg_engine.dispose()


_APPENDER = """
import sys
from ledger.db import make_engine, make_session_factory
from ledger.log import TransparencyLog
from ledger.store import LedgerBase
eng = make_engine("sqlite:///" + sys.argv[1])
LedgerBase.metadata.create_all(eng)
factory = make_session_factory(eng)
log = TransparencyLog("sandbox.test/ledger")
i = 0
while True:
    with factory() as s:
        log.append(s, "test.stream", "system", {"i": i, "pad": "p" * (i % 50)})
        s.commit()
    i += 1
    if i == 20:
        print("running", flush=True)
"""


@pytest.mark.slow
def test_kill_9_during_appends_leaves_consistent_log(tmp_path: Path) -> None:
    db = tmp_path / "killed.db"
    root = Path(__file__).resolve().parents[2]
    for _round in range(2):
        proc = subprocess.Popen([sys.executable, "-c", _APPENDER, str(db)], cwd=root,
                                stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(root)})
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"running"
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    eng = make_engine(f"sqlite:///{db}")
    factory = make_session_factory(eng)
    log = TransparencyLog(ORIGIN)
    with factory() as s:
        n = log.size(s)
        assert n >= 40
        entries = log.entries(s, 0, n + 10)
        assert len(entries) == n  # nothing past the head, no gap below it
        assert audit_entries(entries).root == log.root(s)
        log.append(s, "test.after_crash", "system", {})
        s.commit()
        assert log.size(s) == n + 1
    eng.dispose()
