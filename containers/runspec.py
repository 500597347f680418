"""What a run is: its limits, its spec, its states and its result (the executor's contract
types; see :mod:`containers.executor`)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from compute.errors import InvalidInput, SandboxError


class ExecutorError(SandboxError):
    """The executor could not do what was asked; the job is failed with this reason."""

    code = "executor_error"


class RetryableExecutorError(ExecutorError):
    """A transient engine failure: the same idempotent call may be made again."""

    code = "executor_retry"


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 512
    cpus: float = 1.0
    pids: int = 128
    timeout_s: float = 300
    tmpfs_mb: int = 64
    out_mb: int = 32
    nofile: int = 256
    fsize_mb: int = 32
    log_bytes: int = 64 * 1024

    def check(self) -> None:
        bounds: dict[str, tuple[float, float]] = {
            "memory_mb": (16, 64 * 1024), "cpus": (0.01, 64), "pids": (8, 4096),
            "timeout_s": (0.1, 7 * 24 * 3600), "tmpfs_mb": (1, 16 * 1024),
            "out_mb": (1, 16 * 1024), "nofile": (16, 65536), "fsize_mb": (1, 16 * 1024),
            "log_bytes": (1024, 16 * 1024 * 1024),
        }
        for name, (lo, hi) in bounds.items():
            v = getattr(self, name)
            if not isinstance(v, int | float) or isinstance(v, bool) or not lo <= v <= hi:
                raise InvalidInput(f"limits.{name}", f"must be between {lo} and {hi}")


@dataclass(frozen=True)
class RunSpec:
    job_id: str
    image: str
    script_path: Path  # host file, mounted read-only at /job/script.py
    input_dir: Path  # host dir, mounted read-only at /in
    work_dir: Path  # host dir for this job; the executor mounts the /out tmpfs on work_dir/out
    limits: Limits = field(default_factory=Limits)
    extra_files: Mapping[str, Path] = field(default_factory=dict)  # read-only at /job/<name>
    env: Mapping[str, str] = field(default_factory=dict)  # non-secret only


class RunState(enum.Enum):
    ABSENT = "absent"
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"


@dataclass(frozen=True)
class RunResult:
    job_id: str
    exit_code: int | None
    timed_out: bool
    oom_killed: bool
    stdout: bytes  # first limits.log_bytes bytes of what the engine kept
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    out_dir: Path  # host path of /out's contents; valid until cleanup()
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None  # None only for a clean exit 0

    @property
    def ok(self) -> bool:
        return self.error is None
