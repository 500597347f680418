"""Warm starts: a slot's next container is started before its job exists, then bound to it.

Starting a hardened container costs about 0.26 s on the reference engine under runc
(namespaces, cgroup, seccomp, mounts), and more under gVisor: more than a typical aggregate
script runs. So each agent slot keeps one container started ahead. It has exactly the
settings of a cold one (:func:`containers.hardening.settings_for`, same limits, same binds
from a stage of its own, :mod:`containers.stage`) except that its init is given no time
limit yet: it waits for the file ``/job/go`` (``containers/runner/init.py``) until it is
given one, then runs the same command a cold container runs. Nothing of the job is in the
container before it is bound, and a warm container serves one job, once: it exits with its
job and is removed by the executor's ``cleanup`` like a cold one.

:class:`WarmPool` is the executor's (``DockerExecutor.warm``); it gets what it needs from
the executor explicitly and never imports it. The agent keeps a :class:`WarmSlot` per
worker and asks the pool to fill it (:meth:`WarmPool.prewarm`), to empty it
(:meth:`WarmPool.empty`) and, at start, to remove what earlier lives left
(:meth:`WarmPool.reset`); the job itself goes through ``DockerExecutor.start_job``.

Binding, in this order, each step durable before the next (see docs/executor.md):

1. :meth:`WarmPool.claim` takes the slot's container for a job whose directory does not
   exist yet; the caller then writes the job's files into its own job directory;
2. :meth:`WarmPool.bind` marks the stage as the job's (its owner file), links the job's
   input, script and files into the stage (the container sees them at /in and /job),
   mounts the container's ``/out`` tmpfs on ``<job dir>/work/out`` too, writes
   ``<job dir>/work/deadline``, renames the container to the job's container name (the
   commit point: from then on the executor finds it as the job's container, after a
   restart too), and writes the time limit to ``go`` in the stage's ``job`` directory
   (written whole under another name, then linked: the init never reads half of it). Once
   only: a second trigger finds the file there, which means "already started".

Anything that does not fit (another image, other limits, environment variables, extra
files outside ``/job``) or fails on the way discards the warm container and the job
starts cold.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import docker
import docker.errors
import docker.types

from containers import hardening, mounts, stage
from containers.engine import engine_call
from containers.records import WARM_DEADLINE, ContainerRecord, Names
from containers.runspec import ExecutorError, Limits, RunSpec

log = logging.getLogger("data-sandbox.agent")
#: The file that gives a warm container's init its time limit (in the stage's job/, /job/go).
GO = "go"


@dataclass(frozen=True)
class WarmContainer:
    token: str  # also its stage's
    container_id: str
    root: Path  # the agent's work root (the job's directory goes there)
    image: str
    limits: Limits
    stage_root: Path

    @property
    def stage(self) -> stage.Stage:
        return stage.Stage(self.stage_root / self.token)


class WarmSlot:
    """Where one agent worker keeps its next container: filled by :meth:`WarmPool.prewarm`,
    taken by the next job whose directory it can become (``DockerExecutor.start_job``),
    emptied by :meth:`WarmPool.empty`. One worker uses it, from one thread."""

    def __init__(self, root: Path, image: str, limits: Limits) -> None:
        self.root = root  # the agent's work root
        self.image = image
        self.limits = limits
        self.container: WarmContainer | None = None


class WarmPool:
    """The executor's warm containers. ``create_and_start`` is the executor's own (its
    engine checks included); ``runtime`` and ``extra_labels`` are the executor's too, so a
    warm container is created exactly as a cold one would be.

    For the agent: :meth:`prewarm`, :meth:`empty`, :meth:`reset`. For the executor:
    :meth:`claim`, :meth:`bind`, :meth:`resume`, :meth:`discard`, :meth:`unmount_left`.
    """

    def __init__(self, client: docker.DockerClient, names: Names, *,
                 extra_labels: Mapping[str, str], runtime: str | None, stage_root: Path,
                 create_and_start: Callable[[dict[str, Any], str], str]) -> None:
        self.client = client
        self.names = names
        self.extra_labels = dict(extra_labels)
        self.runtime = runtime
        self.stage_root = stage_root
        self.create_and_start = create_and_start

    def prewarm(self, slot: WarmSlot) -> WarmContainer:
        """The slot's container: the one it holds, else one started now."""
        if slot.container is None:
            slot.container = prewarm(self, slot.root, slot.image, slot.limits)
        return slot.container

    def empty(self, slot: WarmSlot) -> None:
        """Discard the slot's container, if it holds one (its worker is ending)."""
        warm, slot.container = slot.container, None
        if warm is not None:
            self.discard(warm)

    def claim(self, slot: WarmSlot, job_dir: Path) -> WarmContainer | None:
        """Take the slot's container for a new job, before the job's files are written into
        ``job_dir``. None when the job must start cold: the slot is empty or ``job_dir``
        exists already (not a new job; the slot keeps its container)."""
        warm = slot.container
        if warm is None or job_dir.exists():
            return None
        slot.container = None
        return warm

    def bind(self, warm: WarmContainer, spec: RunSpec) -> bool:
        """Give ``warm`` (claimed for ``spec``'s job) to the job and start the script. False
        when the job must start cold: the spec does not fit, its stage is gone or was given a
        time limit already, or a step failed. The caller discards it then, by id."""
        job_dir = warm.root / spec.job_id
        st = warm.stage
        if not fits(warm, spec) or (st.job_dir / GO).exists() or not st.job_dir.is_dir():
            return False
        deadline = datetime.now(UTC) + timedelta(seconds=spec.limits.timeout_s)
        try:
            # The job's from here on: cleanup(job_id) finds the stage by its owner.
            st.set_owner({**st.owner(), "job": spec.job_id})
            stage.put_input(st, Path(spec.input_dir))
            stage.put_job_file(st, "script.py", Path(spec.script_path))
            for name, path in spec.extra_files.items():
                stage.put_job_file(st, name, Path(path))
            # The agent reads the job's /out where a cold job's would be.
            mounts.bind_out(st.out_dir, Path(spec.work_dir) / "out")
            _write_durably(job_dir / WARM_DEADLINE, deadline.isoformat())
            self.client.api.rename(warm.container_id, self.names.container(spec.job_id))
        except Exception:  # renamed or not: it goes by id, and the job starts cold
            log.warning("binding warm container %s to %s failed", warm.token, spec.job_id,
                        exc_info=True)
            return False
        return trigger(st.job_dir, deadline)

    def resume(self, record: ContainerRecord, started_at: datetime | None) -> None:
        """A job bound to a warm container before a crash: hand its init the time limit
        unless it has it already (``go`` is written once)."""
        if record.job_dir is None or record.warm_token is None:
            raise ExecutorError(f"warm container {record.name} has no job directory")
        trigger(stage.Stage(self.stage_root / record.warm_token).job_dir,
                record.require_deadline())

    def discard(self, warm: WarmContainer) -> None:
        """Remove a warm container that is not (or no longer) any job's, its /out tmpfs and
        its stage. Idempotent."""
        self._remove(warm.container_id, warm.token)

    def reset(self, root: Path) -> int:
        """Remove what earlier lives of the agent with this work root left warm and unbound
        (bound ones are jobs: reconciliation owns them). Returns how many containers went."""
        removed = 0
        with engine_call("list warm containers"):
            found = self.client.containers.list(
                all=True, ignore_removed=True,
                filters={"label": f"{self.names.label_work_root}={root}"})
        for c in found:
            record = ContainerRecord.read(self.names, c.id, c.name, c.labels)
            if record.warm_token is not None and record.job_id is None:  # unbound
                self._remove(c.id, record.warm_token)
                removed += 1
        for st in stage.stages(self.stage_root):  # a crash before its container existed
            owner = st.owner()
            if (owner.get("prefix") == self.names.prefix and owner.get("warm") == st.token
                    and owner.get("work_root") == str(root) and not owner.get("job")):
                self._remove("", st.token)
        return removed

    def unmount_left(self, work_dir: Path) -> None:
        """Unmount a warm /out tmpfs left on ``work_dir/out`` whose container is gone, and
        remove its stage."""
        source = mounts.mounted_source(work_dir / "out")
        head = self.names.warm_out_source("")
        if source and source.startswith(head):
            mounts.unmount_out(source)
            token = source[len(head):]
            if token.isalnum():
                stage.remove(stage.Stage(self.stage_root / token))

    def _remove(self, container_id: str, token: str) -> None:
        # By id once known: a bound container has the job's name. Before, by its own name
        # (a create that succeeded while the start failed).
        with contextlib.suppress(docker.errors.NotFound):
            self.client.api.remove_container(container_id or self.names.warm_container(token),
                                             force=True, v=True)
        mounts.unmount_out(self.names.warm_out_source(token))
        stage.remove(stage.Stage(self.stage_root / token))


