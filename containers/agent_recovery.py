"""Crash recovery: what a previous life of the agent left in its work root.

A job's directory holds everything needed to finish it, and the container's deadline is a
label, so on start the agent finishes the runs whose job directories it finds in its own
work root (each agent needs its own), delivers reports still in the outbox, and removes
what the controller no longer leases to it. Kept apart because it runs once, at start,
and decides per job which completion path (:mod:`containers.agent_completion`) resumes it.
"""

from __future__ import annotations

import logging
import threading

from authz.wire import RunReport
from compute.errors import SandboxError
from containers import jobdir
from containers.agent_completion import AgentCompletion
from containers.executor import RunState

log = logging.getLogger("data-sandbox.agent")


class AgentRecovery(AgentCompletion):
    """Reconciling the work root at start (part of :class:`containers.agent.Agent`)."""

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
        pending = jobdir.load_report(self._job_dir(job_id))
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
        task = jobdir.load_task(self._job_dir(job_id))
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
            self.executor.start(jobdir.run_spec(task, self._job_dir(job_id),
                                                self.config.image, self.config.limits))
            self.controller.started(job_id)
        threading.Thread(target=self._complete, args=(task,), daemon=True,
                         name=f"resume-{job_id}").start()
        return True
