"""Fixtures of the web UI tests: parties with people signed in through the web pages."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask

from tests.api.helpers import register
from tests.conftest import Actor
from tests.web.browser import Page
from tests.web.helpers import Browser, web_person


@dataclass
class World:
    provider: Actor
    other_provider: Actor
    requester: Actor
    other_requester: Actor
    regulator: Actor
    agent: Actor
    dataset: dict[str, Any]


@pytest.fixture
def world(make_party: Any, make_agent: Any) -> World:
    provider, other = make_party("provider"), make_party("provider")
    agent = make_agent(provider)
    return World(provider, other, make_party("requester"), make_party("requester"),
                 make_party("regulator"), agent, register(provider, agent))


@pytest.fixture
def person(app: Flask, admin: Actor) -> Any:
    def make(party: Actor, *roles: str) -> Browser:
        return web_person(app, admin, party, *roles)

    return make


@pytest.fixture
def pages() -> Iterator[list[Page]]:
    """Browser windows a test opened; closed after it."""
    opened: list[Page] = []
    yield opened
    for p in opened:
        p.close()
