"""One embedded stack for the adversarial suite: real controller, real agents, real engine.

Built like ``tests/docker/conftest.py`` (same helpers, same HTTP-only driving), but with its
own container labels (``data-sandbox.suite=adversarial``) so that its start/teardown cleanup
never touches the containers of a ``tests/docker`` session running at the same time, and
with the agents this suite needs:

- ``main``: default limits but a 60 s timeout, two slots (one test runs two jobs side by
  side: a victim job and the job that goes looking for the victim's files);
- ``tight``: 5 s, 128 MB, /tmp 16 MB, /out 8 MB, one slot: resource attacks end quickly.

Every token the stack issued (admin, parties, agents) is kept in ``Adversary.tokens``: the
environment tests check that none of them is visible inside a job.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pandas as pd
import pytest

from containers.engine import docker_client
from containers.executor import Limits
from containers.image import ensure_runner_image
from sandbox import create_app
from sandbox.bootstrap import create_first_admin
from sandbox.client import Client
from sandbox.embedded import EmbeddedStack
from sandbox.migrate import upgrade
from tests.docker.helpers import (
    COLUMNS,
    Provider,
    Stack,
    grant,
    register,
    remove_labelled,
    write_table,
)
from tests.docker.test_attacks import Target

LABELS = {"data-sandbox.test": "1", "data-sandbox.suite": "adversarial"}
MAIN_LIMITS = Limits(timeout_s=60)
TIGHT_LIMITS = Limits(timeout_s=5, memory_mb=128, tmpfs_mb=16, out_mb=8)
#: Runs each permit allows: every test submits at least one job, some two or three.
MAX_RUNS = 500


@dataclass
class Adversary:
    stack: Stack
    main: Target  # served by the "main" agent
    victim: Target  # a second dataset of the "main" provider (the other-job test)
    tight: Target  # served by the "tight" agent
    tokens: list[str] = field(default_factory=list)  # every credential the stack issued

    def job_dir(self, agent: str, job_id: str) -> Path:
        """Host path of a job's directory in an agent's work root (see containers/agent)."""
        return self.stack.work / "jobs" / agent / job_id


def remove_ours(client: docker.DockerClient) -> None:
    remove_labelled(client, LABELS)


def make_target(stack: Stack, which: str, file: str, seed: int) -> Target:
    """Register ``file`` for provider ``which``; the requester gets a permit on COLUMNS."""
    p = stack.providers[which]
    source = write_table(p.root, file, seed=seed)
    status, ds = register(p, file)
    assert status == 201, ds
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    # Distinctive values (unique costs, patient numbers) that must never reach the requester.
    values = set(frame["cost"]) | {f"{float(c):.2f}" for c in frame["cost"]}
    values |= set(frame["patient_id"])
    permit = grant(stack, p, ds["id"], COLUMNS, max_runs=MAX_RUNS)
    return Target(p, source, ds["id"], permit, frozenset(values))


def _token(client: Client) -> str:
    header = str(client.http.headers["Authorization"])
    return header.removeprefix("Bearer ")


@pytest.fixture(scope="session")
def adversary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Adversary]:
    engine = docker_client()
    remove_ours(engine)
    work = tmp_path_factory.mktemp("adversarial")
    url = f"sqlite:///{work / 'sandbox.db'}"
    upgrade(url)
    app = create_app({"DATABASE_URL": url, "LOG_KEY_FILE": str(work / "log.key"),
                      "LOG_ORIGIN": "test.data-sandbox.local/log", "AGENT_POLL_WAIT_S": 0.5,
                      "SCHEMA_CHECK_WAIT_S": 30.0})
    admin_token = create_first_admin(app, "operator").token
    embedded = EmbeddedStack(app).start()
    try:
        image = ensure_runner_image(engine).tag
        admin = Client(embedded.url, admin_token)
        requester = admin.post("/parties", {"name": "Harbor Mutual", "role": "requester"})
        regulator = admin.post("/parties", {"name": "Data Bureau", "role": "regulator"})
        s = Stack(embedded, admin, Client(embedded.url, requester["token"]),
                  Client(embedded.url, regulator["token"]), image, work)
        tokens = [admin_token, requester["token"], regulator["token"]]
        for name, limits, slots in (("main", MAIN_LIMITS, 2), ("tight", TIGHT_LIMITS, 1)):
            code = f"H-ADV-{name.upper()}-{uuid.uuid4().hex[:6]}"
            p = admin.post("/parties", {"name": f"{name} hospital", "role": "provider",
                                        "code": code})
            root = work / "domains" / name
            root.mkdir(parents=True)
            a = admin.post("/agents", {"name": f"{name} agent", "providers": [p["id"]]})
            tokens += [p["token"], a["token"]]
            embedded.start_agent(a["token"], [root], work / "jobs" / name, image, limits,
                                 poll_wait_s=0.5, labels=LABELS, slots=slots)
            s.providers[name] = Provider(f"{name} hospital", code, p["id"],
                                         Client(embedded.url, p["token"]), root)
        assert all(_token(c) in tokens for c in (s.admin, s.requester, s.regulator))
        adv = Adversary(s, make_target(s, "main", "attacked.csv", 41),
                        make_target(s, "main", "victim.csv", 42),
                        make_target(s, "tight", "tight.csv", 43), tokens)
        yield adv
    finally:
        embedded.stop()
        remove_ours(engine)
        engine.close()
