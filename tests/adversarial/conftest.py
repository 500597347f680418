"""One embedded stack for the adversarial suite: real controller, real agents, real engine.

Built like ``tests/docker/conftest.py`` (same helpers, same HTTP-only driving), but with its
own container labels (``data-sandbox.suite=adversarial``) so that its start/teardown cleanup
never touches the containers of a ``tests/docker`` session running at the same time, and
with the agents this suite needs:

- ``main``: default limits but a 60 s timeout, two slots (one test runs two jobs side by
  side: a victim job and the job that goes looking for the victim's files);
- ``tight``: 5 s, 128 MB, /tmp 16 MB, /out 8 MB, one slot: resource attacks end quickly.

The stack is parametrized by runtime (``tests.docker.runtimes``): the whole suite runs
against runc agents, then against gVisor (runsc) agents. Where the sandbox legitimately
differs under gVisor, a test says so next to its expectation.

Every token the stack issued (admin, parties, agents) is kept in ``Adversary.tokens``: the
environment tests check that none of them is visible inside a job.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest

from containers.engine import docker_client
from containers.executor import Limits
from sandbox.client import Client
from tests.docker.helpers import (
    Stack,
    Target,
    add_hospital,
    boot_stack,
    make_target,
    remove_labelled,
)
from tests.docker.runtimes import RUNTIMES, require_runtime

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

    @property
    def runtime(self) -> str:
        return self.stack.runtime

    def job_dir(self, agent: str, job_id: str) -> Path:
        """Host path of a job's directory in an agent's work root (see containers/jobdir)."""
        return self.stack.work / "jobs" / agent / job_id


def remove_ours(client: docker.DockerClient) -> None:
    remove_labelled(client, LABELS)


def _token(client: Client) -> str:
    header = str(client.http.headers["Authorization"])
    return header.removeprefix("Bearer ")


@pytest.fixture(scope="session", params=RUNTIMES)
def adversary(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[Adversary]:
    engine = docker_client()
    runtime = require_runtime(engine, request.param)
    remove_ours(engine)
    s, tokens = boot_stack(tmp_path_factory.mktemp(f"adversarial-{runtime}"), engine, runtime)
    try:
        for name, limits, slots in (("main", MAIN_LIMITS, 2), ("tight", TIGHT_LIMITS, 1)):
            code = f"H-ADV-{name.upper()}-{uuid.uuid4().hex[:6]}"
            tokens += add_hospital(s, name, code, limits, LABELS, slots)
        assert all(_token(c) in tokens for c in (s.admin, s.requester, s.regulator))
        adv = Adversary(s, make_target(s, "main", "attacked.csv", 41, max_runs=MAX_RUNS),
                        make_target(s, "main", "victim.csv", 42, max_runs=MAX_RUNS),
                        make_target(s, "tight", "tight.csv", 43, max_runs=MAX_RUNS), tokens)
        yield adv
    finally:
        s.stack.stop()
        remove_ours(engine)
        engine.close()
