"""Group commit (ledger.sequencer) on real SQLite files and a real PostgreSQL cluster."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from ledger import merkle
from ledger.audit import audit_entries
from ledger.db import make_engine, make_session_factory
from ledger.errors import (
    BatchCommitError,
    InvalidEntryError,
    LedgerError,
    SequencerClosedError,
    SequencerError,
    SequencerTimeoutError,
)
from ledger.log import AppendResult, TransparencyLog
from ledger.sequencer import BATCH_INFO_KEY, Sequencer
from ledger.store import LedgerBase
from tests.ledger.conftest import ORIGIN

THREADS, PER_THREAD = 32, 8
Factory = sessionmaker[Session]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def dbf(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """A session factory on an empty ledger: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'seq.db'}")
        LedgerBase.metadata.create_all(eng)
        yield make_session_factory(eng)
        eng.dispose()
        return
    pg_url: str = request.getfixturevalue("pg_url")
    name = f"seq_{uuid.uuid4().hex[:12]}"
    admin = make_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    eng = make_engine(pg_url.replace("/sandbox?", f"/{name}?"), pool_size=40, max_overflow=10)
    LedgerBase.metadata.create_all(eng)
    yield make_session_factory(eng)
    eng.dispose()
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def log() -> TransparencyLog:
    return TransparencyLog(ORIGIN)


class Gate:
    """A unit that holds the writer until released, so that the next batch can be queued."""

    def __init__(self, before: Callable[[Session], None] | None = None) -> None:
        self.entered, self.release, self.before = threading.Event(), threading.Event(), before

    def __call__(self, session: Session) -> None:
        if self.before is not None:
            self.before(session)
        self.entered.set()
        assert self.release.wait(10)


def hold(seq: Sequencer, gate: Gate | None = None) -> Gate:
    gate = gate or Gate()
    seq.submit(gate)
    assert gate.entered.wait(10)
    return gate


def queued(seq: Sequencer, n: int) -> None:
    """Wait until ``n`` units are queued (appends are submitted from helper threads)."""
    deadline = time.monotonic() + 10
    while len(seq._queue) < n:
        assert time.monotonic() < deadline
        time.sleep(0.001)


def check_log(factory: Factory, log: TransparencyLog, n: int) -> list[dict[str, Any]]:
    """Exactly indices 0..n-1, prev chaining, stored tree == RFC 9162 root of the entries."""
    with factory() as s:
        assert log.size(s) == n
        entries = log.entries(s, 0, n + 5)
        root = log.root(s)
    assert len(entries) == n
    decoded = [json.loads(e) for e in entries]
    assert [d["index"] for d in decoded] == list(range(n))
    for i in range(1, n):
        assert decoded[i]["prev"] == merkle.leaf_hash(entries[i - 1]).hex()
    assert root == merkle.root_hash(entries) == audit_entries(entries).root
    return decoded


