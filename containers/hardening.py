"""The hardened container configuration: settings, input checks, safe output reading.

Kept apart from :mod:`containers.executor` so the settings can be read (and reviewed) in one
place; the mount code for ``/out`` is in :mod:`containers.mounts`, its options here. Every
setting carries the reason it is there; ``docs/executor.md`` has the same table.
The code that runs in these containers is written by outsiders and sits next to raw data:
assume it is hostile and wants out (network, host files, other jobs, the engine) or wants to
take the host down (memory, processes, disk, logs).
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.types
from docker.models.containers import RUN_CREATE_KWARGS, RUN_HOST_CONFIG_KWARGS

from compute.errors import InvalidInput

# A job's /out tmpfs by name and by place, for callers that check what a job left mounted
# (defined with the mount code).
from containers.mounts import find_out_mounts as find_out_mounts
from containers.mounts import out_mount_source as out_mount_source
from containers.runspec import ExecutorError, Limits
from containers.stage import Stage

RUNNER_UID = 10001
RUNNER_GID = 10001
MiB = 1024 * 1024
#: Seconds after the deadline at which the in-container backstop kills the job.
BACKSTOP_GRACE_S = 5
#: Host pids a gVisor sandbox uses for itself besides the job's processes: the container's
#: pids cgroup holds runsc's sentry and gofer (Go programs: ~15 threads idle, more under
#: load; measured on the reference host). Without it a small ``pids`` limit keeps the sandbox
#: from booting (``runsc start`` hangs) instead of limiting the job.
GVISOR_PIDS_HEADROOM = 64

#: In-container paths of the job's files.
SCRIPT_TARGET = "/job/script.py"
JOB_TARGET = "/job"
INPUT_TARGET = "/in"
OUTPUT_TARGET = "/out"
#: The container's PID 1 (containers/runner/init.py): untraceable by the job, deadline
#: backstop, reaper. Its text is handed to the image's interpreter with -c.
INIT_SOURCE = (Path(__file__).with_name("runner") / "init.py").read_text()
#: The job's scratch dir: a sized tmpfs INSIDE the container (not the host's /tmp).
JOB_TMP = "/tmp"  # noqa: S108

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")
#: Names that suggest a credential: refused, secrets never go into a job's environment.
_SECRET_HINT = re.compile(r"SECRET|TOKEN|PASSW|CREDENTIAL|PRIVATE|API_?KEY|AUTH", re.I)
#: Environment the executor sets itself; a spec may not override it.
BASE_ENV: dict[str, str] = {
    "HOME": JOB_TMP,  # the only writable place besides /out
    "PYTHONDONTWRITEBYTECODE": "1",  # root fs is read-only; don't even try to write .pyc
    "LANG": "C.UTF-8",  # the only locale left in the image
    "TMPDIR": JOB_TMP,
}


def check_job_id(job_id: str) -> str:
    """Job ids become container names, labels and mount names: a tight charset."""
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise InvalidInput("job_id", "1-63 chars of [A-Za-z0-9_.-], starting alphanumeric")
    return job_id


def check_prefix(prefix: str) -> bool:
    return re.fullmatch(r"[a-z0-9][a-z0-9.-]{0,30}", prefix) is not None


def check_env(env: Mapping[str, str]) -> dict[str, str]:
    out = dict(BASE_ENV)
    for k, v in env.items():
        if not _ENV_NAME.match(k) or k in BASE_ENV:
            raise InvalidInput("env", f"name {k!r} not allowed (UPPER_CASE, not preset)")
        if _SECRET_HINT.search(k):
            raise InvalidInput("env", f"{k!r} looks like a secret; secrets never enter a job")
        if not isinstance(v, str) or "\0" in v or len(v) > 4096:
            raise InvalidInput("env", f"value of {k!r} must be a short string")
        out[k] = v
    return out


def check_file_name(name: str) -> str:
    if not _FILE_NAME.match(name) or name == "script.py":
        raise InvalidInput("extra_files", f"name {name!r} not allowed (plain file name)")
    return name


@dataclass(frozen=True)
class HardeningInput:
    """What :func:`container_kwargs` needs, already validated by the executor."""

    image: str
    name: str
    labels: Mapping[str, str]
    stage: Stage  # where /in, /job and /etc/resolv.conf are bound from
    out_dir: Path
    limit: str  # the init's time limit: seconds, or "-" (a warm container reads it later)
    env: Mapping[str, str]
    memory_mb: int
    cpus: float
    pids: int
    tmpfs_mb: int
    nofile: int
    fsize_mb: int
    log_bytes: int
    runtime: str | None


def log_driver_cap(log_bytes: int) -> int:
    """Bytes the engine keeps per container log: enough to return ``log_bytes`` of each stream
    plus some, and a hard bound on host disk a chatty job can use."""
    return max(1 * MiB, 4 * log_bytes)


def init_command(limit: str) -> list[str]:
    """The container's command: :data:`INIT_SOURCE` as PID 1, running the job's script.
    ``limit``: the backstop in whole seconds, or "-" to read it from ``/job/go``."""
    # python -I: ignore PYTHON* env, user site and cwd on sys.path; -B: no .pyc writes.
    return ["/usr/bin/python3", "-I", "-B", "-c", INIT_SOURCE, limit,
            "/usr/bin/python3", "-I", "-B", SCRIPT_TARGET]


def backstop_limit(timeout_s: float) -> str:
    """The init's limit for a job of ``timeout_s``: the agent kills at the deadline; this
    fires BACKSTOP_GRACE_S later, when no agent is watching."""
    return str(math.ceil(timeout_s) + BACKSTOP_GRACE_S)


def runtime_pids(pids: int, runtime: str | None) -> int:
    """The container's pids cgroup limit for a job allowed ``pids`` processes."""
    return pids + GVISOR_PIDS_HEADROOM if runtime == "runsc" else pids