def prewarm(pool: WarmPool, root: Path, image: str, limits: Limits) -> WarmContainer:
    """Create and start one warm container with its own stage, for jobs under ``root``.

    :meth:`WarmPool.prewarm` calls it; a module function so that instrumentation
    (``bench.job_overhead``) can wrap every warm start."""
    warm = WarmContainer(stage.new_token(), "", root, image, limits, pool.stage_root)
    names = pool.names
    try:
        st = stage.make(pool.stage_root, warm.token, {
            "prefix": names.prefix, "warm": warm.token, "work_root": str(root)})
        mounts.mount_out(st.out_dir, names.warm_out_source(warm.token),
                         hardening.out_tmpfs_options(limits.out_mb))
        labels = {**pool.extra_labels, names.label_warm: warm.token,
                  names.label_work_root: str(root), names.label_log_bytes: str(limits.log_bytes)}
        kw = hardening.settings_for(
            limits, pool.runtime, image=image, name=names.warm_container(warm.token),
            labels=labels, stage=st, out_dir=st.out_dir, limit="-",
            env=hardening.check_env({}))
        cid = pool.create_and_start(kw, f"warm container {warm.token}")
    except BaseException:
        pool.discard(warm)  # nothing half-made stays: container, tmpfs, stage
        raise
    return replace(warm, container_id=cid)


