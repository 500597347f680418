"""The provider-side agent: pulls tasks over HTTP, runs them in the provider's domain.

It never imports the controller. For each run it projects the permitted columns into a
per-job input file, runs the script with the Docker executor, checks the outputs, and
sends back only what passed (blocked outputs leave as a hash and a reason, never as
content). Several slots run jobs side by side; the controller decides which job goes
next (fair across requesters).

Crash safety: a job's directory holds everything needed to finish it, the container's
deadline is a label, and the job directory and container are removed only after the
controller acknowledged the result. On start, :meth:`Agent.reconcile` finishes the runs
whose job directories it finds in its own work root (each agent needs its own), and
removes what the controller no longer leases to it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from authz.wire import (
    AgentIdentity,
    AgentStatus,
    DatasetTask,
    JobState,
    RunReport,
    RunTask,
    SchemaCheckTask,
    SchemaVerdict,
    VerdictError,
)
from compute.errors import InvalidInput, SandboxError
from containers import (
    datasets,
    joint_masks,
    joint_part,
    mockrun,
    psi_part,
    review_audit,
    runjob,
)
from containers.agent_config import AgentConfig, banner
from containers.agent_metrics import AgentMetrics
from containers.audit_store import AuditStore
from containers.claims import ClaimBook
from containers.controller_client import (
    ControllerClient,
    ControllerRefused,
)
from containers.executor import DockerExecutor, RunState, WarmSlot
from containers.jobwatch import LeaseWatch, Notices

log = logging.getLogger("data-sandbox.agent")


class Agent:
    def __init__(self, config: AgentConfig, executor: DockerExecutor,
                 metrics: AgentMetrics | None = None) -> None:
        self.config = config
        # Counted always; served on a port only when the operator asks (agent_metrics).
        self.metrics = metrics or AgentMetrics(config.slots)
        self.executor = executor
        self.controller = ControllerClient(config.controller_url, config.token,
                                           config.http_timeout_s,
                                           retry_for_s=config.controller_retry_s)
        # Finished runs whose reports are being sent; guarded by the lock (the flusher and
        # the slots must not send the same report side by side).
        self._delivering: set[str] = set()
        self._outbox_lock = threading.Lock()
        self._next_flush = 0.0
        self.mock_passes = mockrun.MockPasses(config.work_root)
        self.claims = ClaimBook(config.work_root)
        self._announced = False

    @functools.cached_property
    def audit(self) -> AuditStore:
        """The provider's release audit store, opened on the first job."""
        return AuditStore(self.config.audit_file)

    def check_config(self, me: AgentIdentity | None = None) -> None:
        """Fail closed on roots that would let one provider reach another's files."""
        providers = (me or self.controller.me()).providers
        if len(providers) > 1 and not self.config.provider_roots:
            raise InvalidInput("data_roots", "this agent serves several providers: give each "
                                             "its own roots (PROVIDER_ID=PATH)")
        if self.config.provider_roots and self.config.data_roots:
            raise InvalidInput("data_roots", "mix of shared and per-provider roots")

    def announce(self, me: AgentIdentity) -> None:
        """The start-up banner, and warnings about roots that look wrong (once)."""
        if self._announced:  # not again on every retry of a failed start
            return
        self._announced = True
        runtime = self.executor.runtime or "engine's default"
        lines, warnings = banner(self.config, f"{me.id} ({me.name})", me.providers,
                                 runtime + (" (gVisor)" if runtime == "runsc" else ""))
        for line in lines:
            log.info("%s", line)
        for warning in warnings:
            log.warning("%s", warning)

    def serve(self, stop: threading.Event) -> bool:
        """Check the configuration, reconcile, then run ``slots`` workers until ``stop``.
        False (at once, nothing served) if the controller refuses the agent's token or the
        configuration is refused; the reason is logged."""
        self.controller.stop = stop  # a stop ends any wait for the controller at once
        while not stop.is_set():
            try:
                me = self.controller.me()
                self.announce(me)
                self.check_config(me)
                self.reconcile()
                break
            except InvalidInput as e:
                log.error("agent configuration refused, not serving: %s", e)
                return False
            except ControllerRefused as e:
                if e.status not in (401, 403):
                    log.exception("reconcile failed")
                    stop.wait(1.0)
                    continue
                # Retrying cannot help: say what to do and stop.
                log.error("the controller refused this agent's token (HTTP %d): give the "
                          "agent's own token (agt_…, from `sandbox agent-create`), not a "
                          "party's, and check the agent was not deactivated", e.status)
                return False
            except Exception:  # the controller may not be up yet: try again
                log.exception("reconcile failed")
                stop.wait(1.0)
        workers = [threading.Thread(target=self._worker, args=(stop,), daemon=True,
                                    name=f"agent-slot-{i}") for i in range(self.config.slots)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return True

    def _worker(self, stop: threading.Event) -> None:
        slot = WarmSlot(self.config.work_root, self.config.image, self.config.limits)
        while not stop.is_set():
            try:
                self._flush_outbox_now_and_then()
                self.prewarm(slot)
                self.run_once(self.config.poll_wait_s, slot)
            except Exception:  # keep serving: one bad task or a restart must not stop the agent
                log.exception("agent loop error")
                stop.wait(1.0)
        self.executor.warm.empty(slot)

    def _stop_wait(self, seconds: float) -> None:
        if seconds > 0:
            self.controller.stop.wait(seconds)

    def _flush_outbox_now_and_then(self) -> None:
        with self._outbox_lock:
            if time.monotonic() < self._next_flush:
                return
            self._next_flush = time.monotonic() + self.config.outbox_interval_s
        if sent := self.flush_outbox():
            log.info("sent %d report(s) left in the outbox", sent)
        # Reviews settle at the same pace: held populations count as released meanwhile.
        if settled := review_audit.settle_reviews(
                self.audit, functools.partial(self.controller.leased, retry_for_s=0)):
            log.info("settled the audit of %d reviewed job(s)", settled)

    def prewarm(self, slot: WarmSlot) -> None:
        """Have the slot's next container started ahead of its job, unless one is ready."""
        if self.config.warm_start:
            try:
                self.executor.warm.prewarm(slot)
            except SandboxError:  # jobs still start cold
                log.exception("could not start a warm container")

    def status(self) -> AgentStatus | None:
        """What the agent says of itself with each poll (the operator's view of its health);
        None if it cannot be said on the wire: health never stops the agent polling."""
        try:
            return AgentStatus(runtime=self.executor.runtime, slots=self.config.slots)
        except ValidationError:
            return None

    def run_once(self, wait_s: float = 0.0, slot: WarmSlot | None = None) -> bool:
        # Kept in the work root until handled: a restart takes the claim back (claims.py).
        key = self.claims.take()
        task = self.controller.next_task(wait_s, self.status(), claim_key=key)
        if task is None:
            self.claims.settle(key)
            return False
        with self.metrics.busy("schema_check" if isinstance(task, SchemaCheckTask) else "run"):
            if isinstance(task, SchemaCheckTask):
                self.check_schema(task.dataset)
            else:
                # Statistics, joint and PSI parts need no container: the slot keeps its
                # warm one.
                self.run_job(task, slot if _needs_container(task) else None)
        self.claims.settle(key)
        return True

    def check_schema(self, ds: DatasetTask) -> None:
        try:
            path = datasets.resolve(ds.location, self.roots(ds.provider_id))
            rows = datasets.schema_check(path, ds.format,
                                         [f.model_dump() for f in ds.fields])
            verdict = SchemaVerdict(ok=True, rows=rows)
        except InvalidInput as e:
            verdict = SchemaVerdict(ok=False, error=VerdictError(field=e.field, rule=e.rule))
        except Exception as e:  # any failure ends in a verdict, or the check is retried forever
            # Only the error's type: its message may quote the file's content.
            log.exception("schema check of %s failed", ds.id)
            verdict = SchemaVerdict(ok=False, error=VerdictError(
                field="location", rule=f"the agent could not check the file ({type(e).__name__})"))
        self.metrics.observe_schema_check(verdict.ok)
        self.controller.schema_verdict(ds.id, verdict)

    def _job_dir(self, job_id: str) -> Path:
        return self.config.work_root / job_id

    def roots(self, provider_id: str) -> list[Path]:
        if self.config.provider_roots:
            if provider_id not in self.config.provider_roots:
                raise InvalidInput("location", "this agent holds no data roots for the "
                                               "dataset's provider")
            return self.config.provider_roots[provider_id]
        return self.config.data_roots

    def run_job(self, task: RunTask, slot: WarmSlot | None = None) -> None:
        """Prepare and start the job (in the slot's warm container if the executor can),
        then wait, check and report. A statistics job (the platform's own code, on the
        projected permitted columns) needs no container: the agent computes it itself."""
        job_id = task.job_id
        try:
            job_dir = runjob.check_task(task, self.config.work_root)
        except InvalidInput as e:
            # Nothing was written; report without touching the disk under this job id.
            log.error("refusing task %r: %s", job_id, e)
            self.controller.result(job_id, RunReport.failed(f"agent refused the task: {e}"))
            return
        if self.config.mock_first and task.kind == "script" and task.joint is None and \
                task.statistics is None and not self._passes_on_mock(task):
            return
        notices = Notices(job_id)
        acked: Future[datetime] | None = None
        prepare = functools.partial(runjob.prepare, task, job_dir, self.roots,
                                    self.config.image, self.config.limits,
                                    self.audit)
        try:
            if _needs_container(task):
                self.executor.start_job(job_dir, prepare, warm=slot)
            else:
                prepare()  # no container: the agent computes it (_complete_statistics)
        except BaseException as e:
            notices.close()
            if not isinstance(e, SandboxError):
                raise
            self._deliver(job_id, RunReport.failed(f"{type(e).__name__}: {e}"))
            return
        if task.joint is not None:
            # The part's mask key rides with its start notice (one request and one
            # transaction), before the aggregation, so peers rarely wait. If it did not get
            # through, the plain notice follows and the key is announced again
            # (idempotently) before masking.
            try:
                joint_masks.start_and_announce(self.controller, task, job_dir,
                                               self.config.signing_key)
            except (SandboxError, RuntimeError) as e:
                log.warning("mask key of %s not announced yet: %s", job_id, e)
                notices.send(self.controller.started, job_id)
        else:
            # Acknowledged before the result; when, for the timing grain (_complete).
            acked = notices.send(self._started, job_id)
        if task.psi is not None:
            self._complete_psi(task, notices)
        elif task.joint is not None:
            self._complete_joint(task, notices)
        elif task.statistics is None:
            self._complete(task, notices, started=datetime.now(UTC), acked=acked)
        else:
            self._complete_statistics(task, notices)

    def _passes_on_mock(self, task: RunTask) -> bool:
        """Whether the script may run on the provider's data: it passed on mock data (now,
        or before). Otherwise its failure is reported and the permit's run given back."""
        try:
            failed = mockrun.check_first(self.executor, task, self.config, self.mock_passes)
        except Exception:  # a fault of the agent's, not the script's: fail closed, now
            log.exception("mock run of %s could not be completed", task.job_id)
            failed = RunReport.failed("the agent could not complete the run on mock data")
        if failed is not None:
            self._deliver(task.job_id, failed)
            return False
        lease = self.controller.leased(task.job_id)
        if lease is None or not lease.active:  # stopped or revoked during the mock run
            log.warning("job %s ended during its mock run; not run", task.job_id)
            return False
        return True

    def _complete_statistics(self, task: RunTask, notices: Notices | None = None) -> None:
        self._complete_in_agent(task, notices, lambda: runjob.statistics_report(
            task, self._job_dir(task.job_id), self.config.image, self.audit))

    def _complete_joint(self, task: RunTask, notices: Notices | None = None) -> None:
        job_dir = self._job_dir(task.job_id)
        masking = functools.partial(
            joint_masks.wait_for_session, self.controller, task, job_dir,
            self.config.signing_key, task.timeout_s, self.controller.stop)
        self._complete_in_agent(task, notices, lambda: joint_part.run_part(
            task, job_dir, self.config.signing_key, masking))

    def _complete_in_agent(self, task: RunTask, notices: Notices | None,
                           compute: Callable[[], RunReport]) -> None:
        """Run work the agent computes itself (no container) and report its outcome."""
        notices = notices or Notices(task.job_id)
        try:
            report = compute()
            if report.state != JobState.FAILED:
                # Checked just now, in this call: the controller records the checking step
                # with the result (one transaction) rather than on a notice of its own.
                report = report.model_copy(update={"checked": True})
        except SandboxError as e:
            report = RunReport.failed(f"{type(e).__name__}: {e}")
        except BaseException:
            notices.close()
            raise
        self._report_run(task.job_id, report, notices)

    def _complete_psi(self, task: RunTask, notices: Notices | None = None) -> None:
        notices = notices or Notices(task.job_id)
        try:
            report = psi_part.run_part(self.controller, task, self._job_dir(task.job_id),
                                       task.timeout_s, self.controller.stop)
            notices.send(self.controller.checking, task.job_id)
        except BaseException:
            notices.close()
            raise
        self._report_run(task.job_id, report, notices)

    def _started(self, job_id: str) -> datetime:
        """Tell the controller the run started; when it acknowledged (after its clock
        stamped the start)."""
        self.controller.started(job_id)
        return datetime.now(UTC)

    def _complete(self, task: RunTask, notices: Notices | None = None,
                  started: datetime | None = None,
                  acked: Future[datetime] | None = None) -> None:
        """Wait for the container, check, report; clean up once the controller has it."""
        job_id = task.job_id
        notices = notices or Notices(job_id)
        job_dir = self._job_dir(job_id)
        # Read while the job runs: the input's rare values, for the output checks.
        rare = notices.side(runjob.rare_values, task, job_dir)
        watch = LeaseWatch(self.controller, self.executor, job_id,
                           self.config.watch_interval_s)
        try:
            result = self.executor.wait(job_id)
            if watch.end():
                # Stopped or revoked while it ran: nothing of it is checked or reported
                # (the controller already ended the job); its outputs go with the cleanup.
                notices.close()
                log.warning("job %s was stopped while it ran; outputs discarded", job_id)
                self._cleanup(job_id)
                return
            masking = functools.partial(
                joint_masks.wait_for_session, self.controller, task, job_dir,
                self.config.signing_key, task.timeout_s, self.controller.stop)
            report = runjob.report(task, job_dir, result, self.config.image,
                                   self.config.signing_key,
                                   rare_values=None if rare.exception() else rare.result(),
                                   masking=masking, audit=self.audit)
            # Nothing downstream (states, ledger times, receipts) can then time the script
            # more finely than the grain; the checks above ran inside it.
            # Counted from the controller's acknowledgement of the start, not from the
            # agent's own clock: the start the controller stamps (and shows) is later by the
            # notice's way there, and the run must not be seen ending before a grain.
            if acked is not None and started is not None:
                with contextlib.suppress(Exception):  # a refused notice fails at flush
                    started = max(started, acked.result(timeout=self.config.http_timeout_s))
            self._stop_wait(runjob.seconds_to_grain(result, self.config.timing_grain_s,
                                                    since=started))
            notices.send(self.controller.checking, job_id)
        except SandboxError as e:
            report = RunReport.failed(f"{type(e).__name__}: {e}")
        except BaseException:
            notices.close()
            raise
        finally:
            watch.end()
        self._report_run(job_id, report, notices)

    def _report_run(self, job_id: str, report: RunReport, notices: Notices) -> None:
        """Outbox first, then the notices, then the report (see _deliver)."""
        job_dir = self._job_dir(job_id)
        with self._outbox_lock:
            self._delivering.add(job_id)
        try:
            # In the outbox before anything else can fail: the run finished, and from now on
            # it is only ever reported, never run again (a restart or the flusher sends it).
            runjob.save_report(job_dir, report)
            self.metrics.observe_run(report)
            try:
                notices.flush()  # running and checking are on the ledger before the result
            except ControllerRefused as e:
                if e.status != 409:
                    raise
                # Requeued meanwhile (the lease ran out while the controller was away): the
                # report is still accepted unless another agent took the job.
                log.warning("notice for %s refused (%s); reporting the run anyway", job_id, e)
            self._deliver(job_id, report)
        finally:
            with self._outbox_lock:
                self._delivering.discard(job_id)

    def _deliver(self, job_id: str, report: RunReport) -> None:
        """Send the report; once the controller has it (or never will), clean up.

        A controller that stays unreachable raises ControllerUnreachable: the job's files,
        its report among them, stay for :meth:`flush_outbox` or the next start.
        """
        try:
            self.controller.result(job_id, report)
        except ControllerRefused as e:
            if e.status >= 500:
                raise  # keep the job's files: the outbox sends the report again
            if e.status == 400 and report.checked:
                # A controller of an earlier release refuses the field: the checking
                # notice on its own, then the same report without it.
                with contextlib.suppress(ControllerRefused):
                    self.controller.checking(job_id)
                self._deliver(job_id, report.model_copy(update={"checked": False}))
                return
            log.error("result for %s refused: %s", job_id, e)
            if e.status not in (404, 409):
                # Refused as malformed: the job must not stay leased until it is requeued
                # and run again, so report a plain failure, which carries no output.
                self._send_failure(job_id, RunReport.failed(
                    f"agent report refused by the controller: {e}",
                    report.rows_read, report.bytes_read))
            # 409: already finished (a repeated report); 404: no longer this agent's job.
        self._cleanup(job_id)

    def _send_failure(self, job_id: str, report: RunReport) -> None:
        try:
            self.controller.result(job_id, report)
        except ControllerRefused as e:
            if e.status >= 500:
                raise
            log.error("failure report for %s refused: %s", job_id, e)

    def flush_outbox(self) -> int:
        """Send every finished run's report still waiting in the work root; how many went."""
        root = self.config.work_root
        if not root.exists():
            return 0
        sent = 0
        for job_dir in sorted(root.iterdir()):
            if not job_dir.is_dir():  # the mock passes' file (containers.mockrun)
                continue
            with self._outbox_lock:
                if job_dir.name in self._delivering:
                    continue
                report = runjob.load_report(job_dir)
                if report is None:
                    continue
                self._delivering.add(job_dir.name)
            try:
                self._deliver(job_dir.name, report)
                sent += 1
            finally:
                with self._outbox_lock:
                    self._delivering.discard(job_dir.name)
        return sent

    def _cleanup(self, job_id: str) -> None:
        # The work dir too: the executor finds there what a container already gone left.
        self.executor.cleanup(job_id, work_dir=self._job_dir(job_id) / "work")
        shutil.rmtree(self._job_dir(job_id), ignore_errors=True)

    def reconcile(self) -> list[str]:
        """Finish, or remove, what a previous life of this agent left behind."""
        # Ownership is the job directory in this agent's own work root: other agents on the
        # same engine label their containers alike, and theirs must never be touched.
        root = self.config.work_root
        self.executor.warm.reset(root)  # unbound warm containers: never a job's
        states = {job_id: state for job_id, state, _ in self.executor.list_jobs()}
        # Job ids start alphanumeric: a name starting with "." (the executor's warm
        # directories) is no job's.
        mine = sorted(d.name for d in root.iterdir()
                      if d.is_dir() and not d.name.startswith(".")
                      ) if root.exists() else []
        seen = {job_id: states.get(job_id, RunState.ABSENT) for job_id in mine}
        resumed = []
        for job_id, state in sorted(seen.items()):
            try:
                if self._reconcile_one(job_id, state):
                    resumed.append(job_id)
            except SandboxError:
                log.exception("could not reconcile %s; its lease will expire", job_id)
        return resumed

    def _reconcile_one(self, job_id: str, state: RunState) -> bool:
        pending = runjob.load_report(self._job_dir(job_id))
        if pending is not None:
            # The run finished before the restart: report it, never run it again.
            self._deliver(job_id, pending)
            return False
        lease = self.controller.leased(job_id)
        task_file = self._job_dir(job_id) / "task.json"
        prepared = task_file.exists() and (self._job_dir(job_id) / "input.json").exists()
        if lease is None or not lease.active:
            self._cleanup(job_id)  # not ours any more, or already finished
            return False
        if not prepared:
            self._cleanup(job_id)
            self._deliver(job_id, RunReport.failed("agent restarted before the run was "
                                                   "prepared"))
            return False
        task = runjob.load_task(self._job_dir(job_id))
        if task.psi is not None:  # run here, never in a container
            threading.Thread(target=self._complete_psi, args=(task,), daemon=True,
                             name=f"resume-{job_id}").start()
            return True
        if task.statistics is not None:  # computed here, never in a container
            threading.Thread(target=self._complete_statistics, args=(task,), daemon=True,
                             name=f"resume-{job_id}").start()
            return True
        if task.joint is not None and state == RunState.ABSENT:
            # Computed here (a container left by an older agent is finished below); the
            # part's mask key is on disk, so it masks with the key it announced.
            threading.Thread(target=self._complete_joint, args=(task,), daemon=True,
                             name=f"resume-{job_id}").start()
            return True
        if state == RunState.ABSENT:
            # Prepared but never started (or started and already collected): start is
            # idempotent, and the deadline is set afresh only for a new container.
            self.executor.start(runjob.run_spec(task, self._job_dir(job_id),
                                                self.config.image, self.config.limits))
            self.controller.started(job_id)
        threading.Thread(target=self._complete, args=(task,), daemon=True,
                         name=f"resume-{job_id}").start()
        return True


def _needs_container(task: RunTask) -> bool:
    """Only a requester's script runs in a container; the platform's own computations
    (statistics, a joint part's local aggregation, PSI) run in the agent."""
    return task.statistics is None and task.psi is None and task.joint is None
