"""Structured logs: one JSON object per line, on standard error.

Only what a call site passes as ``extra`` (identifiers, routes, counts) joins the line;
no request body, header or token is ever passed. ``sandbox serve`` configures the root
logger and gunicorn's own loggers with this formatter; tests and the embedded demo
leave logging as Python sets it up.
"""

from __future__ import annotations

import json
import logging
import logging.config
import sys
from datetime import UTC, datetime
from typing import Any

from flask import g, has_request_context

# The attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if "request_id" not in line and has_request_context() and g.get("request_id"):
            # A line written while serving a request names it (an unhandled error's too).
            line["request_id"] = g.request_id
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def dict_config(level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` (gunicorn's ``logconfig_dict`` too): every logger
    to standard error as JSON; gunicorn's access log off (the app writes its own)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                                "stream": "ext://sys.stderr"}},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
        },
    }


def configure(level: str) -> None:
    logging.config.dictConfig(dict_config(level))
    # Anything printed by a library before this point stays plain; nothing after.
    sys.stderr.flush()
