"""What our containers say about themselves: the names one label prefix gives them, and the
record read once from a container's name and labels.

The executor keeps no state in memory (docs/executor.md): a job's id, deadline, log bound
and ``/out`` live on its container and in the name of its ``/out`` tmpfs, so a restarted
agent picks up where the previous one stopped. Whichever way a container was started, it
is read here, once, into a :class:`ContainerRecord`:

- cold: labelled with its job, its deadline, its log bound, its ``/out`` path and the token
  of its stage (:mod:`containers.stage`, which also names its ``/out`` tmpfs);
- warm (:mod:`containers.warm`): started ahead, labelled with a token and the work root
  of the agent that started it; bound to a job by taking the job's container name, its
  deadline then in ``<work root>/<job id>/work/deadline`` and its ``/out`` beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from containers.mounts import out_mount_source
from containers.runspec import ExecutorError, Limits

#: A warm-started job's deadline, in its job directory: written durably before the
#: container takes the job's name (a cold container carries it as a label).
WARM_DEADLINE = Path("work") / "deadline"
#: A warm-started job's /out, in its job directory (a cold container names it in a label).
WARM_OUT = Path("work") / "out"


class Names:
    """The labels, container names and /out tmpfs names of one label prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.label_job = f"{prefix}.job"  # the job a cold container runs
        self.label_deadline = f"{prefix}.deadline"
        self.label_log_bytes = f"{prefix}.log-bytes"
        self.label_out_dir = f"{prefix}.out-dir"
        self.label_stage = f"{prefix}.stage"  # a cold container's stage token
        self.label_warm = f"{prefix}.warm"  # the token of a warm container
        self.label_work_root = f"{prefix}.work-root"  # where a warm container's job dir goes

    def container(self, job_id: str) -> str:
        return f"{self.prefix}-job-{job_id}"

    def warm_container(self, token: str) -> str:
        return f"{self.prefix}-warm-{token}"

    def out_source(self, token: str) -> str:
        """The /out tmpfs of the cold job whose stage is ``token``."""
        return out_mount_source(self.prefix, token)

    def warm_out_source(self, token: str) -> str:
        # Not "<prefix>-out-...": those name jobs' /out mounts, which reconciliation lists.
        return f"{self.prefix}-warm-out-{token}"

    def job_of_container(self, name: str) -> str | None:
        """The job a container name is the name of, or None."""
        head = self.container("")
        return name[len(head):] if name.startswith(head) else None


@dataclass(frozen=True)
class ContainerRecord:
    """One of our containers as its name and labels describe it (what the engine says of its
    state is not here: that changes, this does not)."""

    container_id: str
    name: str
    job_id: str | None  # None: not a job's (yet): a warm container still unbound, or unlabelled
    warm_token: str | None  # None: started cold
    work_root: Path | None  # warm: the work root of the agent that started it
    job_dir: Path | None  # warm and bound: <work root>/<job id>, holding its deadline
    deadline: datetime | None  # None: unbound, or no valid deadline (treat it as passed)
    out_dir: Path | None  # host path of the job's /out (the tmpfs), valid until cleanup
    out_source: str | None  # the name of that tmpfs
    log_bytes: int  # how much of each of stdout and stderr the job's result carries
    stage_token: str | None  # the stage its binds come from (warm: the warm token)

    @property
    def warm(self) -> bool:
        return self.warm_token is not None

    @classmethod
    def read(cls, names: Names, container_id: str, name: str, labels: Mapping[str, str]
             ) -> ContainerRecord:
        """Never fails: a damaged label leaves its field None (a job without a readable
        deadline is overdue), so cleanup works on anything of ours."""
        log_bytes = _int(labels.get(names.label_log_bytes), Limits().log_bytes)
        token = labels.get(names.label_warm)
        if token is None:
            job_id = labels.get(names.label_job)
            out = labels.get(names.label_out_dir)
            stage = labels.get(names.label_stage) or None
            return cls(container_id, name, job_id, None, None, None,
                       _instant(labels.get(names.label_deadline)), Path(out) if out else None,
                       names.out_source(stage) if stage else None, log_bytes, stage)
        root = Path(labels[names.label_work_root]) if labels.get(names.label_work_root) else None
        job_id = names.job_of_container(name)  # bound: it took the job's name
        job_dir = root / job_id if root is not None and job_id is not None else None
        return cls(container_id, name, job_id, token, root, job_dir,
                   _deadline_in(job_dir) if job_dir is not None else None,
                   job_dir / WARM_OUT if job_dir is not None else None,
                   names.warm_out_source(token), log_bytes, token)

    def require_deadline(self) -> datetime:
        if self.deadline is None:
            raise ExecutorError(f"container {self.name} has no valid deadline")
        return self.deadline


def _instant(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text.strip()) if text else None
    except ValueError:
        return None


def _deadline_in(job_dir: Path) -> datetime | None:
    try:
        return _instant((job_dir / WARM_DEADLINE).read_text())
    except OSError:
        return None


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text else default
    except ValueError:
        return default
