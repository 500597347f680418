"""The controller: a Flask application factory in the style of Flask's tutorial."""

from __future__ import annotations

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
        CHECKPOINT_INTERVAL_S=0.2,
        START_CHECKPOINTER=True,
        AGENT_POLL_WAIT_S=10.0,
        SCHEMA_CHECK_WAIT_S=20.0,
        # Release a result only once this many witnesses cosigned a checkpoint covering it.
        JOINT_MIN_PROVIDERS=3,
        WITNESSES=[],
        WITNESS_QUORUM=0,
    )
    if test_config is not None:
        app.config.from_mapping(test_config)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)

    from sandbox import db, http_errors
    from sandbox.api import access, agents, catalog, jobs, joint, ledger_api, parties

    engine = make_engine(app.config["DATABASE_URL"])
    db.init_app(app, engine, make_session_factory(engine))
    http_errors.register(app)
    for bp in (parties.bp, catalog.bp, access.bp, jobs.bp, joint.bp, agents.bp,
               ledger_api.bp):
        app.register_blueprint(bp)
    return app
