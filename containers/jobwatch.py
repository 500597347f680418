"""What runs beside a job in the agent: its ordered notices to the controller, and the
watch on its lease that stops it once its use was stopped or revoked."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from authz.wire import TERMINAL
from compute.errors import SandboxError
from containers.controller_client import (
    ControllerClient,
    ControllerRefused,
    ControllerUnreachable,
)
from containers.executor import DockerExecutor

log = logging.getLogger("data-sandbox.agent")


class Notices:
    """One job's calls that need not hold up its run, made in order on one thread.

    The controller hears ``started`` and then ``checking`` while the container runs and
    the outputs are checked; :meth:`flush` (called before the result is sent) waits until
    each was acknowledged and re-raises the first failure, so the ledger still reads
    running < checking < result, and a refused notice stops the job as before (no result:
    its lease expires or a restarted agent reconciles). After a failed notice the later
    ones are not sent. ``side`` work (not a notice) runs on the same thread, in order.
    """

    def __init__(self, job_id: str) -> None:
        self._q: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...], Future[Any], bool]
                             | None] = queue.Queue()
        self._sent: list[Future[Any]] = []
        threading.Thread(target=self._run, daemon=True, name=f"notices-{job_id}").start()

    def _run(self) -> None:
        failed: BaseException | None = None
        while (item := self._q.get()) is not None:
            fn, args, fut, notice = item
            if notice and failed is not None:
                fut.set_exception(failed)
                continue
            try:
                fut.set_result(fn(*args))
            except Exception as e:  # handed to whoever waits on the future
                failed = e if notice else failed
                fut.set_exception(e)

    def send(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        self._sent.append(fut)
        self._q.put((fn, args, fut, True))
        return fut

    def side(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        self._q.put((fn, args, fut, False))
        return fut

    def close(self) -> None:
        """End the thread once the queued calls are done, without waiting."""
        self._q.put(None)

    def flush(self) -> None:
        """Wait for every notice to be acknowledged; raise the first failure. Ends the thread."""
        self.close()
        for fut in self._sent:
            fut.result()


class LeaseWatch:
    """Checks a running job's lease every ``watch_interval_s`` and kills its container
    once the lease has ended (stopped, revoked, agent deactivated). :meth:`end` stops the
    watching and says whether the job was stopped."""

    def __init__(self, controller: ControllerClient, executor: DockerExecutor, job_id: str,
                 interval_s: float) -> None:
        self.controller, self.executor = controller, executor
        self.job_id, self.interval_s = job_id, interval_s
        self.stopped = False
        self._done = threading.Event()
        threading.Thread(target=self._run, daemon=True, name=f"watch-{job_id}").start()

    def _run(self) -> None:
        while not self._done.wait(self.interval_s):
            try:
                lease = self.controller.leased(self.job_id, retry_for_s=0)
            except ControllerRefused as e:
                if e.status not in (401, 403):
                    continue
                lease = None  # this agent was locked out: its work stops too
            except ControllerUnreachable:
                continue  # no word either way: the run goes on
            if lease is None or lease.state in TERMINAL:
                self.stopped = True
                try:
                    self.executor.kill(self.job_id)
                except SandboxError:
                    log.exception("could not kill stopped job %s", self.job_id)
                return

    def end(self) -> bool:
        self._done.set()
        return self.stopped