def fits(warm: WarmContainer, spec: RunSpec) -> bool:
    """Whether ``spec`` runs exactly as a cold container would in this warm one."""
    job_dir = warm.root / spec.job_id
    return (spec.image == warm.image and not spec.env
            and spec.limits == replace(warm.limits, timeout_s=spec.limits.timeout_s)
            and spec.limits.timeout_s <= warm.limits.timeout_s
            and Path(spec.script_path) == job_dir / "job" / "script.py"
            and all(Path(p) == job_dir / "job" / n and n != GO
                    for n, p in spec.extra_files.items())
            and Path(spec.input_dir) == job_dir / "in"
            and Path(spec.work_dir) == job_dir / "work")


def trigger(job_dir: Path, deadline: datetime) -> bool:
    """Give the init of the stage whose ``job`` directory is ``job_dir`` its time limit.
    False when it had one already (once only), or the deadline has passed."""
    left = (deadline - datetime.now(UTC)).total_seconds()
    if left <= 0:
        return False
    limit = int(left) + 1 + hardening.BACKSTOP_GRACE_S
    tmp = job_dir / f".{GO}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, f"{limit}\n".encode())
        os.fchmod(fd, 0o644)  # the job's uid reads /job/go (whatever the umask)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, job_dir / GO)  # whole, or not at all; EEXIST: given already
    except FileExistsError:
        return False
    except OSError as e:
        raise ExecutorError(f"cannot start the warm container of {job_dir.parent.name}: "
                            f"{e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return True


class _HasWarmPool(Protocol):
    @property
    def warm(self) -> WarmPool: ...


def reset(executor: _HasWarmPool, root: Path) -> int:
    """``executor.warm.reset(root)``, for a caller holding only an executor (an operator's
    script after an agent was killed, a test checking that none was left)."""
    return executor.warm.reset(root)


def _write_durably(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
