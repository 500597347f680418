"""One session and one service context per request; committed once, at the end."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, current_app, g, request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from authz.context import Ctx
from ledger.checkpoint import ENV_KEY, CheckpointSigner, generate_key_file
from ledger.checkpointer import Checkpointer, Leadership
from ledger.log import TransparencyLog
from sandbox.waiting import WorkSignal


@dataclass(frozen=True)
class Services:
    """What one app holds for its requests (``app.extensions["sandbox"]``)."""

    engine: Engine
    sessions: sessionmaker[Session]  # the writer
    readers: sessionmaker[Session]  # read-only engine for safe methods (SQLite: query_only)
    log: TransparencyLog
    signer: CheckpointSigner
    checkpointer: Checkpointer
    work_signal: WorkSignal


def load_signer(key_file: Path, origin: str, skey: str | None = None) -> CheckpointSigner:
    """The log key comes from the environment or a file, never from the database.

    The embedded default creates the key file (mode 0600) on first start; a deployment
    provisions it and keeps it outside the database's backups.
    """
    if skey:
        return CheckpointSigner.from_skey(skey)
    if os.environ.get(ENV_KEY):
        return CheckpointSigner.from_env()
    if not key_file.exists():
        generate_key_file(key_file, origin)
    return CheckpointSigner.from_file(key_file)


def init_app(app: Flask, engine: Engine, factory: sessionmaker[Session],
             readers: sessionmaker[Session] | None = None, *,
             leadership: Leadership | None = None,
             log_type: type[TransparencyLog] = TransparencyLog) -> None:
    """``leadership`` decides which process signs in the background (sandbox.leader)."""
    signer = load_signer(Path(app.config["LOG_KEY_FILE"]), app.config["LOG_ORIGIN"],
                         app.config.get("LOG_KEY"))
    log = log_type(app.config["LOG_ORIGIN"], signer)
    checkpointer = Checkpointer(factory, log, app.config["CHECKPOINT_INTERVAL_S"],
                                leadership=leadership)
    app.extensions["sandbox"] = Services(engine=engine, sessions=factory, log=log,
                                         readers=readers or factory, signer=signer,
                                         checkpointer=checkpointer, work_signal=WorkSignal())
    if app.config["START_CHECKPOINTER"]:
        checkpointer.start()

    @app.teardown_request
    def _close(exc: BaseException | None) -> None:
        session: Session | None = g.pop("session", None)
        if session is not None:
            if exc is not None:
                session.rollback()
            session.close()


def services(app: Flask | None = None) -> Services:
    found: Services = (app or current_app).extensions["sandbox"]
    return found


def work_signal() -> WorkSignal:
    return services().work_signal


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
    for factory in {svc.sessions, svc.readers}:
        bind = factory.kw.get("bind")
        if bind is not None:
            bind.dispose()
