"""What every ``sandbox`` command shares: the client from the global options, and printing
an answer. An API error is turned into a message and what to do next by the command
group (:class:`sandbox.cli_support.SandboxGroup`), for every command alike."""

from __future__ import annotations

from typing import Any

from sandbox.cli_support import client as api_client
from sandbox.cli_support import print_json as show

__all__ = ["api_client", "call", "show"]


def call(fn: Any, *args: Any, **params: Any) -> None:
    show(fn(*args, **params))
