"""Warm starts on the real engine: a container started ahead, bound to one job, used once."""

from __future__ import annotations

import os
import textwrap
import uuid
from pathlib import Path

import docker
import pytest

from containers import mounts, warm
from containers.executor import DockerExecutor, Limits, RunSpec, RunState
from containers.image import RunnerImage

pytestmark = pytest.mark.docker

LIMITS = Limits(timeout_s=60, memory_mb=256)
COUNT = """\
n = sum(1 for _ in open('/in/data.csv')) - 1
open('/out/total.csv', 'w').write(f'n\\n{n}\\n')
print('counted', n)
"""


def bind_job(w: warm.WarmContainer, script: str, *, timeout_s: float = 60,
             job_id: str | None = None) -> RunSpec:
    """What the agent does before ``start``: the warm dir becomes the job's, files go in."""
    jid = job_id or f"w-{uuid.uuid4().hex[:12]}"
    job_dir = w.root / jid
    w.dir.rename(job_dir)
    (job_dir / "in" / "data.csv").write_text("age,cost\n30,100\n40,200\n50,300\n")
    (job_dir / "in" / "data.csv").chmod(0o644)
    (job_dir / "job" / "script.py").write_text(textwrap.dedent(script))
    return RunSpec(job_id=jid, image=w.image, script_path=job_dir / "job" / "script.py",
                   input_dir=job_dir / "in", work_dir=job_dir / "work",
                   limits=Limits(timeout_s=timeout_s, memory_mb=LIMITS.memory_mb))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "jobs"
    r.mkdir()
    return r


@pytest.fixture
def warm_container(executor: DockerExecutor, root: Path, runner_image: RunnerImage
                   ) -> warm.WarmContainer:
    return warm.prewarm(executor, root, runner_image.tag, LIMITS)


def test_a_warm_container_runs_one_job_and_is_cleaned_up_like_a_cold_one(
        executor: DockerExecutor, warm_container: warm.WarmContainer) -> None:
    assert executor.list_jobs() == []  # unbound: nobody's job
    spec = bind_job(warm_container, COUNT)
    executor.start(spec, warm_container)
    assert executor._get(spec.job_id).container.id == warm_container.container_id  # not cold
    result = executor.wait(spec.job_id)
    assert result.ok, result
    assert result.stdout == b"counted 3\n"
    assert (result.out_dir / "total.csv").read_text() == "n\n3\n"
    assert result.out_dir == spec.work_dir / "out"
    assert [j for j, _, _ in executor.list_jobs()] == [spec.job_id]
    assert executor.state(spec.job_id) == RunState.EXITED
    executor.start(spec)  # idempotent: an exited job is not started again
    assert executor.wait(spec.job_id).stdout == b"counted 3\n"
    executor.cleanup(spec.job_id)
    assert executor.state(spec.job_id) == RunState.ABSENT
    assert mounts.find_out_mounts(executor.names.warm_out_source(warm_container.token)) == []


def test_warm_and_cold_containers_have_the_same_hardening(
        executor: DockerExecutor, client: docker.DockerClient,
        warm_container: warm.WarmContainer, make_spec: object) -> None:
    spec = bind_job(warm_container, "print(1)\n")
    cold = make_spec("print(1)\n", timeout_s=60, memory_mb=256)  # type: ignore[operator]
    executor.start(spec, warm_container)
    executor.start(cold)
    hot_c = client.api.inspect_container(executor.container_name(spec.job_id))
    cold_c = client.api.inspect_container(executor.container_name(cold.job_id))
    keys = ("CapDrop", "CapAdd", "ReadonlyRootfs", "NetworkMode", "SecurityOpt", "PidsLimit",
            "Memory", "MemorySwap", "NanoCpus", "Ulimits", "Tmpfs", "Init", "IpcMode",
            "ShmSize", "Privileged", "LogConfig", "OomScoreAdj", "RestartPolicy")
    assert {k: hot_c["HostConfig"][k] for k in keys} == {k: cold_c["HostConfig"][k] for k in keys}
    assert hot_c["Config"]["User"] == cold_c["Config"]["User"] == "10001:10001"
    mounts = {m["Destination"]: m["RW"] for m in hot_c["Mounts"]}
    assert mounts == {"/in": False, "/job": False, "/etc/resolv.conf": False, "/out": True}
    assert executor.wait(spec.job_id).ok


