"""The controller: a Flask application factory in the style of Flask's tutorial."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from ledger.db import make_engine, make_session_factory


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__, instance_path=os.environ.get("SANDBOX_INSTANCE",
                                                       str(Path.cwd() / "var")))
    app.config.from_mapping(
        DATABASE_URL=os.environ.get("SANDBOX_DATABASE_URL",
                                    f"sqlite:///{Path(app.instance_path) / 'sandbox.db'}"),
        LOG_ORIGIN=os.environ.get("SANDBOX_LOG_ORIGIN", "data-sandbox.local/log"),
        LOG_KEY_FILE=os.environ.get("SANDBOX_LOG_KEY_FILE",
                                    str(Path(app.instance_path) / "log.key")),
        AUTHORIZING_SYSTEM=os.environ.get("SANDBOX_SYSTEM_NAME", "data-sandbox controller"),
        MAX_CONTENT_LENGTH=32 * 1024 * 1024,
        # Sent as Retry-After with the 503 answered while the database cannot be reached.
        DATABASE_RETRY_AFTER_S=5,
        CHECKPOINT_INTERVAL_S=0.2,
        START_CHECKPOINTER=True,
        AGENT_POLL_WAIT_S=10.0,
        SCHEMA_CHECK_WAIT_S=20.0,
        JOINT_MIN_PROVIDERS=int(os.environ.get("SANDBOX_JOINT_MIN_PROVIDERS", "3")),
        # Witnesses as JSON: [{"url": "http://…", "vkey": "name+id+key"}, …]. With a quorum
        # k > 0 a result is released only under a checkpoint k of them cosigned.
        WITNESSES=json.loads(os.environ.get("SANDBOX_WITNESSES", "[]")),
        WITNESS_QUORUM=int(os.environ.get("SANDBOX_WITNESS_QUORUM", "0")),
    )
    if test_config is not None:
        app.config.from_mapping(test_config)
    _check_config(app)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)

    # Imported here, not at the top: the requester's client (sandbox.client, sandbox.sdk)
    # lives in this package and must not pull in the server's modules.
    from sandbox import auth, db, http_errors
    from sandbox.api import access, agents, catalog, jobs, joint, ledger_api, parties

    engine = make_engine(app.config["DATABASE_URL"])
    readers = None
    if app.config["DATABASE_URL"].startswith("sqlite"):
        reader_engine = make_engine(app.config["DATABASE_URL"], read_only=True)
        readers = make_session_factory(reader_engine)
    db.init_app(app, engine, make_session_factory(engine), readers)
    http_errors.register(app)
    auth.register(app)
    for bp in (parties.bp, catalog.bp, access.bp, jobs.bp, joint.bp, agents.bp,
               ledger_api.bp):
        app.register_blueprint(bp)
    return app


def _check_config(app: Flask) -> None:
    """Refuse to start with a quorum the configured witnesses cannot meet (fail closed)."""
    ws, k = app.config["WITNESSES"], app.config["WITNESS_QUORUM"]
    if not isinstance(ws, list) or not all(
            isinstance(w, dict) and set(w) == {"url", "vkey"} for w in ws):
        raise ValueError("SANDBOX_WITNESSES must be a JSON list of {\"url\", \"vkey\"}")
    if not isinstance(k, int) or not 0 <= k <= len(ws):
        raise ValueError(f"SANDBOX_WITNESS_QUORUM must be between 0 and {len(ws)}")
    # With one provider the "joint" aggregate is its exact figures; with two, each provider
    # can subtract its own share. Three is the default; two is allowed, knowingly.
    if int(app.config["JOINT_MIN_PROVIDERS"]) < 2:
        raise ValueError("SANDBOX_JOINT_MIN_PROVIDERS must be at least 2")
