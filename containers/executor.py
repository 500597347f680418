"""The Docker executor: runs one outsider's analysis script against one job's input.

Contract (see also docs/executor.md)
====================================

A job is identified by ``job_id`` (1-63 chars ``[A-Za-z0-9_.-]``). The executor keeps no state
of its own: everything it needs later (job id, deadline, log bound, /out path, stage) is
stored on the container as labels, in the tmpfs name of the /out mount and in the owner file
of the job's stage, so a new executor (after an agent restart) picks up where the old one
stopped. It reads a container once into a
:class:`containers.records.ContainerRecord`, whichever way the container was started.

States (:class:`RunState`), as seen by :meth:`DockerExecutor.state`::

    ABSENT --start()--> CREATED --(engine)--> RUNNING --(exit | kill at deadline)--> EXITED
       ^                                                                               |
       +------------------------------------ cleanup() --------------------------------+

- ``start(spec)`` is idempotent: if a container for ``job_id`` exists it is not replaced;
  a CREATED one (a start interrupted by a crash) is started, RUNNING/EXITED are left alone.
  The deadline is fixed when the container is created: ``created + limits.timeout_s``.
- ``start_job(job_dir, prepare, warm=slot)`` starts a new job whose files ``prepare``
  writes into ``job_dir``: in the slot's container started ahead when it fits, else cold.
- ``wait(job_id)`` blocks until the job exits or its deadline passes, kills it at the
  deadline, and returns a :class:`RunResult`. It may be called again (and from another
  executor instance) any time before ``cleanup``; it returns the same facts each time.
- ``cleanup(job_id, work_dir)`` is idempotent: removes the container, unmounts the /out
  tmpfs and removes the job's stage, however the job was started. The caller must collect
  the outputs (``result.out_dir``) BEFORE calling it.
- ``list_jobs()`` lists our containers (any state) with their deadlines, and ABSENT entries
  for stages (and their /out mounts) left without a container, for reconciliation after a
  crash: jobs the caller doesn't know about should be cleaned up.
- The deadline is enforced by ``wait`` and, should no agent be waiting, by the container's
  init (``containers/runner/init.py``) a few seconds later.

Bind mounts come from a stage (:mod:`containers.stage`): the job's files are linked into
``<stage root>/<random token>/`` and bound from there, never from the caller's paths, which
the job would read in its mountinfo (the agent's work root, the job id).

Warm starts (:mod:`containers.warm`): the executor owns a :class:`WarmPool` (``.warm``);
the agent asks it to fill and empty its slots and, at start, to remove what earlier lives
left. A job bound to a warm container takes the job's container name; the states and calls
above are the same for it.

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
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import docker
import docker.errors
import requests.exceptions

from compute.errors import InvalidInput
from containers import hardening, job_outcome, mounts, stage
from containers.engine import EngineFacts, engine_call, engine_facts, parse_engine_time
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
from containers.warm import WarmPool, WarmSlot

#: Runtimes that put their own kernel between the job and the host's: the engine's seccomp
#: profile is not what protects the host there (docs/threat-model.md).
SANDBOXING_RUNTIMES = frozenset({"runsc"})

__all__ = [
    "DockerExecutor", "Limits", "RunResult", "RunSpec", "RunState", "WarmSlot", "read_outputs",
]


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
        stage_root: Path = stage.STAGE_ROOT,
    ) -> None:
        """``label_prefix`` names our containers/labels/mounts (tests use their own);
        ``runtime`` e.g. ``"runsc"`` (gVisor) or ``"runc"``, None for the engine's default
        (``containers.engine.choose_runtime`` picks one for the agent);
        ``extra_labels`` are added to every container (e.g. marking test containers);
        ``require_seccomp``: refuse to start jobs on an engine without seccomp support unless
        a sandboxing runtime is configured (fail closed; see docs/executor.md);
        ``stage_root``: where jobs' stages go (best on the work root's file system: the
        input is then linked, not copied)."""
        if not hardening.check_prefix(label_prefix):
            raise InvalidInput("label_prefix", "[a-z0-9][a-z0-9.-]{0,30}")
        self.client = client
        self.require_seccomp = require_seccomp and runtime not in SANDBOXING_RUNTIMES
        self._facts: EngineFacts | None = None
        self.extra_labels = dict(extra_labels or {})
        self.prefix = label_prefix
        self.names = Names(label_prefix)
        self.runtime = runtime
        self.stage_root = stage_root
        self.warm = WarmPool(client, self.names, extra_labels=self.extra_labels,
                             runtime=runtime, stage_root=stage_root,
                             create_and_start=self._create_and_start)

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

    def start(self, spec: RunSpec) -> None:
        """Create and start the job's container; no-op if it already exists (idempotent)."""
        self._start(spec, self._find(hardening.check_job_id(spec.job_id)))

    def start_job(self, job_dir: Path, prepare: Callable[[], RunSpec],
                  warm: WarmSlot | None = None) -> RunSpec:
        """Start a new job whose files ``prepare`` writes into ``job_dir``; its spec.

        With ``warm``, the slot's container started ahead runs the job if it can: its
        directory becomes ``job_dir`` before ``prepare`` runs, and it is bound to the job if
        the spec fits. Otherwise the job starts cold, as with :meth:`start`. When this
        returns or raises, a container taken from the slot is the job's or removed."""
        claimed = self.warm.claim(warm, job_dir) if warm is not None else None
        if claimed is None:
            spec = prepare()
            self.start(spec)
            return spec
        bound, found = False, None
        try:
            spec = prepare()
            found = self._find(spec.job_id)
            bound = found is None and self.warm.bind(claimed, spec)
        finally:
            if not bound:
                self.warm.discard(claimed)  # not the job's: it starts cold, or not at all
        if not bound:
            self._start(spec, found)
        return spec

    def _start(self, spec: RunSpec, found: _Found | None) -> None:
        if found is None:
            cid, status = self._create(spec)
        elif found.record.warm:  # bound before a crash: its init may still wait
            started = found.container.attrs["State"].get("StartedAt")
            self.warm.resume(found.record, parse_engine_time(started))
            return
        else:
            cid, status = found.container.id, found.container.status
        if status == "created":
            with engine_call(f"start job {spec.job_id}"):
                self.client.api.start(cid)

    def _create_and_start(self, kw: dict[str, Any], what: str) -> str:
        """Create and start a container from :func:`hardening.settings_for`; its id."""
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
        # A start interrupted before its container existed left this job's stage: go on
        # with it (the same token, the same /out tmpfs).
        found = self._stages_of(spec.job_id)
        token = found[0].token if found else stage.new_token()
        if found and found[0].owner().get("warm"):
            # Bound to a warm container that is gone: its tmpfs goes, the job starts cold.
            mounts.unmount_out(self.names.warm_out_source(token))
        source = self.names.out_source(token)
        try:
            st = stage.make(self.stage_root, token,
                            {"prefix": self.prefix, "job": spec.job_id})
            stage.put_input(st, input_dir)
            stage.put_job_file(st, "script.py", script)
            for name, p in extra.items():
                stage.put_job_file(st, name, p)
            # Fail closed: no container unless /out is the capped tmpfs.
            mounts.mount_out(out_dir, source, hardening.out_tmpfs_options(spec.limits.out_mb))
        except BaseException:
            mounts.unmount_out(source)
            stage.remove(stage.Stage(self.stage_root / token))
            raise
        deadline = datetime.now(UTC) + timedelta(seconds=spec.limits.timeout_s)
        labels = {
            **self.extra_labels,
            self.names.label_job: spec.job_id,
            self.names.label_deadline: deadline.isoformat(),
            self.names.label_log_bytes: str(spec.limits.log_bytes),
            self.names.label_out_dir: str(out_dir),
            self.names.label_stage: token,
        }
        kw = hardening.settings_for(
            spec.limits, self.runtime, image=spec.image,
            name=self.container_name(spec.job_id), labels=labels, stage=st, out_dir=out_dir,
            limit=hardening.backstop_limit(spec.limits.timeout_s), env=env)
        try:
            with engine_call(f"create job {spec.job_id}"):
                return self._create_container(kw), "created"
        except ExecutorError as e:
            cause = e.__cause__
            if isinstance(cause, docker.errors.APIError) and cause.status_code == 409:
                c = self._get(spec.job_id).container  # a concurrent start() won the race
                return c.id, c.status
            # no container: don't leave the /out mount or the stage behind
            mounts.unmount_out(source)
            stage.remove(st)
            if isinstance(cause, docker.errors.ImageNotFound | docker.errors.NotFound):
                raise ExecutorError(f"runner image {spec.image} is missing: {e}") from e
            raise

    def _stages_of(self, job_id: str) -> list[stage.Stage]:
        """The stages of ours whose owner is ``job_id`` (cold, or warm and bound)."""
        return [st for st in stage.stages(self.stage_root)
                if (o := st.owner()).get("prefix") == self.prefix and o.get("job") == job_id]

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
        return job_outcome.state_of(found.container.status)

    def deadline(self, job_id: str) -> datetime:
        return self._get(job_id).record.require_deadline()

    def wait(self, job_id: str, *, poll_s: float = 2.0) -> RunResult:
        """Block until the job exits or its deadline passes (then kill it); return the facts."""
        c, record = self._get(job_id)
        if c.status == "created":
            raise ExecutorError(f"job {job_id} was created but not started; call start() again")
        deadline = record.require_deadline()
        killed = False
        while job_outcome.state_of(c.status) != RunState.EXITED:
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
        return job_outcome.run_result(self.client.api, c, record, deadline, killed)

    def kill(self, job_id: str) -> None:
        """Stop the job's container now (its use was stopped or revoked); ``wait`` then
        returns. The container and its /out stay until ``cleanup``. Idempotent."""
        found = self._find(job_id)
        if found is None:
            return
        with (engine_call(f"kill job {job_id}"),
              contextlib.suppress(docker.errors.APIError)):
            found.container.kill(signal="SIGKILL")  # 409 if it exited meanwhile: fine

    def cleanup(self, job_id: str, work_dir: Path | None = None) -> None:
        """Remove the job's container, unmount its /out tmpfs and remove its stage, however
        the job was started. Idempotent. ``work_dir`` (the spec's) also finds a warm-started
        job's /out tmpfs left there after its container went."""
        found = self._find(job_id)
        stages = self._stages_of(job_id)
        sources = [self.names.out_source(st.token) for st in stages]
        if found is not None:
            with (engine_call(f"remove job {job_id}"),
                  contextlib.suppress(docker.errors.NotFound)):
                self.client.api.remove_container(found.container.id, force=True, v=True)
            if found.record.out_source is not None:
                sources.insert(0, found.record.out_source)
            if found.record.stage_token is not None:
                stages.append(stage.Stage(self.stage_root / found.record.stage_token))
        for st in stages:  # a warm stage's tmpfs goes by its own name
            if st.owner().get("warm"):
                sources.append(self.names.warm_out_source(st.token))
        for source in dict.fromkeys(sources):
            mounts.unmount_out(source)
        for st in dict.fromkeys(stages):
            stage.remove(st)
        if work_dir is not None:
            self.warm.unmount_left(work_dir)

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
            jobs.append((record.job_id, job_outcome.state_of(c.status),
                         record.deadline or job_outcome.OVERDUE))  # unreadable: treat as passed
        seen = {j for j, _, _ in jobs}
        # A stage owned by a job names it; its /out tmpfs (if still mounted) is found by it.
        left = {o["job"] for st in stage.stages(self.stage_root)
                if (o := st.owner()).get("prefix") == self.prefix and o.get("job")}
        for job_id in sorted(left - seen):
            jobs.append((job_id, RunState.ABSENT, job_outcome.OVERDUE))
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
