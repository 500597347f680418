"""``sandbox serve``: the controller under gunicorn (threaded workers, keep-alive, TLS).

The master process checks the settings and builds the app once before forking, so that
a bad setting, an unreadable key or a database URL without a driver stops the start
with its reason instead of a loop of workers failing to boot. Each worker then builds
its own app (engines are never shared across a fork). Background signing runs in one
process only: see sandbox.leader.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
from pathlib import Path
from typing import Any

import gunicorn.glogging
import gunicorn.http.wsgi
from flask import Flask
from gunicorn.app.base import BaseApplication

from sandbox import create_app, db, logging_setup
from sandbox.edge import SERVER
from sandbox.settings import Settings, unknown_variables

log_ = logging.getLogger("sandbox.server")


class ControllerServer(BaseApplication):  # type: ignore[misc]  # gunicorn is untyped
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        # gunicorn names itself in a Server header of its own, which the app cannot
        # replace (a second one would be sent): the name is all it says, not a version.
        gunicorn.http.wsgi.SERVER = SERVER

    def load(self) -> Flask:
        return create_app()


class _Logger(gunicorn.glogging.Logger):  # type: ignore[misc]  # gunicorn is untyped
    # The app writes its own access line (sandbox.observability). gunicorn's counts as on
    # whenever a logging configuration is given, and would then be built for every
    # request (its fields, every request and response header) only to be dropped by the
    # gunicorn.access logger's level.
    access_log_enabled = False


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _child_exit(_server: Any, worker: Any) -> None:
    # imported here: only once PROMETHEUS_MULTIPROC_DIR is set (see prepare_metrics_dir)
    from prometheus_client import multiprocess

    # A dead worker's live gauges (the checkpointer leader) no longer count.
    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _post_fork(server: Any, _worker: Any) -> None:
    """A worker dies with its master. Killed with SIGKILL, the master cannot stop its
    workers, and they would go on serving (a long poll keeps them busy for seconds)
    while a restarted controller finds its port taken. prctl(2) PR_SET_PDEATHSIG."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The master died between fork and prctl: the worker was handed to another
        # parent. Compared with the master's pid, not with 1: in a container the master
        # is pid 1 itself.
        if os.getppid() != server.pid:
            os._exit(1)


def _when_ready(server: Any) -> None:
    log_.info("listening", extra={"bind": list(server.cfg.bind), "workers": server.cfg.workers,
                                  "threads": server.cfg.threads})


def options(s: Settings, *, host: str, port: int, workers: int, threads: int
            ) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "bind": [_bind(host, port)],
        "workers": workers,
        # Threads serve the agents' long polls side by side and keep connections alive
        # (gunicorn's sync worker closes every connection after one request).
        "worker_class": "gthread",
        "threads": threads,
        "keepalive": s.keepalive_s,
        "timeout": s.worker_timeout_s,
        "graceful_timeout": s.graceful_timeout_s,
        "preload_app": False,
        "proc_name": "data-sandbox",
        # The app writes one JSON line per request; gunicorn's own lines are JSON too.
        "accesslog": None,
        "logger_class": _Logger,
        "errorlog": "-",
        "loglevel": s.log_level.lower(),
        "logconfig_dict": logging_setup.dict_config(s.log_level),
        # The client's address and scheme come from proxies only as SANDBOX_PROXY_HOPS
        # says (sandbox.edge); gunicorn itself trusts no forwarded header.
        "forwarded_allow_ips": "",
        "control_socket_disable": True,
        "child_exit": _child_exit,
        "post_fork": _post_fork,
        "when_ready": _when_ready,
    }
    if s.tls_cert_file is not None and s.tls_key_file is not None:
        opts["certfile"] = str(s.tls_cert_file)
        opts["keyfile"] = str(s.tls_key_file)
    return opts


def prepare_metrics_dir(path: Path) -> None:
    """Give the workers a clean directory for their counters (prometheus-client
    multiprocess mode); set before any metric exists in this process."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


def serve(s: Settings, *, host: str, port: int, workers: int, threads: int) -> None:
    logging_setup.configure(s.log_level)
    for name in unknown_variables():
        log_.warning("ignored environment variable (not a setting)", extra={"variable": name})
    prepare_metrics_dir(s.effective_metrics_dir)
    # Fail at start, in the master, on whatever building the app would fail on; this also
    # creates the log key file of a new instance once, not in racing workers.
    probe = create_app({"START_CHECKPOINTER": False})
    db.dispose(probe)
    ControllerServer(options(s, host=host, port=port, workers=workers,
                             threads=threads)).run()
