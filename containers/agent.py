"""The provider-side agent: pulls tasks over HTTP, runs them in the provider's domain.

It never imports the controller. For each run it projects the permitted columns into a
per-job input file, runs the script with the Docker executor, checks the outputs, and
sends back only what passed (blocked outputs leave as a hash and a reason, never as
content). Several slots run jobs side by side; the controller decides which job goes
next (fair across requesters).

This module holds the loop (start-up checks, the slots, taking a task and starting its
run). How a started run is completed, how its report is delivered, and how a restarted
agent finishes what it finds in its work root live in :mod:`containers.agent_completion`,
:mod:`containers.agent_delivery` and :mod:`containers.agent_recovery`, which
:class:`Agent` inherits from.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from authz.wire import (
    AgentIdentity,
    AgentStatus,
    DatasetTask,
    RunReport,
    RunTask,
    SchemaCheckTask,
    SchemaVerdict,
    VerdictError,
)
from compute.errors import InvalidInput, SandboxError
from containers import (
    datasets,
    jobdir,
    joint_masks,
    mockrun,
    review_audit,
)
from containers.agent_config import AgentConfig, banner
from containers.agent_metrics import AgentMetrics
from containers.agent_recovery import AgentRecovery
from containers.claims import ClaimBook
from containers.controller_client import (
    ControllerClient,
    ControllerRefused,
)
from containers.executor import DockerExecutor, WarmSlot
from containers.jobwatch import Notices

log = logging.getLogger("data-sandbox.agent")


class Agent(AgentRecovery):
    def __init__(self, config: AgentConfig, executor: DockerExecutor,
                 metrics: AgentMetrics | None = None) -> None:
        self.config = config
        # Counted always; served on a port only when the operator asks (agent_metrics).
        self.metrics = metrics or AgentMetrics(config.slots)
        self.executor = executor
        self.controller = ControllerClient(config.controller_url, config.token,
                                           config.http_timeout_s,
                                           retry_for_s=config.controller_retry_s)
        # The outbox's (containers.agent_delivery).
        self._delivering: set[str] = set()
        self._outbox_lock = threading.Lock()
        self._next_flush = 0.0
        self.mock_passes = mockrun.MockPasses(config.work_root)
        self.claims = ClaimBook(config.work_root)
        self._announced = False

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
            job_dir = jobdir.check_task(task, self.config.work_root)
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
        prepare = functools.partial(jobdir.prepare, task, job_dir, self.roots,
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
        key_set: dict[str, object] | None = None
        if task.joint is not None:
            # The part's mask key rides with its start notice (one request and one
            # transaction), before the aggregation, so peers rarely wait. If it did not get
            # through, the plain notice follows and the key is announced again
            # (idempotently) before masking.
            try:
                key_set = joint_masks.start_and_announce(self.controller, task, job_dir,
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
            self._complete_joint(task, notices, key_set)
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



def _needs_container(task: RunTask) -> bool:
    """Only a requester's script runs in a container; the platform's own computations
    (statistics, a joint part's local aggregation, PSI) run in the agent."""
    return task.statistics is None and task.psi is None and task.joint is None
