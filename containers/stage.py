"""Where a container's files are bound from: a directory whose path says nothing of the job.

For every bind mount, a container's ``/proc/self/mountinfo`` shows the path of the mount's
source inside its file system (proc(5), ``/proc/pid/mountinfo``, field 4 "root"): binding
``<work root>/<job id>/in`` would hand the job the agent's work root and its own job id.
So the executor binds only *stages*: ``<stage root>/<token>/`` with ``in/`` (the input),
``job/`` (the script and the job's other files) and ``resolv.conf``, ``token`` random.
What a job can read there is the fixed stage root (``/var/lib/data-sandbox/stage`` unless
the operator chose another) and a token that names nothing.

Files are hard-linked into the stage (no copy of the input when the stage root is on the
work root's file system, as the default layout has it), copied otherwise. Links share the
inode: the read-only binds keep the job from changing them, as before.

Each stage holds ``owner.json`` (never bound into a container): the label prefix of the
executor that made it, the job it serves once known, and for a warm container the agent's
work root. The executor finds a job's stage by it after a restart, as it finds the job's
container by its labels.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from containers import mounts
from containers.runspec import ExecutorError

#: Default stage root; on the same file system as the agents' work roots, inputs are linked.
STAGE_ROOT = Path("/var/lib/data-sandbox/stage")
OWNER = "owner.json"
RESOLV_CONF = Path(__file__).with_name("runner") / "resolv.conf"


def new_token() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Stage:
    dir: Path

    @property
    def token(self) -> str:
        return self.dir.name

    @property
    def in_dir(self) -> Path:
        return self.dir / "in"

    @property
    def job_dir(self) -> Path:
        return self.dir / "job"

    @property
    def resolv_conf(self) -> Path:
        return self.dir / "resolv.conf"

    @property
    def out_dir(self) -> Path:
        """Mount point of a warm container's /out tmpfs before it has a job."""
        return self.dir / "out"

    def owner(self) -> dict[str, str]:
        try:
            data = json.loads((self.dir / OWNER).read_text())
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(
            data, dict) else {}

    def set_owner(self, owner: Mapping[str, str]) -> None:
        """Write ``owner.json`` durably (before anything relies on it after a crash)."""
        tmp = self.dir / f".{OWNER}.tmp"
        with open(tmp, "w") as f:
            json.dump(dict(owner), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / OWNER)


def make(root: Path, token: str, owner: Mapping[str, str]) -> Stage:
    """Create (or find again) the stage ``root/token`` with its owner, ``in/``, ``job/`` and
    the job's resolv.conf. Only root reaches into a stage: the container sees its binds."""
    if not token.isalnum():
        raise ExecutorError(f"bad stage token {token!r}")
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = Stage(root / token)
    st.dir.mkdir(mode=0o700, exist_ok=True)
    if st.dir.is_symlink() or not st.dir.is_dir():
        raise ExecutorError(f"stage {st.dir} is not a directory")
    st.set_owner(owner)
    for d in (st.in_dir, st.job_dir):
        d.mkdir(mode=0o755, exist_ok=True)
        d.chmod(0o755)  # the job's uid reads /in and /job
    shutil.copyfile(RESOLV_CONF, st.resolv_conf)
    st.resolv_conf.chmod(0o644)
    return st


def put_input(st: Stage, input_dir: Path) -> None:
    """The regular files and directories under ``input_dir``, linked into ``st.in_dir`` (the
    directory's mode too: /in looks as it did when the input directory itself was bound).
    Symbolic links and special files are left out: /in holds data, nothing that points."""
    st.in_dir.chmod(stat.S_IMODE(os.stat(input_dir).st_mode))
    for src_dir, dirs, files in os.walk(input_dir, followlinks=False):
        rel = Path(src_dir).relative_to(input_dir)
        for d in dirs:
            s = Path(src_dir) / d
            if s.is_symlink():
                continue
            target = st.in_dir / rel / d
            target.mkdir(exist_ok=True)
            target.chmod(stat.S_IMODE(os.lstat(s).st_mode))
        for f in files:
            s = Path(src_dir) / f
            if stat.S_ISREG(os.lstat(s).st_mode):
                put_file(s, st.in_dir / rel / f)


def put_job_file(st: Stage, name: str, src: Path) -> None:
    """A file of the job (its script, a spec) at ``/job/<name>``."""
    put_file(src, st.job_dir / name)


def put_file(src: Path, dest: Path) -> None:
    """Hard-link ``src`` at ``dest`` (replacing what is there), or copy it across file
    systems (EXDEV) or where linking is refused (EPERM: ``fs.protected_hardlinks``)."""
    with contextlib.suppress(FileNotFoundError):
        dest.unlink()
    try:
        os.link(src, dest, follow_symlinks=False)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copyfile(src, dest, follow_symlinks=False)
        dest.chmod(stat.S_IMODE(os.stat(src).st_mode))


def remove(st: Stage) -> None:
    """Remove a stage (idempotent). Whatever is still mounted inside it (a warm /out) is
    detached first, so removing never reaches into a mounted file system."""
    inside = str(st.dir) + "/"
    for point in reversed([p for p, _ in mounts.mountinfo() if p.startswith(inside)]):
        mounts.detach(point)
    if st.dir.is_symlink():
        st.dir.unlink()
    else:
        shutil.rmtree(st.dir, ignore_errors=True)


def stages(root: Path) -> Iterator[Stage]:
    """Every stage under ``root`` (its owner is read by the caller)."""
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return
    for name in names:
        if name.isalnum() and not (root / name).is_symlink() and (root / name).is_dir():
            yield Stage(root / name)