@pytest.mark.parametrize("max_wait_s", [0.0, 0.002])
def test_concurrent_appenders_no_gap_no_fork(
    dbf: Factory, log: TransparencyLog, max_wait_s: float
) -> None:
    got: list[list[AppendResult]] = [[] for _ in range(THREADS)]
    groups: list[list[int]] = []
    outside: list[int] = []
    barrier = threading.Barrier(THREADS + 1)

    def appender(w: int) -> None:
        barrier.wait()
        for i in range(PER_THREAD):
            if i % 4 == 3:
                many = seq.append_many([("test.many", f"w:{w}", {"i": i, "j": j})
                                        for j in range(3)], timeout=30)
                groups.append([r.index for r in many])
                got[w] += many
            else:
                got[w].append(seq.append("test.seq", f"w:{w}", {"i": i}, timeout=30))

    def outsider() -> None:  # a writer that does not go through the sequencer
        barrier.wait()
        for i in range(10):
            with dbf() as s:
                outside.append(log.append(s, "test.outside", "system", {"i": i}).index)
                s.commit()

    with Sequencer(dbf, log, max_batch=64, max_wait_s=max_wait_s) as seq:
        with ThreadPoolExecutor(THREADS + 1) as pool:
            done = [pool.submit(appender, w) for w in range(THREADS)]
            done.append(pool.submit(outsider))
            for f in done:
                f.result(timeout=60)
        stats = seq.stats()
    per_thread = PER_THREAD + 2 * (PER_THREAD // 4)
    n = THREADS * per_thread + len(outside)
    decoded = check_log(dbf, log, n)
    mine = [r for rs in got for r in rs]
    assert sorted([r.index for r in mine] + outside) == list(range(n))
    with dbf() as s:
        for r in mine:
            assert log.find_index(s, r.leaf_hash) == r.index
    for w, rs in enumerate(got):  # each caller's entries in its own submission order
        assert [r.index for r in rs] == sorted(r.index for r in rs)
        assert [decoded[r.index]["actor"] for r in rs] == [f"w:{w}"] * per_thread
    assert all(g == list(range(g[0], g[0] + 3)) for g in groups)  # one unit: consecutive
    assert stats.units == THREADS * PER_THREAD
    assert stats.failed_batches == 0 and stats.largest_batch <= 64


def _spawn(pool: ThreadPoolExecutor, seq: Sequencer, fn: Callable[[], Any], n: int) -> Future[Any]:
    fut = pool.submit(fn)
    queued(seq, n)
    return fut


def test_failing_unit_leaves_no_trace(dbf: Factory, log: TransparencyLog) -> None:
    batches: list[int] = []

    def bad(session: Session) -> None:
        batches.append(session.info[BATCH_INFO_KEY])
        log.append(session, "test.bad", "system", {"mark": "doomed"})
        raise ValueError("unit failed after appending")

    def good(session: Session) -> int:
        batches.append(session.info[BATCH_INFO_KEY])
        return log.append(session, "test.good", "system", {}).index

    with Sequencer(dbf, log) as seq, ThreadPoolExecutor(4) as pool:
        seq.append("test.first", "system", {})
        gate = hold(seq)
        a = _spawn(pool, seq, lambda: seq.append("test.a", "system", {}), 1)
        b = seq.submit(bad)
        g = seq.submit(good)
        invalid = _spawn(pool, seq, lambda: seq.append("Not A Kind", "system", {}), 4)
        c = _spawn(pool, seq, lambda: seq.append("test.c", "system", {}), 5)
        gate.release.set()
        assert a.result(10).index == 1
        with pytest.raises(ValueError, match="unit failed after appending"):
            b.result(10)
        assert g.result(10) == 2
        with pytest.raises(InvalidEntryError):
            invalid.result(10)
        assert c.result(10).index == 3
        assert len(set(batches)) == 1  # the failures had neighbours in their own batch
    decoded = check_log(dbf, log, 4)
    assert [d["kind"] for d in decoded] == ["test.first", "test.a", "test.good", "test.c"]
    with dbf() as s:
        assert s.execute(text("SELECT count(*) FROM ledger_entries")).scalar() == 4


def _deferred_fk_tables(factory: Factory) -> None:
    with factory() as s:
        s.execute(text("CREATE TABLE seq_parent (id INTEGER PRIMARY KEY)"))
        s.execute(text("CREATE TABLE seq_child (id INTEGER PRIMARY KEY, parent INTEGER "
                       "REFERENCES seq_parent (id) DEFERRABLE INITIALLY DEFERRED)"))
        s.commit()


def test_commit_failure_fails_every_waiter(dbf: Factory, log: TransparencyLog) -> None:
    """A deferred foreign key is only checked by COMMIT: the unit succeeds, the commit fails."""
    _deferred_fk_tables(dbf)

    def orphan(session: Session) -> str:
        session.execute(text("INSERT INTO seq_child (id, parent) VALUES (1, 999)"))
        return "inserted"

    with Sequencer(dbf, log) as seq, ThreadPoolExecutor(4) as pool:
        seq.append("test.first", "system", {})
        gate = hold(seq)
        a = _spawn(pool, seq, lambda: seq.append("test.a", "system", {}), 1)
        o = seq.submit(orphan)
        c = _spawn(pool, seq, lambda: seq.append("test.c", "system", {}), 3)
        gate.release.set()
        for fut in (a, o, c):
            with pytest.raises(BatchCommitError):
                fut.result(10)
        assert seq.stats().failed_batches == 1
        assert seq.append("test.after", "system", {}, timeout=10).index == 1
    decoded = check_log(dbf, log, 2)
    assert [d["kind"] for d in decoded] == ["test.first", "test.after"]
    with dbf() as s:
        assert s.execute(text("SELECT count(*) FROM seq_child")).scalar() == 0


@pytest.mark.postgres
def test_connection_killed_mid_batch_fails_the_batch_then_recovers(
    pg_url: str, log: TransparencyLog
) -> None:
    name = f"seq_{uuid.uuid4().hex[:12]}"
    admin = make_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    eng = make_engine(pg_url.replace("/sandbox?", f"/{name}?"))
    LedgerBase.metadata.create_all(eng)
    factory = make_session_factory(eng)
    pids: list[int] = []
    killer = Gate(lambda s: pids.append(int(s.execute(text("SELECT pg_backend_pid()"))
                                            .scalar_one())))
    with Sequencer(factory, log) as seq, ThreadPoolExecutor(4) as pool:
        seq.append("test.first", "system", {})
        gate = hold(seq)
        a = _spawn(pool, seq, lambda: seq.append("test.a", "system", {}), 1)
        seq.submit(killer)
        c = _spawn(pool, seq, lambda: seq.append("test.c", "system", {}), 3)
        gate.release.set()
        assert killer.entered.wait(10)
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pids[0]}).scalar()
        killer.release.set()
        for fut in (a, c):
            with pytest.raises(BatchCommitError):
                fut.result(10)
        assert seq.append("test.after", "system", {}, timeout=10).index == 1
    check_log(factory, log, 2)
    eng.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def test_unit_that_ends_the_transaction_fails_its_batch(
    factory: Factory, tlog: TransparencyLog
) -> None:
    def append_then_roll_back(s: Session) -> None:
        tlog.append(s, "test.x", "system", {})
        s.rollback()

    def append_then_commit(s: Session) -> None:
        tlog.append(s, "test.y", "system", {})
        inner = s.begin_nested()  # a unit may use savepoints of its own
        tlog.append(s, "test.y", "system", {})
        inner.commit()
        s.commit()

    with Sequencer(factory, tlog) as seq, ThreadPoolExecutor(2) as pool:
        with pytest.raises(BatchCommitError, match="committed or rolled back"):
            seq.run(append_then_roll_back, timeout=10)
        gate = hold(seq)
        a = _spawn(pool, seq, lambda: seq.append("test.a", "system", {}), 1)
        bad = seq.submit(append_then_commit)
        c = _spawn(pool, seq, lambda: seq.append("test.c", "system", {}), 3)
        gate.release.set()
        with pytest.raises(SequencerError, match="must not commit"):
            bad.result(10)
        assert (a.result(10).index, c.result(10).index) == (0, 1)
    assert [d["kind"] for d in check_log(factory, tlog, 2)] == ["test.a", "test.c"]


