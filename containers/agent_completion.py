"""How the agent completes each kind of run once it started, up to its report.

A script waits for its container, is checked and held to the timing grain; statistics,
joint and PSI parts are computed by the agent itself (no container). Each path ends in
the outbox (:mod:`containers.agent_delivery`). Kept apart from the loop that takes tasks
and starts them (:mod:`containers.agent`): both the loop and crash recovery
(:mod:`containers.agent_recovery`) complete runs through these.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime

from authz.wire import JobState, RunReport, RunTask
from compute.errors import SandboxError
from containers import (
    joint_cell_holders,
    joint_masks,
    joint_part,
    psi_part,
    runjob,
    statistics_job,
)
from containers.agent_delivery import AgentDelivery
from containers.audit_store import AuditStore
from containers.jobwatch import LeaseWatch, Notices

log = logging.getLogger("data-sandbox.agent")


class AgentCompletion(AgentDelivery):
    """Completing started runs (part of :class:`containers.agent.Agent`)."""

    @functools.cached_property
    def audit(self) -> AuditStore:
        """The provider's release audit store, opened on the first job."""
        return AuditStore(self.config.audit_file)

    def _stop_wait(self, seconds: float) -> None:
        if seconds > 0:
            self.controller.stop.wait(seconds)

    def _complete_statistics(self, task: RunTask, notices: Notices | None = None) -> None:
        self._complete_in_agent(task, notices, lambda: statistics_job.statistics_report(
            task, self._job_dir(task.job_id), self.config.image, self.audit))

    def _complete_joint(self, task: RunTask, notices: Notices | None = None,
                        key_set: dict[str, object] | None = None) -> None:
        """``key_set``: the complete key set the start notice's answer carried, if it did."""
        job_dir = self._job_dir(task.job_id)
        masking = functools.partial(
            joint_masks.wait_for_session, self.controller, task, job_dir,
            self.config.signing_key, task.timeout_s, self.controller.stop, known=key_set)
        rounds = functools.partial(
            joint_cell_holders.withdrawn_records, self.controller, task,
            signing_key=self.config.signing_key, timeout_s=task.timeout_s,
            stop=self.controller.stop)
        self._complete_in_agent(task, notices, lambda: joint_part.run_part(
            task, job_dir, self.config.signing_key, masking, rounds))

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
