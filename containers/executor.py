"""The Docker executor: runs one outsider's analysis script against one job's input.

Contract (see also docs/executor.md)
====================================

A job is identified by ``job_id`` (1-63 chars ``[A-Za-z0-9_.-]``). The executor keeps no state
of its own: everything it needs later (job id, deadline, log bound, /out path) is stored on
the container as labels and in the tmpfs name of the /out mount, so a new executor (after an
agent restart) picks up where the old one stopped. It reads a container once into a
:class:`containers.records.ContainerRecord`, whichever way the container was started.

States (:class:`RunState`), as seen by :meth:`DockerExecutor.state`::

    ABSENT --start()--> CREATED --(engine)--> RUNNING --(exit | kill at deadline)--> EXITED
       ^                                                                               |
       +------------------------------------ cleanup() --------------------------------+

- ``start(spec)`` is idempotent: if a container for ``job_id`` exists it is not replaced;
  a CREATED one (a start interrupted by a crash) is started, RUNNING/EXITED are left alone.
  The deadline is fixed when the container is created: ``created + limits.timeout_s``.
- ``wait(job_id)`` blocks until the job exits or its deadline passes, kills it at the
  deadline, and returns a :class:`RunResult`. It may be called again (and from another
  executor instance) any time before ``cleanup``; it returns the same facts each time.
- ``cleanup(job_id)`` is idempotent: removes the container and unmounts the /out tmpfs,
  however the job was started. The caller must collect the outputs (``result.out_dir``)
  BEFORE calling it.
- ``list_jobs()`` lists our containers (any state) with their deadlines, and ABSENT entries
  for /out mounts left without a container, for reconciliation after a crash: jobs the
  caller doesn't know about should be cleaned up.
- The deadline is enforced by ``wait`` and, should no agent be waiting, by an in-container
  backstop (``timeout --signal=KILL``) a few seconds later.

Warm starts (:mod:`containers.warm`): ``start(spec, warm=...)`` may run the job in a
container started ahead, bound to the job by taking its name; such a container carries a
``warm`` label instead of the job label and keeps its deadline in the job directory. The
states and calls above are the same for it.

Errors: :class:`RetryableExecutorError` — the engine did not answer or failed transiently;
the same call may be repeated (all calls are idempotent). :class:`ExecutorError` — the call
cannot succeed as made (no such job, /out mount failed, image missing); fail the job.
:class:`InvalidInput` — the spec broke a rule (job id, env name, file name, limits).

What the caller must do: give each job its own ``work_dir`` (the executor mounts a tmpfs on
``work_dir/out``); treat stdout/stderr and every file under ``out_dir`` as hostile (read
regular files only, never follow symlinks: use :func:`read_outputs`); run its checks before
anything is released; call ``cleanup`` afterwards, also for failed jobs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import docker
import docker.errors
import requests.exceptions

from compute.errors import InvalidInput
from containers import hardening, mounts
from containers import warm as warm_start
from containers.engine import EngineFacts, engine_call, engine_facts, parse_engine_time, read_log
from containers.hardening import read_outputs
from containers.records import ContainerRecord, Names
from containers.runspec import (
    ExecutorError,
    Limits,
    RetryableExecutorError,
    RunResult,
    RunSpec,
    RunState,
)
from containers.warm import WarmContainer

__all__ = [
    "DockerExecutor", "Limits", "RunResult", "RunSpec", "RunState", "read_outputs",
]


OVERDUE = datetime.min.replace(tzinfo=UTC)
_STATUS = {
    "created": RunState.CREATED,
    "running": RunState.RUNNING, "paused": RunState.RUNNING, "restarting": RunState.RUNNING,
    "exited": RunState.EXITED, "dead": RunState.EXITED, "removing": RunState.EXITED,
}


class _Found(NamedTuple):
    """A job's container as the engine reported it, and what its name and labels say."""

    container: Any  # docker.models.containers.Container: state, reload, kill
    record: ContainerRecord


