"""The resilience suite runs its agent processes under each runtime (tests.docker.runtimes)."""

from __future__ import annotations

import pytest

from containers.engine import docker_client
from tests.docker.runtimes import RUNTIMES, require_runtime


@pytest.fixture(scope="session", params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> str:
    client = docker_client()
    try:
        return require_runtime(client, request.param)
    finally:
        client.close()