def test_close_drains_the_queue_then_refuses(factory: Factory, tlog: TransparencyLog) -> None:
    seq = Sequencer(factory, tlog, max_batch=8)
    with pytest.raises(SequencerClosedError):
        seq.append("test.early", "system", {})
    seq.start()
    gate = hold(seq)
    def unit(i: int) -> Callable[[Session], int]:
        return lambda s: tlog.append(s, "test.q", "system", {"i": i}).index

    futs = [seq.submit(unit(i)) for i in range(20)]
    closer = threading.Thread(target=seq.close)
    closer.start()
    deadline = time.monotonic() + 10
    while True:  # close() refuses new work at once, before the queue is drained
        try:
            seq.submit(lambda s: None).cancel()
        except SequencerClosedError:
            break
        assert time.monotonic() < deadline
        time.sleep(0.001)
    gate.release.set()
    closer.join(10)
    assert not closer.is_alive()
    assert [f.result(0) for f in futs] == list(range(20))
    with pytest.raises(SequencerClosedError):
        seq.append("test.late", "system", {})
    with pytest.raises(SequencerClosedError):
        seq.start()
    seq.close()  # idempotent
    check_log(factory, tlog, 20)


def test_reentrant_use_from_a_unit_is_refused(factory: Factory, tlog: TransparencyLog) -> None:
    with Sequencer(factory, tlog) as seq:
        with pytest.raises(SequencerError, match="deadlock") as info:
            seq.run(lambda s: seq.append("test.inner", "system", {}), timeout=10)
        assert not isinstance(info.value, SequencerClosedError)
        with pytest.raises(SequencerError, match="deadlock"):
            seq.run(lambda s: seq.close(), timeout=10)
        assert seq.append("test.outer", "system", {}, timeout=10).index == 0


