"""A job's directory in the agent's work root: checked, written, read back.

Everything a run needs after its container started is on disk here (``task.json``,
``input.json``, the projected input, the row identities for the release audit), and a
finished run's report waits here (``report.json``) until the controller has it, so an
agent restarted after a crash can finish, or report, a run it did not see start. Kept
apart from checking a run's outputs (:mod:`containers.runjob`): this is the job's
on-disk layout, which the agent, its mock runs and its recovery all share.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from authz.wire import RunReport, RunTask
from compute.errors import InvalidInput
from containers import audit_ids, audit_store, datasets
from containers.audit_store import AuditStore
from containers.executor import Limits, RunSpec
from containers.hardening import check_job_id

CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ROW_IDS = audit_ids.ROW_IDS
# A job's contributor number per record, from the dataset's identifier fields (statistics
# and script jobs: the threshold and dominance rules count persons, not records).
UNIT_IDS = "unitids.npy"
# Each record's person as the differencing audit names it across jobs (identifiers hashed
# under the audit store's persistent key), where the dataset declares identifier fields.
PERSON_IDS = audit_store.PERSON_IDS


def check_task(task: RunTask, work_root: Path) -> Path:
    """Validate what becomes a path before anything touches the disk; return the job dir.

    The controller is not trusted with the provider's file system: a job id or dataset
    code like ``../x`` must not write outside the agent's work root.
    """
    check_job_id(task.job_id)
    for ds in task.datasets:
        if not isinstance(ds.code, str) or not CODE.fullmatch(ds.code):
            raise InvalidInput("datasets.code", "must be a catalog code")
    if len({ds.code for ds in task.datasets}) != len(task.datasets):
        # Each input is written as <code>.csv: one would overwrite another.
        raise InvalidInput("datasets.code", "must be distinct")
    job_dir: Path = (work_root / task.job_id).resolve()
    if job_dir.parent != work_root.resolve():
        raise InvalidInput("job_id", "must name a directory inside the agent's work root")
    return job_dir


def prepare(task: RunTask, job_dir: Path, roots: Callable[[str], list[Path]],
            image: str, base_limits: Limits, audit: AuditStore | None = None) -> RunSpec:
    """Write the script and the permitted columns; record what was read (input.json).

    ``roots`` gives the data roots of one provider: a location resolves only under the
    roots of the provider that owns the dataset. With ``audit``, the keyed row identities
    of a one-dataset job are written beside its input (``rowids.npy``, outside ``in/``,
    never mounted into a container) for the differencing audit, and where the dataset
    declares identifier fields each record's person under the same key
    (``personids.npy``: the audit's unit is then persons), in the job's identity space
    and in every other one the audit compares (:mod:`containers.audit_ids`). A
    one-dataset job or joint part on a dataset declaring identifier fields gets, there
    too, each record's contributor number (``unitids.npy``): the identifiers are
    read from the source whatever the permit, hashed under a key drawn for the job and
    dropped with it.
    """
    in_dir = job_dir / "in"
    in_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "task.json").write_text(task.model_dump_json())
    # job/ is mounted whole at /job in a warm container (containers.warm), the script
    # alone in a cold one; files of the job other than its input go there.
    script_path = job_dir / "job" / "script.py"
    script_path.parent.mkdir(mode=0o755, exist_ok=True)
    script_path.write_bytes(base64.b64decode(task.script_b64))
    single = len(task.datasets) == 1
    rows = size = 0
    digests = []
    for ds in task.datasets:
        src = datasets.resolve(ds.location, roots(ds.provider_id))
        name = "data.csv" if single else f"{ds.code}.csv"
        projected = datasets.project(src, ds.format, [f.name for f in ds.fields],
                                     in_dir / name)
        rows += projected.rows
        size += projected.size
        digests.append(projected.sha256)
        if single and task.psi is None and ds.identifiers:
            np.save(job_dir / UNIT_IDS, datasets.contributors(
                src, ds.format, ds.identifiers, secrets.token_urlsafe(12)[:16]))
        if audit is not None and single and task.joint is None:
            # Keyed identities of the records, and persons, in every space the audit
            # compares them in (containers.audit_ids).
            audit_ids.write(task, ds, src, job_dir, audit)
    sha = digests[0] if single else hashlib.sha256("\n".join(digests).encode()).hexdigest()
    (job_dir / "input.json").write_text(json.dumps({"rows": rows, "bytes": size,
                                                    "sha256": sha}))
    for p in [in_dir, *in_dir.iterdir()]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return run_spec(task, job_dir, image, base_limits)


def load_task(job_dir: Path) -> RunTask:
    """The task as :func:`prepare` wrote it (an agent restarted after a crash reads it)."""
    return RunTask.model_validate_json((job_dir / "task.json").read_bytes())


REPORT = "report.json"


def save_report(job_dir: Path, report: RunReport) -> None:
    """Put a finished run's report in the job's outbox, durably (write, fsync, rename)."""
    if not job_dir.is_dir():
        return  # refused before anything was written: there is nothing to keep
    tmp = job_dir / f".{REPORT}.tmp"
    with open(tmp, "wb") as f:
        f.write(report.model_dump_json().encode())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, job_dir / REPORT)
    dir_fd = os.open(job_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_report(job_dir: Path) -> RunReport | None:
    """The report waiting in the job's outbox, if any (a torn one never exists: rename)."""
    try:
        return RunReport.model_validate_json((job_dir / REPORT).read_bytes())
    except FileNotFoundError:
        return None


def run_spec(task: RunTask, job_dir: Path, image: str, base_limits: Limits) -> RunSpec:
    extra: dict[str, Path] = {}
    if task.joint is not None:
        spec_path = job_dir / "job" / "spec.json"
        spec_path.write_text(json.dumps(task.joint.spec))
        extra["spec.json"] = spec_path
    # The controller's lease is sized for its timeout: never run longer than that.
    limits = replace(base_limits, timeout_s=min(base_limits.timeout_s, task.timeout_s))
    work = job_dir / "work"
    work.mkdir(exist_ok=True)
    return RunSpec(job_id=task.job_id, image=image, script_path=job_dir / "job" / "script.py",
                   input_dir=job_dir / "in", work_dir=work, limits=limits, extra_files=extra)

