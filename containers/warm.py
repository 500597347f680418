"""Warm starts: a slot's next container is started before its job exists, then bound to it.

Starting a hardened container costs about 0.26 s on the reference engine (namespaces,
cgroup, seccomp, mounts): more than a typical aggregate script runs. So each agent slot
keeps one container started ahead. It has exactly the settings of a cold one
(:func:`containers.hardening.container_kwargs`, same limits, same mounts) except two:
``/job`` is a read-only bind of a directory instead of single files, and its process is
:data:`LAUNCHER`, which blocks on the FIFO ``/job/go`` until the agent gives it a job,
then ``exec``\\ s the same command a cold container runs. Nothing of the job is in the
container before it is bound, and a warm container serves one job, once: it exits with
its job and is removed by ``cleanup`` like a cold one.

Binding, in this order, each step durable before the next (see docs/executor.md):

1. the agent renames the warm directory ``<root>/.warm-<token>`` to the job directory
   ``<root>/<job_id>`` and writes the job's files into it. The container's bind mounts and
   the ``/out`` tmpfs are attached to those directories, not to their paths, so they follow;
2. ``executor.start(spec, warm=...)`` writes ``<job dir>/work/deadline``, renames the
   container to the job's container name (the commit point: from then on the executor
   finds it as the job's container, after a restart too), and writes the time limit into
   the FIFO. Writing is idempotent: once the launcher has read, nobody holds the FIFO open
   for reading and a second write fails with ENXIO, which means "already started".

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
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker.errors
import docker.types

from containers import hardening, mounts
from containers.records import WARM_DEADLINE
from containers.runspec import ExecutorError, Limits, RunSpec

if TYPE_CHECKING:
    from containers.executor import DockerExecutor

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


def prewarm(ex: DockerExecutor, root: Path, image: str, limits: Limits) -> WarmContainer:
    """Create and start one warm container with its directory under ``root``."""
    token = secrets.token_hex(6)
    warm_dir = root / f"{WARM_DIR}{token}"
    job = warm_dir / "job"
    for d in (warm_dir, warm_dir / "in", job, warm_dir / "work"):
        d.mkdir(mode=0o755, parents=True)
        d.chmod(0o755)  # the job's uid reads /in and /job
    os.mkfifo(job / FIFO, 0o644)
    mounts.mount_out(warm_dir / "work" / "out", ex.names.warm_out_source(token),
                     hardening.out_tmpfs_options(limits.out_mb))
    labels = {**ex.extra_labels, ex.names.label_warm: token,
              ex.names.label_work_root: str(root), ex.names.label_log_bytes: str(limits.log_bytes)}
    kw = ex.container_settings(image, ex.names.warm_container(token), labels, job / FIFO,
                               warm_dir / "in", warm_dir / "work" / "out", {},
                               hardening.check_env({}), limits)
    kw["mounts"] = [m for m in kw["mounts"] if m["Target"] != hardening.SCRIPT_TARGET]
    kw["mounts"].append(docker.types.Mount("/job", str(job), type="bind", read_only=True))
    kw["command"] = ["/usr/bin/python3", "-I", "-B", "-c", LAUNCHER]
    warm = WarmContainer(token, "", root, image, limits)
    try:
        cid = ex.create_and_start(kw, f"warm container {token}")
    except BaseException:
        discard(ex, warm)
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


def bind(ex: DockerExecutor, warm: WarmContainer, spec: RunSpec) -> bool:
    """Give ``warm`` (already renamed to the job's directory) to ``spec``'s job and start
    the script. False, with the warm container discarded, when the job must start cold."""
    job_dir = warm.root / spec.job_id
    if not fits(warm, spec) or not (job_dir / "job" / FIFO).exists():
        discard(ex, warm)
        return False
    deadline = datetime.now(UTC) + timedelta(seconds=spec.limits.timeout_s)
    try:
        _write_durably(job_dir / WARM_DEADLINE, deadline.isoformat())
        ex.client.api.rename(warm.container_id, ex.container_name(spec.job_id))
    except Exception:  # renamed or not: it goes by id, and the job starts cold
        log.warning("binding warm container %s to %s failed", warm.token, spec.job_id,
                    exc_info=True)
        discard(ex, warm)
        return False
    if trigger(job_dir, deadline, ready_s=READY_S):
        return True
    ex.cleanup(spec.job_id)  # the launcher is gone (killed?): remove it, start cold
    return False


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


def discard(ex: DockerExecutor, warm: WarmContainer) -> None:
    """Remove an unbound warm container, its /out tmpfs and its directory. Idempotent."""
    _remove(ex, warm.container_id, warm.token)
    shutil.rmtree(warm.dir, ignore_errors=True)


def remove(ex: DockerExecutor, c: Any) -> None:
    """Remove a warm container found on the engine (bound or not) and its /out tmpfs."""
    _remove(ex, c.id, c.labels[ex.names.label_warm])


def _remove(ex: DockerExecutor, container_id: str, token: str) -> None:
    if container_id:
        with contextlib.suppress(docker.errors.NotFound):
            ex.client.api.remove_container(container_id, force=True, v=True)
    mounts.unmount_out(ex.names.warm_out_source(token))


def unmount_job_dir(ex: DockerExecutor, job_dir: Path) -> None:
    """Unmount a warm /out tmpfs left on a job directory whose container is gone."""
    source = mounts.mounted_source(job_dir / "work" / "out")
    if source and source.startswith(ex.names.warm_out_source("")):
        mounts.unmount_out(source)


def reset(ex: DockerExecutor, root: Path) -> int:
    """Remove what earlier lives of the agent with this work root left warm and unbound
    (bound ones are jobs: reconciliation owns them). Returns how many containers went."""
    removed = 0
    try:
        found = ex.client.containers.list(all=True, ignore_removed=True,
                                          filters={"label": f"{ex.names.label_work_root}={root}"})
    except docker.errors.APIError as e:
        raise ExecutorError(f"listing warm containers: {e}") from e
    for c in found:
        if c.name.startswith(ex.names.warm_container("")) and ex.names.label_warm in c.labels:
            remove(ex, c)
            removed += 1
    if root.is_dir():
        for d in root.iterdir():
            if d.name.startswith(WARM_DIR) and d.is_dir() and not d.is_symlink():
                unmount_job_dir(ex, d)
                shutil.rmtree(d, ignore_errors=True)
    return removed


def _write_durably(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)