def test_the_deadline_binds_a_warm_job(executor: DockerExecutor,
                                       warm_container: warm.WarmContainer) -> None:
    spec = bind_job(warm_container, "import time\ntime.sleep(60)\n", timeout_s=1)
    executor.start(spec, warm_container)
    result = executor.wait(spec.job_id, poll_s=0.2)
    assert result.timed_out and not result.ok


def test_a_spec_that_does_not_fit_starts_cold_and_the_warm_container_goes(
        executor: DockerExecutor, client: docker.DockerClient,
        warm_container: warm.WarmContainer) -> None:
    spec = bind_job(warm_container, "import os\nprint(os.environ['MODE'])\n")
    spec = RunSpec(**{**spec.__dict__, "env": {"MODE": "cold"}})
    executor.start(spec, warm_container)
    result = executor.wait(spec.job_id)
    assert result.stdout == b"cold\n"
    with pytest.raises(docker.errors.NotFound):
        client.api.inspect_container(warm_container.container_id)
    assert mounts.find_out_mounts(executor.names.warm_out_source(warm_container.token)) == []


def test_a_crash_between_binding_and_trigger_is_finished_by_start(
        executor: DockerExecutor, warm_container: warm.WarmContainer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    spec = bind_job(warm_container, COUNT)
    with monkeypatch.context() as m:  # the agent dies after renaming, before the trigger
        m.setattr(warm, "trigger", lambda *_, **__: True)
        executor.start(spec, warm_container)
    assert executor.state(spec.job_id) == RunState.RUNNING  # bound, launcher still waiting
    [(job_id, _, deadline)] = executor.list_jobs()
    assert job_id == spec.job_id and deadline == executor.deadline(spec.job_id)
    fresh = DockerExecutor(executor.client, label_prefix=executor.prefix,
                           extra_labels=executor.extra_labels)  # the restarted agent's
    fresh.start(spec)
    assert fresh.wait(spec.job_id).stdout == b"counted 3\n"
    assert not warm.trigger(spec.work_dir.parent, fresh.deadline(spec.job_id))  # once only


def test_the_launcher_ends_on_anything_but_a_time_limit(
        executor: DockerExecutor, client: docker.DockerClient,
        warm_container: warm.WarmContainer) -> None:
    (warm_container.dir / "job" / "script.py").write_text("print('must not run')\n")
    fd = os.open(warm_container.dir / "job" / warm.FIFO, os.O_WRONLY)  # waits for the reader
    os.write(fd, b"1; rm -rf /\n")
    os.close(fd)
    assert client.api.wait(warm_container.container_id, timeout=30)["StatusCode"] == 2
    assert client.api.logs(warm_container.container_id, stderr=False) == b""


def test_reset_removes_only_this_roots_unbound_warm_containers(
        executor: DockerExecutor, client: docker.DockerClient, root: Path, tmp_path: Path,
        runner_image: RunnerImage) -> None:
    other_root = tmp_path / "other-agent"
    other_root.mkdir()
    mine = warm.prewarm(executor, root, runner_image.tag, LIMITS)
    theirs = warm.prewarm(executor, other_root, runner_image.tag, LIMITS)
    bound = warm.prewarm(executor, root, runner_image.tag, LIMITS)
    spec = bind_job(bound, COUNT)
    executor.start(spec, bound)
    assert warm.reset(executor, root) == 1
    with pytest.raises(docker.errors.NotFound):
        client.api.inspect_container(mine.container_id)
    assert not mine.dir.exists()
    assert mounts.find_out_mounts(executor.names.warm_out_source(mine.token)) == []
    assert client.api.inspect_container(theirs.container_id)["State"]["Running"]
    assert executor.wait(spec.job_id).ok  # a bound one is a job: left to reconciliation
    warm.discard(executor, theirs)
