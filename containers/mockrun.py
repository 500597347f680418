"""A run on mock data: the agent's check before a real run, and the requester's dev-run.

The mock table of each dataset is made from its declared fields only
(:mod:`compute.mockdata`, the same seed as ``GET /datasets/<id>/mock-data``), so nothing
of a provider's data is in it, and its whole console output may be shown.

The run itself is the real one on other input: the task's datasets point at the mock
tables, :func:`containers.jobdir.prepare` projects them as it projects real data, the
same executor runs the script in the same runner image under the same limits, and
:func:`containers.runjob.report` applies the same output checks. A dev-run therefore
finds what the agent's checks would find on the same outputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from authz.wire import JobState, RunReport, RunTask
from compute import mockdata
from compute.errors import SandboxError
from containers import jobdir, runjob
from containers.agent_config import AgentConfig
from containers.executor import DockerExecutor, Limits, RunResult, read_outputs
from containers.runspec import ExecutorError

log = logging.getLogger("data-sandbox.agent")

MOCK_SEED = 0
MOCK_ROWS = mockdata.DEFAULT_ROWS
#: A mock run is a check before the real one, within the same lease: kept short.
MOCK_TIMEOUT_S = 60.0
#: Console text returned whole (it is mock data), up to the wire's log size, tail kept.
MAX_CONSOLE_CHARS = 60_000
SUFFIX = "-mock"


@dataclass(frozen=True)
class MockRun:
    result: RunResult
    console: str  # stdout then stderr, whole (mock data only)
    report: RunReport  # what the agent's checks make of the outputs
    outputs: dict[str, bytes]  # every file the script wrote to /out (mock data only)

    @property
    def ok(self) -> bool:
        return self.result.ok


def mock_key(task: RunTask) -> str:
    """What a passed mock run vouches for: this script on these columns' mock tables."""
    fields = [[ds.code, [f.model_dump() for f in ds.fields]] for ds in task.datasets]
    raw = json.dumps([task.script_sha256, fields, MOCK_SEED, MOCK_ROWS], sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()


class MockPasses:
    """The :func:`mock_key` of scripts that already ran cleanly on mock data: their next
    runs skip the mock run. Kept in the work root, so a restarted agent keeps them."""

    def __init__(self, work_root: Path) -> None:
        self.path = work_root / ".mock-passed"  # a dot name: reconciliation passes it by
        self._keys: set[str] | None = None
        self._lock = threading.Lock()

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._load()

    def add(self, key: str) -> None:
        with self._lock:
            self._load().add(key)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(key + "\n")

    def _load(self) -> set[str]:
        if self._keys is None:
            try:
                self._keys = set(self.path.read_text().split())
            except FileNotFoundError:
                self._keys = set()
        return self._keys


def mock_task(task: RunTask, data_root: Path, rows: int = MOCK_ROWS, seed: int = MOCK_SEED
              ) -> RunTask:
    """``task`` on mock tables written under ``data_root``, as a job of its own id."""
    data_root.mkdir(parents=True, exist_ok=True)
    datasets = []
    for ds in task.datasets:
        frame = mockdata.generate([f.model_dump() for f in ds.fields], rows, seed)
        (data_root / f"{ds.code}.csv").write_bytes(mockdata.to_csv(frame))
        # Mock tables hold the permitted fields only, one synthetic record per person:
        # no identifier to read, each record its own contributor.
        datasets.append(ds.model_copy(update={"location": f"{ds.code}.csv", "format": "csv",
                                              "identifiers": ()}))
    return task.model_copy(update={"job_id": task.job_id + SUFFIX,
                                   "datasets": tuple(datasets)})


def console_text(result: RunResult) -> str:
    text = result.stdout.decode("utf-8", "replace") + result.stderr.decode("utf-8", "replace")
    if result.stdout_truncated or result.stderr_truncated:
        text += "\n[console output truncated at the log limit]"
    return text[-MAX_CONSOLE_CHARS:]


def run(executor: DockerExecutor, task: RunTask, work_root: Path, image: str,
        limits: Limits, *, timeout_s: float = MOCK_TIMEOUT_S, rows: int = MOCK_ROWS,
        seed: int = MOCK_SEED) -> MockRun:
    """Run ``task``'s script on mock data in a job directory of its own; clean up after."""
    mtask = mock_task(task, work_root / (task.job_id + SUFFIX) / "mockdata", rows, seed)
    job_dir = jobdir.check_task(mtask, work_root)
    data_root = job_dir / "mockdata"
    mtask = mtask.model_copy(update={"timeout_s": min(mtask.timeout_s, timeout_s)})
    try:
        spec = jobdir.prepare(mtask, job_dir, lambda _provider: [data_root], image,
                              replace(limits, timeout_s=min(limits.timeout_s, timeout_s)))
        result = executor.run(spec)
        outputs = _read_all(result) if result.ok else {}
        report = runjob.report(mtask, job_dir, result, image, None)
        return MockRun(result, console_text(result), report, outputs)
    finally:
        executor.cleanup(mtask.job_id, work_dir=job_dir / "work")
        shutil.rmtree(job_dir, ignore_errors=True)


def _read_all(result: RunResult) -> dict[str, bytes]:
    try:
        return read_outputs(result.out_dir)
    except ExecutorError:
        return {}  # too many or too large: the checks say so


def check_first(executor: DockerExecutor, task: RunTask, config: AgentConfig,
                passes: MockPasses) -> RunReport | None:
    """The agent's mock run before a script's run on the provider's data, unless the script
    already passed one: None if it passes, else the job's failure report (its whole
    console output; the controller gives the permit's run back)."""
    key = mock_key(task)
    if key in passes:
        return None
    try:
        mock = run(executor, task, config.work_root, config.image, config.limits)
    except SandboxError as e:
        log.error("mock run of %s could not run: %s", task.job_id, e)
        return failure_report(f"the agent could not run the script on mock data "
                              f"({type(e).__name__}): it did not run on the provider's data "
                              "and no run of the permit was used")
    if not mock.ok:
        return failure_report(failure_reason(mock), mock.console)
    passes.add(key)
    return None


def failure_report(reason: str, console: str | None = None) -> RunReport:
    """The report of a job whose script failed on mock data: nothing ran on real data."""
    return RunReport(state=JobState.FAILED, reason=reason[:2000], log=console, rows_read=0,
                     bytes_read=0, outputs=(), mock_failed=True)


def failure_reason(mock: MockRun) -> str:
    """The job's reason when its script failed on mock data: platform text only."""
    return (f"the script failed on mock data ({runjob.failure(mock.result)}): it did not "
            "run on the provider's data and no run of the permit was used; the console "
            "output of the mock run is in the job's log (try `sandbox dev-run` locally)")
