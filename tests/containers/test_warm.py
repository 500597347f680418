"""Warm starts on the real engine: a container started ahead, bound to one job, used once."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from containers import mounts, stage, warm
from containers.executor import DockerExecutor, Limits, RunSpec, RunState, WarmSlot
from containers.image import RunnerImage

pytestmark = pytest.mark.docker

LIMITS = Limits(timeout_s=60, memory_mb=256)
COUNT = """\
n = sum(1 for _ in open('/in/data.csv')) - 1
open('/out/total.csv', 'w').write(f'n\\n{n}\\n')
print('counted', n)
"""


def job(slot: WarmSlot, script: str, *, timeout_s: float = 60, job_id: str | None = None,
        env: dict[str, str] | None = None) -> tuple[Path, Callable[[], RunSpec]]:
    """What the agent hands ``start_job``: the job's directory, and what writes its files
    there (the slot's warm directory by then, when the executor took it) and gives its spec."""
    jid = job_id or f"w-{uuid.uuid4().hex[:12]}"
    job_dir = slot.root / jid

    def prepare() -> RunSpec:
        for d in (job_dir / "in", job_dir / "job", job_dir / "work"):
            d.mkdir(mode=0o755, parents=True, exist_ok=True)
        (job_dir / "in" / "data.csv").write_text("age,cost\n30,100\n40,200\n50,300\n")
        (job_dir / "in" / "data.csv").chmod(0o644)
        (job_dir / "job" / "script.py").write_text(textwrap.dedent(script))
        return RunSpec(job_id=jid, image=slot.image, script_path=job_dir / "job" / "script.py",
                       input_dir=job_dir / "in", work_dir=job_dir / "work", env=env or {},
                       limits=Limits(timeout_s=timeout_s, memory_mb=LIMITS.memory_mb))

    return job_dir, prepare


def start_warm(executor: DockerExecutor, slot: WarmSlot, script: str, *,
               timeout_s: float = 60, env: dict[str, str] | None = None) -> RunSpec:
    """What the agent does: start the job, with the slot's warm container if it can."""
    job_dir, prepare = job(slot, script, timeout_s=timeout_s, env=env)
    return executor.start_job(job_dir, prepare, warm=slot)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "jobs"
    r.mkdir()
    return r


@pytest.fixture
def slot(executor: DockerExecutor, root: Path, runner_image: RunnerImage) -> WarmSlot:
    s = WarmSlot(root, runner_image.tag, LIMITS)
    executor.warm.prewarm(s)
    return s


@pytest.fixture
def warm_container(slot: WarmSlot) -> warm.WarmContainer:
    assert slot.container is not None
    return slot.container


def test_a_warm_container_runs_one_job_and_is_cleaned_up_like_a_cold_one(
        executor: DockerExecutor, slot: WarmSlot, warm_container: warm.WarmContainer) -> None:
    assert executor.list_jobs() == []  # unbound: nobody's job
    spec = start_warm(executor, slot, COUNT)
    assert slot.container is None  # the job took it
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
        executor: DockerExecutor, client: docker.DockerClient, slot: WarmSlot,
        make_spec: object) -> None:
    cold = make_spec("print(1)\n", timeout_s=60, memory_mb=256)  # type: ignore[operator]
    spec = start_warm(executor, slot, "print(1)\n")
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


def test_the_deadline_binds_a_warm_job(executor: DockerExecutor, slot: WarmSlot) -> None:
    spec = start_warm(executor, slot, "import time\ntime.sleep(60)\n", timeout_s=1)
    result = executor.wait(spec.job_id, poll_s=0.2)
    assert result.timed_out and not result.ok


def test_a_spec_that_does_not_fit_starts_cold_and_the_warm_container_goes(
        executor: DockerExecutor, client: docker.DockerClient,
        slot: WarmSlot, warm_container: warm.WarmContainer) -> None:
    spec = start_warm(executor, slot, "import os\nprint(os.environ['MODE'])\n",
                      env={"MODE": "cold"})
    result = executor.wait(spec.job_id)
    assert result.stdout == b"cold\n"
    with pytest.raises(docker.errors.NotFound):
        client.api.inspect_container(warm_container.container_id)
    assert mounts.find_out_mounts(executor.names.warm_out_source(warm_container.token)) == []


