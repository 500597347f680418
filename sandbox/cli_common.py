"""What every ``sandbox`` command shares: the client from the global options, and printing
an answer or an API error."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from sandbox.client import ApiError, Client


def show(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def api_client(ctx: click.Context) -> Client:
    return Client(ctx.obj["url"], ctx.obj["token"])


def call(fn: Any, *args: Any) -> None:
    try:
        show(fn(*args))
    except ApiError as e:
        show(e.body)
        sys.exit(1)
