"""One embedded stack for the whole directory: real controller, real agents, real engine.

The controller runs on 127.0.0.1 (SQLite in a temporary directory); every agent is a real
:class:`containers.agent.Agent` in a thread talking HTTP to it, with a real
:class:`DockerExecutor`. Tests drive it only through the HTTP API, with
:class:`sandbox.client.Client`, like a provider, a requester and a regulator would.

Runtimes: the stack is parametrized (``tests.docker.runtimes``): every test runs against a
stack whose agents use runc, then against one whose agents use gVisor (runsc).

Cleanup: the agents' executors add ``data-sandbox.test=1`` and ``data-sandbox.suite=docker``
to every container they create. The agent removes its container after each job; at teardown
(and at start, for an interrupted earlier run) every container carrying both labels is
removed and its /out tmpfs unmounted with ``DockerExecutor.cleanup``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import docker
import pytest

from containers.engine import docker_client
from containers.executor import Limits
from tests.docker.helpers import (
    TEST_LABELS,
    TIGHT,
    Stack,
    add_hospital,
    boot_stack,
    remove_labelled,
)
from tests.docker.runtimes import RUNTIMES, require_runtime


def remove_leftovers(client: docker.DockerClient) -> None:
    remove_labelled(client, TEST_LABELS)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[docker.DockerClient]:
    client = docker_client()
    remove_leftovers(client)
    yield client
    remove_leftovers(client)
    client.close()


@pytest.fixture(scope="session", params=RUNTIMES)
def stack(request: pytest.FixtureRequest, docker_engine: docker.DockerClient,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    runtime = require_runtime(docker_engine, request.param)
    s, _ = boot_stack(tmp_path_factory.mktemp(f"e2e-{runtime}"), docker_engine, runtime)
    try:
        for name, limits in (("main", Limits(timeout_s=120)), ("tight", TIGHT)):
            add_hospital(s, name, f"H-{name.upper()}-{uuid.uuid4().hex[:6]}", limits,
                         TEST_LABELS)
        yield s
    finally:
        s.stack.stop()