def test_a_crash_between_binding_and_trigger_is_finished_by_start(
        executor: DockerExecutor, slot: WarmSlot, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:  # the agent dies after renaming, before the trigger
        m.setattr(warm, "trigger", lambda *_, **__: True)
        spec = start_warm(executor, slot, COUNT)
    assert executor.state(spec.job_id) == RunState.RUNNING  # bound, launcher still waiting
    [(job_id, _, deadline)] = executor.list_jobs()
    assert job_id == spec.job_id and deadline == executor.deadline(spec.job_id)
    fresh = DockerExecutor(executor.client, label_prefix=executor.prefix,
                           extra_labels=executor.extra_labels)  # the restarted agent's
    fresh.start(spec)
    assert fresh.wait(spec.job_id).stdout == b"counted 3\n"
    token = fresh._get(spec.job_id).record.warm_token
    assert token is not None
    stage_job = fresh.stage_root / token / "job"
    assert not warm.trigger(stage_job, fresh.deadline(spec.job_id))  # once only


def test_the_init_ends_on_anything_but_a_time_limit(
        executor: DockerExecutor, client: docker.DockerClient,
        warm_container: warm.WarmContainer) -> None:
    (warm_container.stage.job_dir / "script.py").write_text("print('must not run')\n")
    (warm_container.stage.job_dir / warm.GO).write_text("1; rm -rf /\n")
    assert client.api.wait(warm_container.container_id, timeout=30)["StatusCode"] == 2
    assert client.api.logs(warm_container.container_id, stderr=False) == b""


def test_reset_removes_only_this_roots_unbound_warm_containers(
        executor: DockerExecutor, client: docker.DockerClient, root: Path, tmp_path: Path,
        runner_image: RunnerImage) -> None:
    other_root = tmp_path / "other-agent"
    other_root.mkdir()
    mine = executor.warm.prewarm(WarmSlot(root, runner_image.tag, LIMITS))
    theirs = executor.warm.prewarm(WarmSlot(other_root, runner_image.tag, LIMITS))
    bound = WarmSlot(root, runner_image.tag, LIMITS)
    executor.warm.prewarm(bound)
    spec = start_warm(executor, bound, COUNT)
    assert executor.warm.reset(root) == 1
    with pytest.raises(docker.errors.NotFound):
        client.api.inspect_container(mine.container_id)
    assert not mine.stage.dir.exists()
    assert mounts.find_out_mounts(executor.names.warm_out_source(mine.token)) == []
    assert client.api.inspect_container(theirs.container_id)["State"]["Running"]
    assert executor.wait(spec.job_id).ok  # a bound one is a job: left to reconciliation
    executor.warm.discard(theirs)


def test_cleanup_finds_a_bound_warm_jobs_stage_without_its_container(
        executor: DockerExecutor, client: docker.DockerClient, slot: WarmSlot,
        warm_container: warm.WarmContainer) -> None:
    spec = start_warm(executor, slot, COUNT)
    assert executor.wait(spec.job_id).ok
    client.api.remove_container(warm_container.container_id, force=True)  # gone by hand
    assert [(j, s) for j, s, _ in executor.list_jobs()] == [(spec.job_id, RunState.ABSENT)]
    executor.cleanup(spec.job_id)  # the stage's owner names the job
    assert mounts.find_out_mounts(executor.names.warm_out_source(warm_container.token)) == []
    assert not warm_container.stage.dir.exists()
    assert executor.list_jobs() == []


def test_a_job_that_fails_to_prepare_leaves_no_warm_container(
        executor: DockerExecutor, client: docker.DockerClient, slot: WarmSlot,
        warm_container: warm.WarmContainer) -> None:
    job_dir, _ = job(slot, COUNT)

    def prepare() -> RunSpec:
        assert slot.container is None  # claimed: the job's, or removed
        raise RuntimeError("unreadable input")

    with pytest.raises(RuntimeError):
        executor.start_job(job_dir, prepare, warm=slot)
    assert slot.container is None
    with pytest.raises(docker.errors.NotFound):
        client.api.inspect_container(warm_container.container_id)
    assert mounts.find_out_mounts(executor.names.warm_out_source(warm_container.token)) == []


def test_a_job_whose_directory_exists_starts_cold_and_the_slot_keeps_its_container(
        executor: DockerExecutor, client: docker.DockerClient, slot: WarmSlot,
        warm_container: warm.WarmContainer) -> None:
    job_dir, prepare = job(slot, COUNT)
    job_dir.mkdir()
    spec = executor.start_job(job_dir, prepare, warm=slot)
    assert executor._get(spec.job_id).container.id != warm_container.container_id
    assert executor.wait(spec.job_id).stdout == b"counted 3\n"
    assert slot.container == warm_container  # untouched: ready for the next job
    assert client.api.inspect_container(warm_container.container_id)["State"]["Running"]
    executor.cleanup(spec.job_id)
    executor.warm.empty(slot)
    with pytest.raises(docker.errors.NotFound):
        client.api.inspect_container(warm_container.container_id)
    assert not warm_container.stage.dir.exists()


def test_a_warm_container_is_not_left_behind_by_a_job_that_has_a_container(
        executor: DockerExecutor, client: docker.DockerClient, slot: WarmSlot,
        warm_container: warm.WarmContainer, make_spec: object) -> None:
    cold = make_spec(COUNT)  # type: ignore[operator]
    executor.start(cold)  # the job's container exists, its directory elsewhere
    job_dir, prepare = job(slot, COUNT, job_id=cold.job_id)
    executor.start_job(job_dir, prepare, warm=slot)
    assert executor._get(cold.job_id).container.name == executor.container_name(cold.job_id)
    assert executor.wait(cold.job_id).stdout == b"counted 3\n"
    with pytest.raises(docker.errors.NotFound):
        client.api.inspect_container(warm_container.container_id)


def test_cleanup_finds_a_warm_out_left_in_the_work_dir(
        executor: DockerExecutor, client: docker.DockerClient, slot: WarmSlot,
        warm_container: warm.WarmContainer) -> None:
    spec = start_warm(executor, slot, COUNT)
    assert executor.wait(spec.job_id).ok
    client.api.remove_container(warm_container.container_id, force=True)  # gone by hand
    source = executor.names.warm_out_source(warm_container.token)
    stage.remove(warm_container.stage)  # and its stage, which named the job
    executor.cleanup(spec.job_id)
    assert mounts.find_out_mounts(source) != []  # nothing names it any more but its place
    executor.cleanup(spec.job_id, work_dir=spec.work_dir)
    assert mounts.find_out_mounts(source) == []
