"""One session and one service context per request; committed once, at the end."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flask import Flask, current_app, g, request
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from authz.context import Ctx
from ledger.checkpoint import CheckpointSigner
from ledger.checkpointer import Checkpointer, Leadership
from ledger.log import TransparencyLog
from sandbox import wakeup
from sandbox.sealing_keys import load_signer
from sandbox.waiting import Signals, WorkSignal


@dataclass(frozen=True)
class Services:
    """What one app holds for its requests (``app.extensions["sandbox"]``)."""

    engine: Engine
    sessions: sessionmaker[Session]  # the writer
    readers: sessionmaker[Session]  # read-only engine for safe methods (SQLite: query_only)
    log: TransparencyLog
    signer: CheckpointSigner
    checkpointer: Checkpointer
    # Queued work wakes the agents' claims (signals.work); a joint job's progress (a mask
    # key announced, a part reported) wakes the long polls of agents waiting for their
    # peers' keys and of requesters waiting for the aggregate (signals.joint).
    signals: Signals

    @property
    def work_signal(self) -> WorkSignal:
        return self.signals.work

    @property
    def joint_signal(self) -> WorkSignal:
        return self.signals.joint


def init_app(app: Flask, engine: Engine, factory: sessionmaker[Session],
             readers: sessionmaker[Session] | None = None, *,
             leadership: Leadership | None = None,
             log_type: type[TransparencyLog] = TransparencyLog) -> None:
    """``leadership`` decides which process signs in the background (sandbox.leader)."""
    signer = load_signer(Path(app.config["LOG_KEY_FILE"]), app.config["LOG_ORIGIN"],
                         app.extensions["sandbox_sealing"], app.config.get("LOG_KEY"))
    log = log_type(app.config["LOG_ORIGIN"], signer)
    checkpointer = Checkpointer(factory, log, app.config["CHECKPOINT_INTERVAL_S"],
                                leadership=leadership, readers=readers or factory)
    app.extensions["sandbox"] = Services(engine=engine, sessions=factory, log=log,
                                         readers=readers or factory, signer=signer,
                                         checkpointer=checkpointer,
                                         signals=Signals(wakeup.for_engine(engine)))
    if app.config["START_CHECKPOINTER"]:
        checkpointer.start()

    @app.teardown_request
    def _close(exc: BaseException | None) -> None:
        session: Session | None = g.pop("session", None)
        if session is None:
            return
        try:
            if exc is not None:
                session.rollback()
            session.close()
        except SQLAlchemyError as e:
            # The request has its answer: whatever it committed is committed, and what
            # it did not is rolled back by the server with the lost connection. Failing
            # here would replace that answer with a 500 (the database went away after the
            # view finished: a restart, a killed backend). The connection is discarded.
            app.logger.warning("closing the request's session failed: %s (%s)",
                               type(e).__name__, type(getattr(e, "orig", None)).__name__)
            session.invalidate()


def services(app: Flask | None = None) -> Services:
    found: Services = (app or current_app).extensions["sandbox"]
    return found


def work_signal() -> WorkSignal:
    return services().work_signal


def joint_signal() -> WorkSignal:
    return services().joint_signal


def session() -> Session:
    """The request's session: safe methods read through the read-only engine."""
    if "session" not in g:
        read_only = request.method in ("GET", "HEAD", "OPTIONS")
        svc = services()
        g.session = (svc.readers if read_only else svc.sessions)()
    s: Session = g.session
    return s


def log() -> TransparencyLog:
    return services().log


def ctx() -> Ctx:
    if "ctx" not in g:
        g.ctx = Ctx(session(), log(), current_app.config["AUTHORIZING_SYSTEM"],
                    accreditation_required=bool(current_app.config["ACCREDITATION_REQUIRED"]))
    c: Ctx = g.ctx
    return c


def commit() -> None:
    session().commit()


def dispose(app: Flask) -> None:
    """Close every pooled connection of the app's engines (tests, embedded shutdown)."""
    svc = services(app)
    svc.checkpointer.stop()
    svc.signals.close()
    for factory in {svc.sessions, svc.readers}:
        bind = factory.kw.get("bind")
        if bind is not None:
            bind.dispose()


def use_reader() -> None:
    """A read-only session for a request that changes something only after work that needs
    no lock (call before anything reads; then :func:`use_writer`). On SQLite a writing
    transaction holds the write lock from its first statement, the authentication's."""
    g.pop("ctx", None)
    g.session = services().readers()


def use_writer() -> Ctx:
    """A writing session for a GET that must write (a redirect back from an identity
    provider is always a GET); call before anything reads."""
    old: Session | None = g.pop("session", None)
    if old is not None:
        old.close()
    g.pop("ctx", None)
    g.session = services().sessions()
    return ctx()
