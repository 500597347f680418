"""Group commit for the transparency log: many appenders, one writer, one commit per batch.

A durable commit costs about the same for one entry as for a hundred (one fsync on
SQLite), so appenders hand their work to one writer thread, which runs whatever is queued
when it is free inside ONE transaction and commits once (as Trillian's sequencer and
Tessera's batched integration do). A lone appender waits for nothing but its own commit;
under load, batches form by themselves while the previous commit is in flight.

A unit of work is ``Callable[[Session], T]``, run in submission order, each in its own
SAVEPOINT: a unit that raises has only its savepoint rolled back and its caller gets that
exception. Outcomes are delivered only after the batch's COMMIT returned, so nobody is
told "done" for something that is not durable; if the commit (or anything outside a unit)
fails, the whole batch rolls back and its other callers get ``BatchCommitError``. Appends
still go through ``TransparencyLog.append_many`` and its head lock, so writers outside
the sequencer stay serialized with it: no gap, no fork.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, event
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from ledger.errors import (
    BatchCommitError,
    SequencerClosedError,
    SequencerError,
    SequencerTimeoutError,
)
from ledger.log import AppendResult, Item, TransparencyLog

T = TypeVar("T")
BATCH_INFO_KEY = "ledger.sequencer.batch"  # session.info[...]: number of the running batch
log_ = logging.getLogger(__name__)


@dataclass(frozen=True)
class SequencerStats:
    batches: int  # batches committed
    units: int  # units in committed batches (including units that raised)
    largest_batch: int
    failed_batches: int  # batches rolled back as a whole

    @property
    def mean_batch(self) -> float:
        return self.units / self.batches if self.batches else 0.0


@dataclass(frozen=True, slots=True)
class _Append:  # the unit behind Sequencer.append: the writer merges consecutive ones
    items: list[Item]


_Pending = tuple[Callable[[Session], Any] | _Append, Future[Any]]
_Outcome = tuple[bool, Any]  # (succeeded, value or exception)


class Sequencer:
    """Serializes units of work through one writer thread, one durable commit per batch.

    Units run on the writer thread while the batch holds the log's write lock: keep them
    short, do not commit or roll back the session, do not call the sequencer from them
    (refused: it would deadlock), and return plain values (the session is the writer's).
    ``max_wait_s`` > 0 lets the writer wait that long for a fuller batch (see _next_batch).
    """

    def __init__(self, session_factory: sessionmaker[Session], log: TransparencyLog,
                 max_batch: int = 256, max_wait_s: float = 0.0) -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise SequencerError("max_batch must be >= 1 and max_wait_s >= 0")
        self._factory, self._log = session_factory, log
        self._max_batch, self._max_wait = max_batch, max_wait_s
        self._queue: deque[_Pending] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._running = self._closed = False
        self._thread: threading.Thread | None = None
        self._writer_ident: int | None = None
        self._stats = SequencerStats(0, 0, 0, 0)
        self._session: Session | None = None  # the writer's, kept between batches
        self._conn: Connection | None = None
        self._unit_tx: SessionTransaction | None = None  # the savepoint of the running unit
        self._last = 1  # size of the last batch taken

    def start(self) -> None:
        with self._cond:
            if self._closed:
                raise SequencerClosedError("a closed sequencer cannot be restarted")
            if self._thread is None:
                self._running = True
                self._thread = threading.Thread(target=self._loop, name="ledger-sequencer",
                                                daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Stop accepting work, commit everything already queued, stop the writer."""
        self._refuse_reentry("close")
        with self._cond:
            self._running, self._closed = False, True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def __enter__(self) -> Sequencer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def stats(self) -> SequencerStats:
        with self._cond:
            return self._stats

    # -- submitting ----------------------------------------------------------------------

    def submit(self, unit: Callable[[Session], T]) -> Future[T]:
        """Queue ``unit``; the future resolves once the batch holding it has committed."""
        return self._enqueue(unit)

    def run(self, unit: Callable[[Session], T], timeout: float | None = None) -> T:
        """Run ``unit`` in the next batch; return once it is durable, or raise what it raised.

        On timeout: ``SequencerTimeoutError``, ``started`` False if the unit was withdrawn.
        """
        fut: Future[T] = self._enqueue(unit)
        return self._wait(fut, timeout)

    def append(self, kind: str, actor: str, body: Any,
               timeout: float | None = None) -> AppendResult:
        return self.append_many([(kind, actor, body)], timeout)[0]

    def append_many(self, items: Iterable[Item],
                    timeout: float | None = None) -> list[AppendResult]:
        """Append ``items`` consecutively (one unit: all of them or none)."""
        fut: Future[list[AppendResult]] = self._enqueue(_Append(list(items)))
        return self._wait(fut, timeout)

    def _refuse_reentry(self, what: str) -> None:
        if threading.get_ident() == self._writer_ident:
            raise SequencerError(f"{what} from inside a unit would deadlock the writer")

    def _enqueue(self, unit: Callable[[Session], Any] | _Append) -> Future[Any]:
        self._refuse_reentry("submit")
        fut: Future[Any] = Future()
        with self._cond:
            if not self._running:
                raise SequencerClosedError("the sequencer is not running")
            self._queue.append((unit, fut))
            self._cond.notify()
        return fut

    @staticmethod
    def _wait(fut: Future[T], timeout: float | None) -> T:
        try:
            return fut.result(timeout)
        except TimeoutError:
            if fut.cancel():
                raise SequencerTimeoutError("timed out in the queue; the unit will not run",
                                            started=False) from None
            if not fut.done():
                raise SequencerTimeoutError("timed out while its batch was being committed; "
                                            "it may still commit", started=True) from None
            return fut.result()  # done meanwhile, or the unit itself raised a TimeoutError

    # -- the writer ----------------------------------------------------------------------

    def _next_batch(self) -> list[_Pending] | None:
        with self._cond:
            while not self._queue:
                if not self._running:
                    return None
                self._cond.wait()
            # Wait (at most max_wait_s) for as many units as the last batch had: in a closed
            # loop, the callers it released. Batches then stop alternating between two halves
            # of the callers, and a lone appender (last batch: 1) never waits.
            want, deadline = min(self._last, self._max_batch), time.monotonic() + self._max_wait
            while self._running and len(self._queue) < want:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            take = self._last = min(len(self._queue), self._max_batch)
            batch = [self._queue.popleft() for _ in range(take)]
            return [p for p in batch if p[1].set_running_or_notify_cancel()]  # not cancelled

    def _loop(self) -> None:
        self._writer_ident = threading.get_ident()
        try:
            while (batch := self._next_batch()) is not None:
                if batch:
                    self._run_batch(batch)
        except BaseException as exc:  # the writer must not die silently with callers waiting
            with self._cond:
                self._running = False
                left = [p for p in self._queue if p[1].set_running_or_notify_cancel()]
                self._queue.clear()
            for _, fut in left:
                fut.set_exception(SequencerClosedError(f"the writer stopped: {exc!r}"))
            raise
        finally:
            self._discard()

    def _open(self) -> Session:
        """The writer's session, bound to a connection it keeps between batches.

        A pool checkout and a new Session per batch cost more CPU than a batch of appends.
        """
        if self._session is None:
            with self._factory() as probe:
                bind = probe.get_bind()
            if isinstance(bind, Engine):
                self._conn = bind.connect()
                self._session = self._factory(bind=self._conn)
            else:
                self._session = self._factory()
            event.listen(self._session, "before_commit", self._refuse_unit_commit)
        return self._session

    def _refuse_unit_commit(self, session: Session) -> None:
        # session.commit() in a unit would commit the batch so far before it is complete.
        if self._unit_tx is not None and session.get_nested_transaction() is self._unit_tx:
            raise SequencerError("a unit must not commit: the sequencer commits the batch")

    def _discard(self, failed: bool = False) -> None:
        """Drop the writer's session and connection (after a failure, or when stopping).

        After a failure the connection is invalidated, not pooled: it may be broken, and
        after a failed COMMIT SQLite keeps the transaction open while SQLAlchemy considers
        it ended (so the pool would hand it out still inside that transaction).
        """
        session, conn, self._session, self._conn = self._session, self._conn, None, None
        try:
            if session is not None:
                session.close()
            if conn is not None:
                if failed:
                    conn.invalidate()
                conn.close()
        except Exception:
            log_.exception("closing the sequencer's session failed")

    def _run_batch(self, batch: list[_Pending]) -> None:
        outcomes: list[_Outcome] = []
        error: BaseException | None = None
        try:
            session = self._open()
            session.info[BATCH_INFO_KEY] = self._stats.batches + self._stats.failed_batches
            outer = session.begin()
            self._run_units(session, outer, [u for u, _ in batch], outcomes)
            outer.commit()  # durable once this returns (synchronous=FULL on SQLite)
            session.expunge_all()  # as if each batch had a session of its own
        except BaseException as exc:
            error = exc
            self._discard(failed=True)  # a broken connection must not poison the next batch
        with self._cond:
            s = self._stats
            self._stats = SequencerStats(
                s.batches + (error is None), s.units + len(batch) * (error is None),
                max(s.largest_batch, len(batch)), s.failed_batches + (error is not None))
        for i, (_, fut) in enumerate(batch):
            ok, value = outcomes[i] if i < len(outcomes) else (True, None)
            if not ok:
                fut.set_exception(value)
            elif error is not None:
                fail = BatchCommitError(f"batch rolled back, nothing in it committed: {error!r}")
                fail.__cause__ = error
                fut.set_exception(fail)
            else:
                fut.set_result(value)
        if error is not None and not isinstance(error, Exception):
            raise error

    def _run_units(self, session: Session, outer: SessionTransaction,
                   units: list[Callable[[Session], Any] | _Append],
                   outcomes: list[_Outcome]) -> None:
        i = 0
        while i < len(units):
            unit = units[i]
            if not isinstance(unit, _Append):
                outcomes.append(self._run_one(session, outer, unit))
                i += 1
                continue
            run = [unit]
            while i + len(run) < len(units) and isinstance(nxt := units[i + len(run)], _Append):
                run.append(nxt)
            i += len(run)
            outcomes += self._run_appends(session, run)

    def _run_one(self, session: Session, outer: SessionTransaction,
                 unit: Callable[[Session], Any]) -> _Outcome:
        nested = self._unit_tx = session.begin_nested()
        try:
            value = unit(session)
        except Exception as exc:
            self._unit_tx = None
            self._check_outer(session, outer)
            if nested.is_active:
                nested.rollback()
            return False, exc
        self._unit_tx = None
        self._check_outer(session, outer)
        nested.commit()  # RELEASE SAVEPOINT
        return True, value

    def _run_appends(self, session: Session, run: list[_Append]) -> list[_Outcome]:
        """Consecutive appends as ONE ``append_many`` (one head read, one write per table).

        If that raises (an invalid entry among them), it is rolled back and the appends
        run one by one: the same outcome as unit by unit. The savepoint is issued on the
        DB-API cursor, like ``append_many``'s own statements: ``begin_nested`` costs more
        CPU than the appends, and only matters to units that change ORM objects.
        """
        dbapi = session.connection().connection.dbapi_connection
        if dbapi is None:
            raise SequencerError("the writer's database connection is closed")
        cur = dbapi.cursor()
        try:
            cur.execute("SAVEPOINT ledger_sequencer")
            try:
                results = self._log.append_many(session, [it for u in run for it in u.items])
            except Exception as exc:
                cur.execute("ROLLBACK TO SAVEPOINT ledger_sequencer")
                cur.execute("RELEASE SAVEPOINT ledger_sequencer")
                if len(run) == 1:
                    return [(False, exc)]
                return [out for u in run for out in self._run_appends(session, [u])]
            cur.execute("RELEASE SAVEPOINT ledger_sequencer")
        finally:
            cur.close()
        out: list[_Outcome] = []
        for u in run:
            out.append((True, results[:len(u.items)]))
            del results[:len(u.items)]
        return out

    @staticmethod
    def _check_outer(session: Session, outer: SessionTransaction) -> None:
        if not outer.is_active or session.get_transaction() is not outer:
            raise SequencerError("a unit committed or rolled back the sequencer's transaction")
