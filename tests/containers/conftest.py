"""Fixtures for the executor tests: a real engine, the runner image, leftovers removed by label.

Every container these tests create carries the ``data-sandbox-test.job`` label (our executor
is built with ``label_prefix="data-sandbox-test"``) and ``data-sandbox.test=1``; the /out
tmpfs mounts are named ``data-sandbox-test-out-<token>``, and the stages the binds come from
say ``data-sandbox-test`` in their owner file. The fixtures remove all three before and after
the session and after every test, so an interrupted run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import subprocess
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from containers import stage
from containers.engine import docker_client
from containers.executor import DockerExecutor, Limits, RunSpec
from containers.image import RunnerImage, ensure_runner_image
from tests.docker.runtimes import RUNTIMES, require_runtime

TEST_PREFIX = "data-sandbox-test"
TEST_LABEL = "data-sandbox.test"

SpecFactory = Callable[..., RunSpec]


def remove_leftovers(client: docker.DockerClient) -> None:
    for label in (f"{TEST_PREFIX}.job", f"{TEST_PREFIX}.warm"):
        for c in client.containers.list(all=True, filters={"label": label}):
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)
    with open("/proc/self/mountinfo") as f:
        points = [
            line.split()[4]
            for line in f
            if line.partition(" - ")[2].split()[1:2] != []
            and line.partition(" - ")[2].split()[1].startswith(
                (f"{TEST_PREFIX}-out-", f"{TEST_PREFIX}-warm-out-"))
        ]
    for p in reversed(points):
        subprocess.run(["umount", "-l", p], check=False, capture_output=True)
    for st in stage.stages(stage.STAGE_ROOT):
        if st.owner().get("prefix") == TEST_PREFIX:
            stage.remove(st)


@pytest.fixture(scope="session")
def client() -> Iterator[docker.DockerClient]:
    c = docker_client()
    remove_leftovers(c)
    yield c
    remove_leftovers(c)
    c.close()


@pytest.fixture(scope="session")
def runner_image(client: docker.DockerClient) -> RunnerImage:
    return ensure_runner_image(client)


@pytest.fixture(scope="session", params=RUNTIMES)
def runtime(request: pytest.FixtureRequest, client: docker.DockerClient) -> str:
    """Every test using the executor runs once under runc and once under gVisor (runsc)."""
    return require_runtime(client, request.param)


@pytest.fixture
def executor(client: docker.DockerClient, runtime: str) -> Iterator[DockerExecutor]:
    yield DockerExecutor(client, label_prefix=TEST_PREFIX, runtime=runtime,
                         extra_labels={TEST_LABEL: "1"})
    remove_leftovers(client)


@pytest.fixture
def make_spec(tmp_path: Path, runner_image: RunnerImage) -> SpecFactory:
    """make_spec(script_source, **limits) -> RunSpec with its own dirs and a fresh job id."""

    def make(script: str, *, job_id: str | None = None, **limits: float) -> RunSpec:
        jid = job_id or f"t-{uuid.uuid4().hex[:12]}"
        base = tmp_path / jid
        (base / "in").mkdir(parents=True)
        (base / "in" / "data.csv").write_text("age,cost\n30,100\n40,200\n50,300\n")
        (base / "script.py").write_text(textwrap.dedent(script))
        defaults: dict[str, float] = {"timeout_s": 60, "memory_mb": 256}
        defaults.update(limits)
        return RunSpec(
            job_id=jid, image=runner_image.tag, script_path=base / "script.py",
            input_dir=base / "in", work_dir=base / "work",
            limits=Limits(**defaults),  # type: ignore[arg-type]
        )

    return make