class DockerExecutor:
    def __init__(
        self,
        client: docker.DockerClient,
        *,
        label_prefix: str = "data-sandbox",
        runtime: str | None = None,
        extra_labels: Mapping[str, str] | None = None,
        require_seccomp: bool = True,
    ) -> None:
        """``label_prefix`` names our containers/labels/mounts (tests use their own);
        ``runtime`` e.g. ``"runsc"`` (gVisor) when the operator installed it;
        ``extra_labels`` are added to every container (e.g. marking test containers);
        ``require_seccomp``: refuse to start jobs on an engine without seccomp support unless
        a sandboxing runtime is configured (fail closed; see docs/executor.md)."""
        if not hardening.check_prefix(label_prefix):
            raise InvalidInput("label_prefix", "[a-z0-9][a-z0-9.-]{0,30}")
        self.client = client
        self.require_seccomp = require_seccomp and runtime is None
        self._facts: EngineFacts | None = None
        self.extra_labels = dict(extra_labels or {})
        self.prefix = label_prefix
        self.names = Names(label_prefix)
        self.runtime = runtime

    # ---- naming / lookup ---------------------------------------------------------------

    def container_name(self, job_id: str) -> str:
        return self.names.container(hardening.check_job_id(job_id))

    def _find(self, job_id: str) -> _Found | None:
        name = self.container_name(job_id)
        with engine_call(f"inspect {name}"):
            try:
                c = self.client.containers.get(name)
            except docker.errors.NotFound:
                return None
        record = ContainerRecord.read(self.names, c.id, c.name, c.labels)
        if record.job_id != job_id:
            # Same name but not ours (no label): never touch somebody else's container. A
            # warm container is bound to a job by taking the job's name (containers.warm).
            raise ExecutorError(f"container {name} exists but is not labelled as job {job_id}")
        return _Found(c, record)

    def _get(self, job_id: str) -> _Found:
        found = self._find(job_id)
        if found is None:
            raise ExecutorError(f"job {job_id}: no container (never started, or cleaned up)")
        return found

    # ---- the contract ------------------------------------------------------------------

    def start(self, spec: RunSpec, warm: WarmContainer | None = None) -> None:
        """Create and start the job's container; no-op if it already exists (idempotent).

        ``warm``: a container started ahead whose directory the caller already renamed to
        the job's (:mod:`containers.warm`); used if it fits the spec, else discarded."""
        found = self._find(hardening.check_job_id(spec.job_id))
        if found is None and warm is not None and warm_start.bind(self, warm, spec):
            return
        if found is None:
            cid, status = self._create(spec)
        elif found.record.warm:  # bound before a crash: its launcher may still wait
            if found.record.job_dir is None:
                raise ExecutorError(f"warm container {found.record.name} has no job directory")
            started = parse_engine_time(found.container.attrs["State"].get("StartedAt"))
            age = (datetime.now(UTC) - started).total_seconds() if started else warm_start.READY_S
            warm_start.trigger(found.record.job_dir, found.record.require_deadline(),
                               ready_s=max(0.0, warm_start.READY_S - age))
            return
        else:
            cid, status = found.container.id, found.container.status
        if status == "created":
            with engine_call(f"start job {spec.job_id}"):
                self.client.api.start(cid)

    def create_and_start(self, kw: dict[str, Any], what: str) -> str:
        """Create and start a container from :func:`hardening.container_kwargs`; its id."""
        self._check_seccomp()
        with engine_call(f"create {what}"):
            cid = self._create_container(kw)
        with engine_call(f"start {what}"):
            self.client.api.start(cid)
        return cid

    def _create(self, spec: RunSpec) -> tuple[str, str]:
        """Mount /out and create the container: (container id, engine status)."""
        spec.limits.check()
        self._check_seccomp()
        env = hardening.check_env(spec.env)
        extra = {hardening.check_file_name(k): Path(v) for k, v in spec.extra_files.items()}
        script, input_dir = Path(spec.script_path), Path(spec.input_dir)
        if not script.is_file():
            raise InvalidInput("script_path", "must be an existing file")
        if not input_dir.is_dir():
            raise InvalidInput("input_dir", "must be an existing directory")
        for name, p in extra.items():
            if not p.is_file():
                raise InvalidInput("extra_files", f"{name}: must be an existing file")
        work = Path(spec.work_dir)
        if not work.is_absolute():
            raise InvalidInput("work_dir", "must be an absolute path")
        out_dir = work / "out"
        source = self.names.out_source(spec.job_id)
        # Fail closed: no container unless /out is the capped tmpfs.
        mounts.mount_out(out_dir, source, hardening.out_tmpfs_options(spec.limits.out_mb))
        deadline = datetime.now(UTC) + timedelta(seconds=spec.limits.timeout_s)
        labels = {
            **self.extra_labels,
            self.names.label_job: spec.job_id,
            self.names.label_deadline: deadline.isoformat(),
            self.names.label_log_bytes: str(spec.limits.log_bytes),
            self.names.label_out_dir: str(out_dir),
        }
        kw = self.container_settings(
            spec.image, self.container_name(spec.job_id), labels, script.resolve(),
            input_dir.resolve(), out_dir, {k: v.resolve() for k, v in extra.items()}, env,
            spec.limits)
        try:
            with engine_call(f"create job {spec.job_id}"):
                return self._create_container(kw), "created"
        except ExecutorError as e:
            cause = e.__cause__
            if isinstance(cause, docker.errors.APIError) and cause.status_code == 409:
                c = self._get(spec.job_id).container  # a concurrent start() won the race
                return c.id, c.status
            mounts.unmount_out(source)  # no container: don't leave the /out mount behind
            if isinstance(cause, docker.errors.ImageNotFound | docker.errors.NotFound):
                raise ExecutorError(f"runner image {spec.image} is missing: {e}") from e
            raise

    def container_settings(self, image: str, name: str, labels: Mapping[str, str],
                           script: Path, input_dir: Path, out_dir: Path,
                           extra: Mapping[str, Path], env: Mapping[str, str], limits: Limits
                           ) -> dict[str, Any]:
        """:func:`hardening.container_kwargs` for a run under ``limits`` on this executor."""
        return hardening.container_kwargs(hardening.HardeningInput(
            image=image, name=name, labels=labels, script_path=script, input_dir=input_dir,
            out_dir=out_dir, extra_files=extra, env=env, memory_mb=limits.memory_mb,
            cpus=limits.cpus, pids=limits.pids, tmpfs_mb=limits.tmpfs_mb,
            nofile=limits.nofile, fsize_mb=limits.fsize_mb, log_bytes=limits.log_bytes,
            timeout_s=limits.timeout_s, runtime=self.runtime))

    def _check_seccomp(self) -> None:
        if self.require_seccomp and not self.hardening_report().seccomp:
            raise ExecutorError(
                "the engine has no seccomp support: refusing to run outsider code "
                "(configure a runtime such as runsc, or pass require_seccomp=False knowingly)"
            )

    def _create_container(self, kw: dict[str, Any]) -> str:
        """``client.containers.create(**kw)`` minus its follow-up inspect."""
        create, host = hardening.split_create_kwargs(kw)
        create["host_config"] = self.client.api.create_host_config(**host)
        cid: str = self.client.api.create_container(**create)["Id"]
        return cid

    def state(self, job_id: str) -> RunState:
        found = self._find(job_id)
        if found is None:
            return RunState.ABSENT
        return _STATUS.get(found.container.status, RunState.EXITED)

    def deadline(self, job_id: str) -> datetime:
        return self._get(job_id).record.require_deadline()

    def wait(self, job_id: str, *, poll_s: float = 2.0) -> RunResult:
        """Block until the job exits or its deadline passes (then kill it); return the facts."""
        c, record = self._get(job_id)
        if c.status == "created":
            raise ExecutorError(f"job {job_id} was created but not started; call start() again")
        deadline = record.require_deadline()
        killed = False
        while _STATUS.get(c.status, RunState.EXITED) != RunState.EXITED:
            remaining = (deadline - datetime.now(UTC)).total_seconds()
            if remaining <= 0:
                with (engine_call(f"kill job {job_id}"),
                      contextlib.suppress(docker.errors.APIError)):
                    c.kill(signal="SIGKILL")  # 409 if it exited meanwhile: fine
                killed = True
                remaining = 10.0  # the engine reports the exit within moments
            try:
                self.client.api.wait(c.id, timeout=max(0.05, min(remaining, poll_s)))
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                pass  # not exited yet: loop, re-check the deadline
            except docker.errors.APIError as e:
                if e.is_server_error():
                    raise RetryableExecutorError(f"wait job {job_id}: {e}") from e
            with engine_call(f"inspect job {job_id}"):
                c.reload()
        return self._result(c, record, deadline, killed)

    def _result(self, c: Any, record: ContainerRecord, deadline: datetime, killed: bool
                ) -> RunResult:
        st = c.attrs["State"]
        exit_code = st.get("ExitCode")
        finished = parse_engine_time(st.get("FinishedAt"))
        # After a restart we did not see the kill; a 137 at or after the deadline is ours.
        timed_out = killed or (exit_code == 137 and finished is not None and finished >= deadline)
        oom = bool(st.get("OOMKilled")) or (exit_code == 137 and not timed_out)
        if record.job_id is None or record.out_dir is None:
            raise ExecutorError(f"container {c.name} does not say where its /out is")
        with engine_call(f"logs of {c.name}"):
            out, out_trunc = read_log(self.client.api, c.id, stderr=False,
                                      limit=record.log_bytes)
            err, err_trunc = read_log(self.client.api, c.id, stderr=True,
                                      limit=record.log_bytes)
        if timed_out:
            error: str | None = "timed out: killed at the deadline"
        elif oom:
            error = "out of memory: killed by the memory limit"
        elif exit_code != 0:
            error = f"exit code {exit_code}"
        else:
            error = None
        return RunResult(
            job_id=record.job_id, exit_code=exit_code, timed_out=timed_out,
            oom_killed=oom, stdout=out, stderr=err, stdout_truncated=out_trunc,
            stderr_truncated=err_trunc, out_dir=record.out_dir,
            started_at=parse_engine_time(st.get("StartedAt")), finished_at=finished,
            error=error,
        )

    def cleanup(self, job_id: str) -> None:
        """Remove the job's container and unmount its /out tmpfs, however the job was
        started. Idempotent."""
        found = self._find(job_id)
        sources = [self.names.out_source(job_id)]
        if found is not None:
            with (engine_call(f"remove job {job_id}"),
                  contextlib.suppress(docker.errors.NotFound)):
                self.client.api.remove_container(found.container.id, force=True, v=True)
            if found.record.out_source is not None:
                sources.insert(0, found.record.out_source)
        for source in dict.fromkeys(sources):
            mounts.unmount_out(source)

    def list_jobs(self) -> list[tuple[str, RunState, datetime]]:
        """(job id, state, deadline) of every container labelled as ours, plus ABSENT entries
        (deadline ``datetime.min``) for jobs whose container is gone but whose /out tmpfs is
        still mounted (a crash between mount and create, or a container removed by hand):
        ``cleanup`` them too."""
        with engine_call("list jobs"):
            cs = [c for label in (self.names.label_job, self.names.label_warm)
                  for c in self.client.containers.list(  # removed meanwhile: skipped
                      all=True, filters={"label": label}, ignore_removed=True)]
        jobs = []
        for c in cs:
            record = ContainerRecord.read(self.names, c.id, c.name, c.labels)
            if record.job_id is None:
                continue  # warm, not bound to a job yet
            jobs.append((record.job_id, _STATUS.get(c.status, RunState.EXITED),
                         record.deadline or OVERDUE))  # unreadable: treat as passed
        seen = {j for j, _, _ in jobs}
        for job_id in mounts.out_mount_jobs(self.prefix) - seen:
            jobs.append((job_id, RunState.ABSENT, OVERDUE))
        return sorted(jobs, key=lambda j: j[0])

    def run(self, spec: RunSpec) -> RunResult:
        """start + wait. The caller collects outputs from ``result.out_dir``, then cleanup()."""
        self.start(spec)
        return self.wait(spec.job_id)

    def hardening_report(self) -> EngineFacts:
        """What the engine enforces beyond our settings (seccomp, apparmor, userns, runtimes)."""
        if self._facts is None:
            self._facts = engine_facts(self.client)
        return self._facts
