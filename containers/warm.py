"""Warm starts: a slot's next container is started before its job exists, then bound to it.

Starting a hardened container costs about 0.26 s on the reference engine (namespaces,
cgroup, seccomp, mounts): more than a typical aggregate script runs. So each agent slot
keeps one container started ahead. It has exactly the settings of a cold one
(:func:`containers.hardening.settings_for`, same limits, same mounts) except two: ``/job``
is a read-only bind of a directory instead of single files, and its process is
:data:`LAUNCHER`, which blocks on the FIFO ``/job/go`` until it is given a time limit, then
``exec``\\ s the same command a cold container runs. Nothing of the job is in the container
before it is bound, and a warm container serves one job, once: it exits with its job and
is removed by the executor's ``cleanup`` like a cold one.

:class:`WarmPool` is the executor's (``DockerExecutor.warm``); it gets what it needs from
the executor explicitly and never imports it. The agent keeps a :class:`WarmSlot` per
worker and asks the pool to fill it (:meth:`WarmPool.prewarm`), to empty it
(:meth:`WarmPool.empty`) and, at start, to remove what earlier lives left
(:meth:`WarmPool.reset`); the job itself goes through ``DockerExecutor.start_job``.

Binding, in this order, each step durable before the next (see docs/executor.md):

1. :meth:`WarmPool.claim` renames the warm directory ``<root>/.warm-<token>`` to the job
   directory ``<root>/<job_id>``, before the job's files are written into it. The
   container's bind mounts and the ``/out`` tmpfs are attached to those directories, not
   to their paths, so they follow;
2. :meth:`WarmPool.bind` writes ``<job dir>/work/deadline``, renames the container to the
   job's container name (the commit point: from then on the executor finds it as the job's
   container, after a restart too), and writes the time limit into the FIFO. Writing is
   idempotent: once the launcher has read, nobody holds the FIFO open for reading and a
   second write fails with ENXIO, which means "already started".

Anything that does not fit (another image, other limits, environment variables, extra
files outside ``/job``) or fails on the way discards the warm container and the job
starts cold.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import docker
import docker.errors
import docker.types

from containers import hardening, mounts
from containers.engine import engine_call
from containers.records import WARM_DEADLINE, WARM_OUT, ContainerRecord, Names
from containers.runspec import ExecutorError, Limits, RunSpec

log = logging.getLogger("data-sandbox.agent")
WARM_DIR = ".warm-"  # job ids start alphanumeric: a warm directory is never a job's
FIFO = "go"
#: How long a just-started launcher may take to open the FIFO (python start-up, ~50 ms).
READY_S = 5.0
#: The warm container's process (python3 -I -B -c): wait for the time limit, then become
#: exactly the command of a cold container. Anything but a short decimal ends it.
LAUNCHER = """import os
fd = os.open("/job/go", os.O_RDONLY)
limit = os.read(fd, 16).decode("ascii", "replace").strip()
os.close(fd)
if not limit.isdigit() or len(limit) > 9:
    raise SystemExit(2)
os.execv("/usr/bin/timeout", ["timeout", "--signal=KILL", limit + "s",
                              "/usr/bin/python3", "-I", "-B", "/job/script.py"])
