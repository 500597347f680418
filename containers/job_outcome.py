"""What a job's container says of it: its state, and the facts of its finished run.

The executor keeps no state of its own (:mod:`containers.executor`): a job's state is its
container's engine status, and a finished run's facts (exit code, time-out, out of
memory, bounded logs) are read off the container and its labels, the same whichever
executor instance started it. Kept apart from starting and removing containers: this is
pure reading, and the one place the engine's states map onto :class:`RunState`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from containers.engine import engine_call, parse_engine_time, read_log
from containers.records import ContainerRecord
from containers.runspec import ExecutorError, RunResult, RunState

#: The deadline of a job whose deadline cannot be read, or whose container is gone: passed.
OVERDUE = datetime.min.replace(tzinfo=UTC)
STATUS = {
    "created": RunState.CREATED,
    "running": RunState.RUNNING, "paused": RunState.RUNNING, "restarting": RunState.RUNNING,
    "exited": RunState.EXITED, "dead": RunState.EXITED, "removing": RunState.EXITED,
}


def state_of(status: str) -> RunState:
    """The run state of a container in the engine's ``status`` (unknown: exited)."""
    return STATUS.get(status, RunState.EXITED)


def run_result(api: Any, c: Any, record: ContainerRecord, deadline: datetime, killed: bool
               ) -> RunResult:
    """The facts of a finished job's run, read off its container (``c``, reloaded)
    through the engine's low-level ``api``; ``killed``: the caller killed it at the
    deadline."""
    st = c.attrs["State"]
    exit_code = st.get("ExitCode")
    finished = parse_engine_time(st.get("FinishedAt"))
    # After a restart we did not see the kill; a 137 at or after the deadline is ours.
    timed_out = killed or (exit_code == 137 and finished is not None and finished >= deadline)
    oom = bool(st.get("OOMKilled")) or (exit_code == 137 and not timed_out)
    if record.job_id is None or record.out_dir is None:
        raise ExecutorError(f"container {c.name} does not say where its /out is")
    with engine_call(f"logs of {c.name}"):
        out, out_trunc = read_log(api, c.id, stderr=False,
                                  limit=record.log_bytes)
        err, err_trunc = read_log(api, c.id, stderr=True,
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