def test_batches_respect_max_batch_and_fifo(factory: Factory, tlog: TransparencyLog) -> None:
    seen: list[tuple[int, int]] = []

    def unit(i: int) -> Callable[[Session], int]:
        def run(s: Session) -> int:
            seen.append((s.info[BATCH_INFO_KEY], i))
            return tlog.append(s, "test.fifo", "system", {"i": i}).index
        return run

    with Sequencer(factory, tlog, max_batch=4) as seq, ThreadPoolExecutor(12) as pool:
        gate = hold(seq)
        futs = [seq.submit(unit(i)) for i in range(30)]
        appends = [_spawn(pool, seq, lambda: seq.append("test.app", "system", {}), 31 + k)
                   for k in range(10)]
        gate.release.set()
        assert [f.result(10) for f in futs] == list(range(30))
        assert sorted(f.result(10).index for f in appends) == list(range(30, 40))
        assert seq.stats().largest_batch <= 4
    assert [i for _, i in seen] == list(range(30))
    per_batch: dict[int, int] = {}
    for b, _ in seen:
        per_batch[b] = per_batch.get(b, 0) + 1
    assert max(per_batch.values()) == 4
    check_log(factory, tlog, 40)


def test_run_timeout_withdraws_a_queued_unit(factory: Factory, tlog: TransparencyLog) -> None:
    ran = threading.Event()
    with Sequencer(factory, tlog) as seq:
        gate = hold(seq)
        with pytest.raises(SequencerTimeoutError) as info:
            seq.run(lambda s: ran.set(), timeout=0.05)
        assert info.value.started is False and isinstance(info.value, LedgerError)
        gate.release.set()
        assert seq.append("test.after", "system", {}, timeout=10).index == 0
    assert not ran.is_set()


def test_max_wait_collects_the_last_batchs_callers_but_never_delays_a_lone_one(
    factory: Factory, tlog: TransparencyLog
) -> None:
    batches: list[int] = []

    def unit(s: Session) -> None:
        batches.append(s.info[BATCH_INFO_KEY])

    with Sequencer(factory, tlog, max_wait_s=1.0) as seq:
        t = time.perf_counter()
        for i in range(5):  # last batch: 1 unit, so nothing to wait for
            seq.append("test.lone", "system", {"i": i})
        assert time.perf_counter() - t < 2.5
        gate = hold(seq)
        first = [seq.submit(unit) for _ in range(3)]
        gate.release.set()
        for f in first:
            f.result(10)
        later = [seq.submit(unit)]  # the writer now waits for 3 units (at most 1 s)
        time.sleep(0.05)
        later += [seq.submit(unit), seq.submit(unit)]
        for f in later:
            f.result(10)
    assert batches[:3] == [batches[0]] * 3 and batches[3:] == [batches[3]] * 3