def container_kwargs(h: HardeningInput) -> dict[str, Any]:
    """Keyword arguments for ``client.containers.create`` (docker SDK 7.x)."""
    # Every bind comes from the job's stage (containers/stage.py), never from the agent's
    # work root: the job's mountinfo shows each bind's source path, and a stage path names
    # neither the work root nor the job.
    mounts = [
        # Input data: read-only, the job may read but never alter or delete the raw data.
        docker.types.Mount(INPUT_TARGET, str(h.stage.in_dir), type="bind", read_only=True),
        # The outsider's script and the job's other files: read-only so it cannot rewrite
        # itself for a later re-run.
        docker.types.Mount(JOB_TARGET, str(h.stage.job_dir), type="bind", read_only=True),
        # A neutral resolv.conf: the engine would otherwise copy the host's, which names an
        # internal name-server address the job has no business learning.
        docker.types.Mount("/etc/resolv.conf", str(h.stage.resolv_conf), type="bind",
                           read_only=True),
        # /out: a host tmpfs (out_tmpfs_options, mounted first) bound read-write, so the job's
        # output is size-capped for real and the agent can read it after the container exits.
        docker.types.Mount(OUTPUT_TARGET, str(h.out_dir), type="bind", read_only=False),
    ]

    kw: dict[str, Any] = dict(
        image=h.image,
        name=h.name,  # deterministic name: a second create for the same job id fails (409)
        # PID 1 is our init (containers/runner/init.py): non-dumpable, so the job cannot
        # ptrace it (same uid); it kills everything at the backstop limit when no agent is
        # watching, reaps zombies, and exits with the script's status.
        command=init_command(h.limit),
        entrypoint=[],
        labels=dict(h.labels),  # job id + deadline: survive an agent restart
        environment=dict(h.env),  # non-secret only (check_env refuses credential-like names)
        working_dir=JOB_TMP,  # cwd must be writable-but-bounded, never the read-only root
        user=f"{RUNNER_UID}:{RUNNER_GID}",  # never root: escaping then needs a kernel bug
        hostname="job",  # don't hand out the container id / host naming
        network_mode="none",  # no interface but lo: raw data cannot be sent anywhere
        read_only=True,  # root fs read-only: no tampering with the interpreter or libraries
        tmpfs={
            # scratch space, sized (counts against the memory limit); noexec/nosuid/nodev so
            # dropped binaries or device nodes are useless.
            JOB_TMP: f"rw,noexec,nosuid,nodev,size={h.tmpfs_mb}m,mode=1777",
        },
        mounts=mounts,
        cap_drop=["ALL"],  # no capabilities at all (CapEff 0): no raw sockets, chown, mknod...
        # no-new-privileges: setuid binaries and file capabilities cannot raise privileges.
        # The engine applies its default seccomp profile unless told otherwise (we never say
        # seccomp=unconfined); executor.hardening_report() records whether it is compiled in.
        security_opt=["no-new-privileges:true"],
        privileged=False,  # explicit: never
        # fork bombs hit this ceiling instead of the host's pid table (under gVisor the ceiling
        # also holds the sandbox's own threads: runtime_pids)
        pids_limit=runtime_pids(h.pids, h.runtime),
        mem_limit=h.memory_mb * MiB,  # memory bombs are OOM-killed inside the job's cgroup
        memswap_limit=h.memory_mb * MiB,  # equal to mem_limit: no swap to thrash the host
        nano_cpus=int(h.cpus * 1e9),  # CPU quota: a busy loop can't starve the agent or db
        oom_score_adj=500,  # if the HOST runs out of memory, the kernel kills jobs first
        ulimits=[
            # bounded open files: no fd-table exhaustion
            docker.types.Ulimit(name="nofile", soft=h.nofile, hard=h.nofile),
            # max size of any single file written (/tmp, /out): SIGXFSZ beyond this
            docker.types.Ulimit(name="fsize", soft=h.fsize_mb * MiB, hard=h.fsize_mb * MiB),
            # no core dumps: a core would be a copy of memory that held raw data
            docker.types.Ulimit(name="core", soft=0, hard=0),
        ],
        # Not the engine's init (tini): it runs as the job's uid and stays dumpable, so the job
        # could ptrace and stop it. Our init is PID 1 instead (command above).
        init=False,
        ipc_mode="private",  # own IPC namespace; no shared memory with the host or other jobs
        shm_size=16 * MiB,  # /dev/shm is a tmpfs too: keep it small (counts against memory)
        # pid/uts namespaces stay private (the defaults); we never set pid_mode/uts_mode=host.
        stop_signal="SIGKILL",  # a stop is a kill: the job gets no grace period to misbehave
        restart_policy={"Name": "no"},  # a finished/killed job is never restarted by the engine
        auto_remove=False,  # keep the exited container: its state (exit, OOM) and logs are read
        log_config=docker.types.LogConfig(
            # `local` driver, size-capped, one file: a runaway print cannot fill the host disk.
            type="local",
            config={"max-size": f"{log_driver_cap(h.log_bytes) // 1024}k", "max-file": "1",
                    "compress": "false"},  # the engine refuses compression with one file
        ),
        stdin_open=False,  # no stdin: nothing can be attached to the job
        tty=False,
        detach=True,
    )
    if h.runtime:
        kw["runtime"] = h.runtime  # e.g. gVisor `runsc`: a user-space kernel between job and host
    # Never mounted, by construction: the Docker socket, /proc or /sys of the host, devices.
    return kw


