"""One session and one service context per request; committed once, at the end."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask, current_app, g, request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from authz.context import Ctx
from ledger.checkpoint import ENV_KEY, CheckpointSigner, generate_key_file
from ledger.checkpointer import Checkpointer
from ledger.log import TransparencyLog


def load_signer(key_file: Path, origin: str) -> CheckpointSigner:
    """The log key comes from the environment or a file, never from the database.

    The embedded default creates the key file (mode 0600) on first start; a deployment
    provisions it and keeps it outside the database's backups.
    """
    if os.environ.get(ENV_KEY):
        return CheckpointSigner.from_env()
    if not key_file.exists():
        generate_key_file(key_file, origin)
    return CheckpointSigner.from_file(key_file)


def init_app(app: Flask, engine: Engine, factory: sessionmaker[Session],
             readers: sessionmaker[Session] | None = None) -> None:
    signer = load_signer(Path(app.config["LOG_KEY_FILE"]), app.config["LOG_ORIGIN"])
    log = TransparencyLog(app.config["LOG_ORIGIN"], signer)
    checkpointer = Checkpointer(factory, log, app.config["CHECKPOINT_INTERVAL_S"])
    from sandbox.waiting import WorkSignal

    app.extensions["sandbox"] = {"engine": engine, "sessions": factory, "log": log,
                                 "readers": readers or factory,
                                 "signer": signer, "checkpointer": checkpointer,
                                 "work_signal": WorkSignal()}
    if app.config["START_CHECKPOINTER"]:
        checkpointer.start()

    @app.teardown_request
    def _close(exc: BaseException | None) -> None:
        session: Session | None = g.pop("session", None)
        if session is not None:
            if exc is not None:
                session.rollback()
            session.close()


def ext() -> dict[str, Any]:
    data: dict[str, Any] = current_app.extensions["sandbox"]
    return data


def session() -> Session:
    """The request's session: safe methods read through the read-only engine."""
    if "session" not in g:
        read_only = request.method in ("GET", "HEAD", "OPTIONS")
        g.session = ext()["readers" if read_only else "sessions"]()
    s: Session = g.session
    return s


def log() -> TransparencyLog:
    lg: TransparencyLog = ext()["log"]
    return lg


def ctx() -> Ctx:
    if "ctx" not in g:
        g.ctx = Ctx(session(), log(), current_app.config["AUTHORIZING_SYSTEM"])
    c: Ctx = g.ctx
    return c


def commit() -> None:
    session().commit()


def dispose(app: Flask) -> None:
    """Close every pooled connection of the app's engines (tests, embedded shutdown)."""
    ext_ = app.extensions["sandbox"]
    ext_["checkpointer"].stop()
    for factory in {ext_["sessions"], ext_["readers"]}:
        bind = factory.kw.get("bind")
        if bind is not None:
            bind.dispose()
