"""The controller: a Flask application factory in the style of Flask's tutorial."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Settings come from the environment (sandbox.settings); ``test_config`` overrides."""
    # Imported here, not at the top: the requester's client (sandbox.client, sandbox.sdk)
    # lives in this package and must not pull in the server's modules, and `sandbox serve`
    # must choose prometheus-client's multiprocess mode before the metrics load. Flask and
    # the database layer too: the client imports neither.
    from flask import Flask

    from authz import sealed
    from ledger.db import make_engine, make_session_factory
    from sandbox import auth, db, edge, health, http_errors, leader, observability, settings
    from sandbox.api import (
        access,
        agent_admin,
        agents,
        catalog,
        contract,
        jobs,
        joint,
        ledger_api,
        ops,
        parties,
        psi,
        reviews,
    )
    from sandbox.api import oidc as oidc_api
    from sandbox.api import people as people_api
    from sandbox.metrics import Metrics, ObservedLog
    from sandbox.sealing_keys import load_keyring
    from sandbox.web import init_app as init_web

    loaded = settings.load_settings()
    app = Flask(__name__, instance_path=str(loaded.instance))
    app.config.from_mapping(settings.flask_config(loaded))
    if test_config is not None:
        app.config.from_mapping(test_config)
    _check_config(app)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)

    url = app.config["DATABASE_URL"]
    # An in-memory SQLite database has a pool of its own kind, without these.
    pool: dict[str, Any] = {} if ":memory:" in url or url.rstrip("/") == "sqlite:" else {
        "pool_size": int(app.config["DB_POOL_SIZE"]),
        "max_overflow": int(app.config["DB_MAX_OVERFLOW"])}
    # Sealed columns are opened with this keyring, attached to each engine (authz/sealed.py).
    keys = load_keyring(app.config, app.instance_path)
    app.extensions["sandbox_sealing"] = keys
    engine = make_engine(url, **pool)
    sealed.attach(engine, keys)
    readers = None
    if url.startswith(("sqlite", "postgresql")):
        reader_engine = make_engine(url, read_only=True, **pool)
        sealed.attach(reader_engine, keys)
        readers = make_session_factory(reader_engine)
    sessions = make_session_factory(engine)
    metrics = Metrics(witnesses=len(app.config["WITNESSES"]))
    app.extensions["sandbox_metrics"] = metrics
    app.extensions["sandbox_probe"] = health.probe_engine(url)
    app.extensions["sandbox_schema"] = health.schema_head()
    leadership = leader.leadership_for(engine, url, float(app.config["LEADER_RETRY_S"]),
                                       metrics.leader_changed)
    db.init_app(app, engine, sessions, readers, leadership=leadership, log_type=ObservedLog)
    metrics.attach_database(readers or sessions)
    metrics.count_commits(sessions)
    # Hooks run in this order before a request (and the reverse after it): the request
    # id and clock first, then the edge's limits, then admission and authentication.
    observability.init_app(app, metrics)
    edge.init_app(app)
    http_errors.register(app)
    auth.register(app)
    for bp in (parties.bp, catalog.bp, access.bp, jobs.bp, joint.bp, psi.bp, agents.bp,
               ledger_api.bp, ops.bp, people_api.bp, reviews.bp, contract.bp,
               oidc_api.bp, agent_admin.bp):
        app.register_blueprint(bp)
    init_web(app)
    return app


def _check_config(app: Flask) -> None:
    """Refuse to start with a quorum the configured witnesses cannot meet (fail closed).

    The environment is checked by sandbox.settings; this checks what a caller of
    ``create_app`` passed in as well.
    """
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