def settings_for(limits: Limits, runtime: str | None, *, image: str, name: str,
                 labels: Mapping[str, str], stage: Stage, out_dir: Path, limit: str,
                 env: Mapping[str, str]) -> dict[str, Any]:
    """:func:`container_kwargs` for a run under ``limits`` (cold and warm containers alike)."""
    return container_kwargs(HardeningInput(
        image=image, name=name, labels=labels, stage=stage, out_dir=out_dir, limit=limit,
        env=env, memory_mb=limits.memory_mb,
        cpus=limits.cpus, pids=limits.pids, tmpfs_mb=limits.tmpfs_mb, nofile=limits.nofile,
        fsize_mb=limits.fsize_mb, log_bytes=limits.log_bytes,
        runtime=runtime))


def out_tmpfs_options(size_mb: int) -> str:
    """Options of the host tmpfs bound at /out (:func:`containers.mounts.mount_out`): capped
    for real (ENOSPC), few inodes, owned by the runner. Output is data: no devices, setuid
    files or executables. 1,024 inodes: a release holds at most a few dozen files, and every
    file more is work for the agent's checks (and about 1.5 ms to create under gVisor)."""
    return (f"size={size_mb}m,nr_inodes=1024,mode=0700,uid={RUNNER_UID},gid={RUNNER_GID},"
            "nosuid,nodev,noexec")


def split_create_kwargs(kw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split :func:`container_kwargs` exactly as ``containers.create`` does: the create body
    and the ``create_host_config`` arguments (so the low-level API can be called directly)."""
    unknown = set(kw) - set(RUN_CREATE_KWARGS) - set(RUN_HOST_CONFIG_KWARGS)
    if unknown:  # e.g. volumes/ports, which containers.create would translate first
        raise ExecutorError(f"container settings not supported here: {sorted(unknown)}")
    return ({k: v for k, v in kw.items() if k in RUN_CREATE_KWARGS},
            {k: v for k, v in kw.items() if k in RUN_HOST_CONFIG_KWARGS})


# ---- reading what the job left in /out ------------------------------------------------

def read_outputs(
    out_dir: Path, *, max_files: int = 64, max_bytes: int = 32 * 1024 * 1024
) -> dict[str, bytes]:
    """Regular files directly under ``out_dir``, read safely (the job wrote them: hostile).

    Symlinks, FIFOs, devices and directories are skipped, never followed or opened blocking;
    more than ``max_files`` entries or ``max_bytes`` in total raises :class:`ExecutorError`.
    """
    out: dict[str, bytes] = {}
    total = 0
    names = sorted(os.listdir(out_dir))
    if len(names) > max_files:
        raise ExecutorError(f"/out holds {len(names)} entries (max {max_files})")
    for name in names:
        try:
            fd = os.open(out_dir / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue  # symlink (ELOOP) or vanished: skipped
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                continue
            total += st.st_size
            if total > max_bytes:
                raise ExecutorError(f"/out holds more than {max_bytes} bytes")
            chunks = []
            while chunk := os.read(fd, 1024 * 1024):
                chunks.append(chunk)
            out[name] = b"".join(chunks)
        finally:
            os.close(fd)
    return out
