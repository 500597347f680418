"""One embedded stack for the whole directory: real controller, real agents, real engine.

The controller runs on 127.0.0.1 (SQLite in a temporary directory); every agent is a real
:class:`containers.agent.Agent` in a thread talking HTTP to it, with a real
:class:`DockerExecutor`. Tests drive it only through the HTTP API, with
:class:`sandbox.client.Client`, like a provider, a requester and a regulator would.

Cleanup: the agents' executors add ``data-sandbox.test=1`` and ``data-sandbox.suite=docker``
to every container they create. The agent removes its container after each job; at teardown
(and at start, for an interrupted earlier run) every container carrying both labels is
removed and its /out tmpfs unmounted with ``DockerExecutor.cleanup``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from containers.agent import Agent, AgentConfig
from containers.engine import docker_client
from containers.executor import DockerExecutor, Limits
from containers.image import ensure_runner_image
from sandbox import create_app
from sandbox.bootstrap import create_first_admin
from sandbox.client import Client
from sandbox.embedded import EmbeddedStack
from sandbox.migrate import upgrade
from tests.docker.helpers import TEST_LABELS, TIGHT, Provider, Stack, remove_labelled


def remove_leftovers(client: docker.DockerClient) -> None:
    remove_labelled(client, TEST_LABELS)


def start_agent(stack: EmbeddedStack, token: str, root: Path, work_root: Path, image: str,
                limits: Limits, stop: threading.Event) -> threading.Thread:
    """Like ``EmbeddedStack.start_agent``, but the executor labels its containers as ours."""
    executor = DockerExecutor(docker_client(), extra_labels=TEST_LABELS)
    agent = Agent(AgentConfig(controller_url=stack.url, token=token, data_roots=[root],
                              work_root=work_root, image=image, limits=limits,
                              poll_wait_s=0.5), executor)
    t = threading.Thread(target=agent.serve, args=(stop,), name=f"agent-{root.name}",
                         daemon=True)
    t.start()
    return t


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[docker.DockerClient]:
    client = docker_client()
    remove_leftovers(client)
    yield client
    remove_leftovers(client)
    client.close()


@pytest.fixture(scope="session")
def stack(docker_engine: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("e2e")
    url = f"sqlite:///{work / 'sandbox.db'}"
    upgrade(url)
    app = create_app({"DATABASE_URL": url, "LOG_KEY_FILE": str(work / "log.key"),
                      "LOG_ORIGIN": "test.data-sandbox.local/log", "AGENT_POLL_WAIT_S": 0.5,
                      "SCHEMA_CHECK_WAIT_S": 30.0})
    admin_token = create_first_admin(app, "operator").token
    embedded = EmbeddedStack(app).start()
    image = ensure_runner_image(docker_engine).tag
    admin = Client(embedded.url, admin_token)
    requester = admin.post("/parties", {"name": "Harbor Mutual", "role": "requester"})
    regulator = admin.post("/parties", {"name": "Data Bureau", "role": "regulator"})
    s = Stack(embedded, admin, Client(embedded.url, requester["token"]),
              Client(embedded.url, regulator["token"]), image, work)
    stop = threading.Event()
    agents = []
    for name, limits in (("main", Limits(timeout_s=120)), ("tight", TIGHT)):
        code = f"H-{name.upper()}-{uuid.uuid4().hex[:6]}"
        p = admin.post("/parties", {"name": f"{name} hospital", "role": "provider",
                                    "code": code})
        root = work / "domains" / name
        root.mkdir(parents=True)
        a = admin.post("/agents", {"name": f"{name} agent", "providers": [p["id"]]})
        agents.append(start_agent(embedded, a["token"], root, work / "jobs" / name, image,
                                  limits, stop))
        s.providers[name] = Provider(f"{name} hospital", code, p["id"],
                                     Client(embedded.url, p["token"]), root)
    try:
        yield s
    finally:
        stop.set()
        for t in agents:
            t.join(timeout=30)
        embedded.stop()