"""


@dataclass(frozen=True)
class WarmContainer:
    token: str
    container_id: str
    root: Path  # the agent's work root; the warm directory is root / (WARM_DIR + token)
    image: str
    limits: Limits

    @property
    def dir(self) -> Path:
        return self.root / f"{WARM_DIR}{self.token}"


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
                 extra_labels: Mapping[str, str], runtime: str | None,
                 create_and_start: Callable[[dict[str, Any], str], str]) -> None:
        self.client = client
        self.names = names
        self.extra_labels = dict(extra_labels)
        self.runtime = runtime
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
        """Take the slot's container for a job by making its directory ``job_dir``, before
        the job's files are written. None when the job must start cold: the slot is empty
        or ``job_dir`` exists already (the slot keeps its container), or the rename failed
        (the container is discarded)."""
        warm = slot.container
        if warm is None or job_dir.exists():
            return None
        slot.container = None
        try:
            warm.dir.rename(job_dir)
        except OSError:
            log.warning("claiming warm container %s for %s failed", warm.token, job_dir.name,
                        exc_info=True)
            self.discard(warm)
            return None
        return warm

    def bind(self, warm: WarmContainer, spec: RunSpec) -> bool:
        """Give ``warm`` (claimed for ``spec``'s job) to the job and start the script. False
        when the job must start cold: the spec does not fit, the container could not take
        the job's name, or its launcher is gone. The caller discards it then, by id."""
        job_dir = warm.root / spec.job_id
        if not fits(warm, spec) or not (job_dir / "job" / FIFO).exists():
            return False
        deadline = datetime.now(UTC) + timedelta(seconds=spec.limits.timeout_s)
        try:
            _write_durably(job_dir / WARM_DEADLINE, deadline.isoformat())
            self.client.api.rename(warm.container_id, self.names.container(spec.job_id))
        except Exception:  # renamed or not: it goes by id, and the job starts cold
            log.warning("binding warm container %s to %s failed", warm.token, spec.job_id,
                        exc_info=True)
            return False
        return trigger(job_dir, deadline, ready_s=READY_S)

    def resume(self, record: ContainerRecord, started_at: datetime | None) -> None:
        """A job bound to a warm container before a crash: hand its launcher the time limit
        unless it has it already (the FIFO takes it once)."""
        if record.job_dir is None:
            raise ExecutorError(f"warm container {record.name} has no job directory")
        age = (datetime.now(UTC) - started_at).total_seconds() if started_at else READY_S
        trigger(record.job_dir, record.require_deadline(), ready_s=max(0.0, READY_S - age))

    def discard(self, warm: WarmContainer) -> None:
        """Remove a warm container that is not (or no longer) any job's, its /out tmpfs and
        its directory if it was never claimed. Idempotent."""
        self._remove(warm.container_id, warm.token)
        shutil.rmtree(warm.dir, ignore_errors=True)

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
        if root.is_dir():
            for d in root.iterdir():
                if d.name.startswith(WARM_DIR) and d.is_dir() and not d.is_symlink():
                    self.unmount_left(d / "work")
                    shutil.rmtree(d, ignore_errors=True)
        return removed

    def unmount_left(self, work_dir: Path) -> None:
        """Unmount a warm /out tmpfs left on ``work_dir/out`` whose container is gone."""
        source = mounts.mounted_source(work_dir / "out")
        if source and source.startswith(self.names.warm_out_source("")):
            mounts.unmount_out(source)

    def _remove(self, container_id: str, token: str) -> None:
        # By id once known: a bound container has the job's name. Before, by its own name
        # (a create that succeeded while the start failed).
        with contextlib.suppress(docker.errors.NotFound):
            self.client.api.remove_container(container_id or self.names.warm_container(token),
                                             force=True, v=True)
        mounts.unmount_out(self.names.warm_out_source(token))


def prewarm(pool: WarmPool, root: Path, image: str, limits: Limits) -> WarmContainer:
    """Create and start one warm container with its directory under ``root``.

    :meth:`WarmPool.prewarm` calls it; a module function so that instrumentation
    (``bench.job_overhead``) can wrap every warm start."""
    warm = WarmContainer(secrets.token_hex(6), "", root, image, limits)
    names, job = pool.names, warm.dir / "job"
    try:
        for d in (warm.dir, warm.dir / "in", job, warm.dir / "work"):
            d.mkdir(mode=0o755, parents=True)
            d.chmod(0o755)  # the job's uid reads /in and /job
        os.mkfifo(job / FIFO, 0o644)
        out_dir = warm.dir / WARM_OUT
        mounts.mount_out(out_dir, names.warm_out_source(warm.token),
                         hardening.out_tmpfs_options(limits.out_mb))
        labels = {**pool.extra_labels, names.label_warm: warm.token,
                  names.label_work_root: str(root), names.label_log_bytes: str(limits.log_bytes)}
        kw = hardening.settings_for(
            limits, pool.runtime, image=image, name=names.warm_container(warm.token),
            labels=labels, script_path=job / FIFO, input_dir=warm.dir / "in", out_dir=out_dir,
            extra_files={}, env=hardening.check_env({}))
        kw["mounts"] = [m for m in kw["mounts"] if m["Target"] != hardening.SCRIPT_TARGET]
        kw["mounts"].append(docker.types.Mount("/job", str(job), type="bind", read_only=True))
        kw["command"] = ["/usr/bin/python3", "-I", "-B", "-c", LAUNCHER]
        cid = pool.create_and_start(kw, f"warm container {warm.token}")
    except BaseException:
        pool.discard(warm)  # nothing half-made stays: container, tmpfs, directory
        raise
    return replace(warm, container_id=cid)


def fits(warm: WarmContainer, spec: RunSpec) -> bool:
    """Whether ``spec`` runs exactly as a cold container would in this warm one."""
    job_dir = warm.root / spec.job_id
    return (spec.image == warm.image and not spec.env
            and spec.limits == replace(warm.limits, timeout_s=spec.limits.timeout_s)
            and spec.limits.timeout_s <= warm.limits.timeout_s
            and Path(spec.script_path) == job_dir / "job" / "script.py"
            and all(Path(p) == job_dir / "job" / n and n != FIFO
                    for n, p in spec.extra_files.items())
            and Path(spec.input_dir) == job_dir / "in"
            and Path(spec.work_dir) == job_dir / "work")


def trigger(job_dir: Path, deadline: datetime, ready_s: float = 0.0) -> bool:
    """Hand the launcher its time limit. False when nobody waits on the FIFO: already
    started, or the container is gone, or (``ready_s``) its launcher did not open the FIFO
    within that many seconds of a fresh start."""
    left = (deadline - datetime.now(UTC)).total_seconds()
    if left <= 0:
        return False
    limit = int(left) + 1 + hardening.BACKSTOP_GRACE_S
    give_up = time.monotonic() + ready_s
    while True:
        try:
            fd = os.open(job_dir / "job" / FIFO, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
            break
        except OSError as e:
            if e.errno not in (errno.ENXIO, errno.ENOENT):
                raise ExecutorError(f"cannot start the warm container of {job_dir.name}: "
                                    f"{e}") from e
            if e.errno == errno.ENOENT or time.monotonic() >= give_up:
                return False
            time.sleep(0.005)
    try:
        os.write(fd, f"{limit}\n".encode())
    finally:
        os.close(fd)
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
