"""The agent's outbox: reporting a finished run to the controller, then cleaning up.

A finished run's report is saved in its job directory before anything is sent, so a run
is only ever reported, never run again: the slots, the periodic flush and a restarted
agent all deliver from the same outbox. The job directory and container are removed only
after the controller acknowledged the report (or will never take it). Kept apart from the
loop (:mod:`containers.agent`) because delivery is the one path every kind of run ends in.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
from pathlib import Path

from authz.wire import RunReport
from containers import jobdir
from containers.agent_config import AgentConfig
from containers.agent_metrics import AgentMetrics
from containers.controller_client import ControllerClient, ControllerRefused
from containers.executor import DockerExecutor
from containers.jobwatch import Notices

log = logging.getLogger("data-sandbox.agent")


class AgentDelivery:
    """Sending runs' reports and removing what a delivered run left (part of
    :class:`containers.agent.Agent`, which sets these attributes)."""

    config: AgentConfig
    controller: ControllerClient
    executor: DockerExecutor
    metrics: AgentMetrics
    # Finished runs whose reports are being sent; guarded by the lock (the flusher and
    # the slots must not send the same report side by side).
    _delivering: set[str]
    _outbox_lock: threading.Lock

    def _job_dir(self, job_id: str) -> Path:
        return self.config.work_root / job_id

    def _report_run(self, job_id: str, report: RunReport, notices: Notices) -> None:
        """Outbox first, then the notices, then the report (see _deliver)."""
        job_dir = self._job_dir(job_id)
        with self._outbox_lock:
            self._delivering.add(job_id)
        try:
            # In the outbox before anything else can fail: the run finished, and from now on
            # it is only ever reported, never run again (a restart or the flusher sends it).
            jobdir.save_report(job_dir, report)
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
                report = jobdir.load_report(job_dir)
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
