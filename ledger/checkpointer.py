"""Signs checkpoints of the stored log: on demand and from a background thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ledger.checkpoint import Checkpoint, verify_checkpoint
from ledger.entry import format_ts
from ledger.errors import KeyConfigError, LedgerError
from ledger.log import TransparencyLog
from ledger.store import checkpoints_t
from ledger.witness import WitnessConfig, collect_cosignatures

log_ = logging.getLogger(__name__)


def sign_checkpoint(log: TransparencyLog, session: Session) -> tuple[int, str]:
    """Sign the current tree head and store it (idempotent: Ed25519 is deterministic)."""
    if log.signer is None:
        raise KeyConfigError("this TransparencyLog has no signing key")
    size = log.size(session)
    root = log.root(session, size)
    note = log.signer.sign(Checkpoint(log.origin, size, root))
    values = {"size": size, "root": root, "note": note,
              "created_at": format_ts(datetime.now(UTC))}
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(postgresql.insert(checkpoints_t).values(values).on_conflict_do_nothing())
    elif dialect == "sqlite":
        session.execute(sqlite.insert(checkpoints_t).values(values).on_conflict_do_nothing())
    else:
        session.execute(insert(checkpoints_t).values(values))
    return size, note


def store_cosigned(log: TransparencyLog, session: Session, note: str) -> None:
    """Record the cosigned version of a stored checkpoint (after ``collect_cosignatures``)."""
    if log.signer is None:
        raise KeyConfigError("this TransparencyLog has no signing key")
    cp = verify_checkpoint(note, log.signer.verifier, log.origin)
    stored = session.execute(select(checkpoints_t.c.root)
                             .where(checkpoints_t.c.size == cp.size)).scalar()
    if stored is None or bytes(stored) != cp.root:
        raise LedgerError(f"no stored checkpoint matches size {cp.size}")
    session.execute(update(checkpoints_t).where(checkpoints_t.c.size == cp.size)
                    .values(cosigned_note=note))


def checkpoint_history(session: Session, limit: int = 100) -> list[tuple[int, str]]:
    rows = session.execute(select(checkpoints_t.c.size, checkpoints_t.c.note)
                           .order_by(checkpoints_t.c.size.desc()).limit(limit)).all()
    return [(int(r.size), str(r.note)) for r in rows]


class Leadership(Protocol):
    """Who among the processes sharing one database signs in the background.

    Signing is idempotent, so two signers are wasteful, not wrong; ``holds`` is asked
    before every tick and must be cheap. Both methods are called from the signer's thread.
    """

    def holds(self) -> bool: ...

    def release(self) -> None: ...


class Checkpointer:
    """Background thread that signs a checkpoint within ``interval_s`` of any append.

    Batching is implicit: one checkpoint covers every append since the previous one.
    With a ``leadership``, only the process holding it signs in the background.
    """

    def __init__(self, session_factory: Callable[[], Session], log: TransparencyLog,
                 interval_s: float = 0.2, leadership: Leadership | None = None,
                 readers: Callable[[], Session] | None = None) -> None:
        """``readers``: sessions for the tick's look at the log's size (read-only: on
        SQLite a deferred transaction, so the look, five times a second, never queues for
        the single writer lock the requests' writes need); the writer signs."""
        if log.signer is None:
            raise KeyConfigError("a Checkpointer needs a TransparencyLog with a signer")
        self._factory = session_factory
        self._readers = readers or session_factory
        self._log = log
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._last_size = -1
        self._leadership = leadership

    def sign_now(self) -> str:
        """Sign and store the current head; return the note text."""
        with self._lock, self._factory() as session:
            size, note = sign_checkpoint(self._log, session)
            session.commit()
            self._last_size = size
            return note

    def _tick(self) -> None:
        with self._readers() as session:
            size = self._log.size(session)
        if size != self._last_size:
            self.sign_now()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self._interval):
                try:
                    if self._leadership is None or self._leadership.holds():
                        self._tick()
                except (SQLAlchemyError, LedgerError):
                    # A busy or restarting database must not kill the signer; next tick
                    # retries.
                    log_.exception("checkpoint signing failed")
        finally:
            if self._leadership is not None:
                self._leadership.release()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ledger-checkpointer",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def cosign_latest(log: TransparencyLog, session_factory: Callable[[], Session],
                  witnesses: Sequence[WitnessConfig], k: int, timeout: float = 5.0) -> str:
    """Sign the current head, get >= k witness cosignatures, store and return the note.

    The controller calls this before releasing an output; QuorumError means "do not
    release yet".
    """
    with session_factory() as s:
        _, note = sign_checkpoint(log, s)
        s.commit()

    def proof(old: int, new: int) -> list[bytes]:
        with session_factory() as s:
            return log.consistency_proof(s, old, new)

    cosigned = collect_cosignatures(note, witnesses, k, proof, timeout)
    with session_factory() as s:
        store_cosigned(log, s, cosigned)
        s.commit()
    return cosigned
