"""The host side of ``/out``: a size-capped tmpfs per job, mounted, found and unmounted.

The mount options are a hardening setting (:func:`containers.hardening.out_tmpfs_options`).
A tmpfs is found by its name (the "source" column of ``/proc/self/mountinfo``), never by a
note kept in memory, so a restarted agent finds and unmounts what the previous one mounted.
The job sees that name too (its /out line in its own mountinfo): it carries the random
token of the job's stage (:mod:`containers.stage`), never the job id.
"""

from __future__ import annotations

import ctypes
import os
import stat
import subprocess
from pathlib import Path

from containers.runspec import ExecutorError

_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_BIND = 2, 4, 8, 4096
#: Mount options that are flags of mount(2), not tmpfs data (as the mount program splits them).
_FLAGS = {"nosuid": _MS_NOSUID, "nodev": _MS_NODEV, "noexec": _MS_NOEXEC}
_MNT_DETACH = 2
_libc: ctypes.CDLL | None = None


def out_mount_source(label_prefix: str, token: str) -> str:
    """The tmpfs 'device' name of a job's /out (``token``: its stage's); lets cleanup find
    the mount after a restart."""
    return f"{label_prefix}-out-{token}"


def mount_out(out_dir: Path, source: str, options: str) -> None:
    """Mount a tmpfs named ``source`` with ``options`` (as ``mount -t tmpfs -o``) on
    ``out_dir`` (idempotent). Fails closed: no mount, no container."""
    if not _ready_to_mount(out_dir, source):
        return
    words = options.split(",")
    flags = 0
    for w in words:
        flags |= _FLAGS.get(w, 0)
    data = ",".join(w for w in words if w not in _FLAGS)
    # The same mount(2) call that `mount -t tmpfs -o <options>` makes, without spawning it
    # (~7 ms at load); the program only where libc cannot be loaded.
    _check_mounted(_sys_mount(source, out_dir, data, flags),
                   ["mount", "-t", "tmpfs", "-o", options, source, str(out_dir)],
                   out_dir, source)


def _ready_to_mount(out_dir: Path, source: str) -> bool:
    """Make ``out_dir`` a mount point for the tmpfs named ``source``; False if that tmpfs
    is already mounted there. Fails closed on a symlink or another mount in its place."""
    if out_dir.is_symlink():
        raise ExecutorError(f"refusing to mount /out: {out_dir} is a symlink")
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if mounted_source(out_dir) == source:
        return False
    if os.path.ismount(out_dir):
        raise ExecutorError(f"refusing to mount /out: something else is mounted on {out_dir}")
    return True


def _check_mounted(err: str | None, program: list[str], out_dir: Path, source: str) -> None:
    """Finish a mount made by a direct call that returned ``err`` (None: the call could
    not be made, so ``program`` makes it), and fail closed unless ``source`` is now the
    mount on ``out_dir``."""
    if err is None:
        proc = subprocess.run(program, capture_output=True, text=True, check=False)
        err = (proc.stderr.strip() or "mount failed") if proc.returncode != 0 else ""
    if err or mounted_source(out_dir) != source:
        raise ExecutorError(f"cannot mount the /out tmpfs on {out_dir}: {err}")


def unmount_out(source: str) -> None:
    """Unmount every tmpfs named ``source`` (idempotent), then remove the empty mount points."""
    for point in reversed(find_out_mounts(source)):
        err = _umount(point, lazy=False)
        if err:  # still busy: detach now, the kernel frees it when unused
            err = _umount(point, lazy=True)
        if err and point in find_out_mounts(source):
            raise ExecutorError(f"cannot unmount {point}: {err}")
        try:
            st = os.lstat(point)
            if stat.S_ISDIR(st.st_mode) and not os.path.ismount(point):
                os.rmdir(point)
        except OSError:
            pass


def mounted_source(path: Path) -> str | None:
    """Source of the top mount on exactly ``path``, or None."""
    target = os.path.realpath(path)
    found = None
    for point, source in _mountinfo():
        if point == target:
            found = source
    return found


def find_out_mounts(source: str) -> list[str]:
    """Mount points of the tmpfs named ``source``, in the order they were mounted."""
    return [point for point, src in _mountinfo() if src == source]


def out_mount_tokens(label_prefix: str) -> set[str]:
    """Stage tokens of the cold jobs that still have an /out tmpfs mounted (reconciliation
    after a crash; the stage's owner names the job)."""
    head = out_mount_source(label_prefix, "")
    return {src[len(head):] for _, src in _mountinfo() if src.startswith(head)}


def bind_out(source_point: Path, out_dir: Path) -> None:
    """Mount the tmpfs mounted at ``source_point`` on ``out_dir`` too (a second place for one
    file system: a warm container's /out, seen by the agent where a cold job's would be).
    Idempotent; fails closed like :func:`mount_out`."""
    source = mounted_source(source_point)
    if source is None:
        raise ExecutorError(f"nothing is mounted on {source_point}")
    if not _ready_to_mount(out_dir, source):
        return
    _check_mounted(_sys_bind(source_point, out_dir),
                   ["mount", "--bind", str(source_point), str(out_dir)], out_dir, source)


def detach(point: str) -> None:
    """Unmount ``point`` (lazily if busy); errors are ignored (already gone)."""
    if _umount(point, lazy=False):
        _umount(point, lazy=True)


def mountinfo() -> list[tuple[str, str]]:
    """(mount point, source) pairs of this mount namespace, innermost last."""
    return _mountinfo()


def _mountinfo() -> list[tuple[str, str]]:
    """(mount point, source) pairs of this mount namespace, innermost last."""
    rows = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            point = left.split()[4].replace("\\040", " ")
            parts = right.split()
            rows.append((point, parts[1] if len(parts) > 1 else ""))
    return rows


def _load_libc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL("libc.so.6", use_errno=True)
        except OSError:
            return None  # not glibc: the callers fall back to the mount/umount programs
    return _libc


def _sys_mount(source: str, target: Path, data: str, flags: int) -> str | None:
    """mount(2) of a tmpfs: "" on success, the error text on failure, None if unavailable."""
    libc = _load_libc()
    if libc is None:
        return None
    return _outcome("mount", libc.mount(source.encode(), os.fsencode(target), b"tmpfs",
                                        ctypes.c_ulong(flags), data.encode()))


def _outcome(what: str, rc: int) -> str:
    """"" for a system call that returned 0, else its error text (errno read at once)."""
    if rc == 0:
        return ""
    e = ctypes.get_errno()
    return f"{what}: {os.strerror(e)} (errno {e})"


def _sys_bind(source: Path, target: Path) -> str | None:
    """mount(2) with MS_BIND: "" on success, the error text on failure, None if unavailable."""
    libc = _load_libc()
    if libc is None:
        return None
    return _outcome("mount", libc.mount(os.fsencode(source), os.fsencode(target), None,
                                        ctypes.c_ulong(_MS_BIND), None))


def _sys_umount(point: str, flags: int) -> str | None:
    """umount2(2): "" on success, the error text on failure, None if unavailable."""
    libc = _load_libc()
    if libc is None:
        return None
    return _outcome("umount", libc.umount2(os.fsencode(point), ctypes.c_int(flags)))


def _umount(point: str, lazy: bool) -> str:
    err = _sys_umount(point, _MNT_DETACH if lazy else 0)
    if err is None:
        proc = subprocess.run(["umount", *(["-l"] if lazy else []), point],
                              capture_output=True, text=True, check=False)
        err = (proc.stderr.strip() or "umount failed") if proc.returncode != 0 else ""
    return err
