"""Bearer-token authentication and role checks for views."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from flask import g, request

from authz.models import Agent, Party
from authz.parties import authenticate
from compute.errors import Forbidden, InvalidInput, Unauthenticated
from sandbox import db

P = ParamSpec("P")
R = TypeVar("R")


def _caller() -> Party | Agent:
    if "caller" not in g:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("missing bearer token")
        g.caller = authenticate(db.ctx(), token.strip())
    caller: Party | Agent = g.caller
    return caller


def party() -> Party:
    c = _caller()
    if not isinstance(c, Party):
        raise Forbidden("agents may only use the agent API")
    return c


def agent() -> Agent:
    c = _caller()
    if not isinstance(c, Agent):
        raise Forbidden("only agents may use the agent API")
    return c


def roles(*allowed: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Require a party token whose role is one of ``allowed``."""

    def deco(view: Callable[P, R]) -> Callable[P, R]:
        @wraps(view)
        def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
            if party().role not in allowed:
                raise Forbidden(f"requires role {' or '.join(allowed)}")
            return view(*args, **kwargs)

        return wrapped

    return deco


def agent_only(view: Callable[P, R]) -> Callable[P, R]:
    @wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        agent()
        return view(*args, **kwargs)

    return wrapped


def body() -> object:
    """The JSON body; malformed or non-JSON bodies are a 400 naming the rule."""
    if not request.is_json:
        raise InvalidInput("body", "Content-Type must be application/json")
    try:
        data = request.get_json(silent=True)
    except RecursionError:
        raise InvalidInput("body", "JSON nested too deeply") from None
    if data is None:
        raise InvalidInput("body", "must be well-formed JSON")
    return data
