"""The agent keeps a finished run's report until the controller has it (no Docker needed)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from authz.wire import JobState, RunReport
from containers import jobdir, runjob
from containers.agent import Agent
from containers.agent_config import AgentConfig
from containers.controller_client import (
    ControllerClient,
    ControllerRefused,
    ControllerUnreachable,
)
from containers.executor import RunState
from containers.runspec import RunResult

REPORT = RunReport(state=JobState.FAILED, reason="exited with status 1", rows_read=3,
                   bytes_read=30, input_sha256="a" * 64, runner_image="img", outputs=())


class _Controller:
    """Answers the agent's report calls: unreachable ``outage`` times, then acknowledged."""

    def __init__(self, outage: int) -> None:
        self.outage = outage
        self.reports: list[tuple[str, RunReport]] = []
        self.leased_asked: list[str] = []

    def result(self, job_id: str, report: RunReport) -> dict[str, Any]:
        if self.outage:
            self.outage -= 1
            raise ControllerUnreachable("controller unreachable for /result")
        self.reports.append((job_id, report))
        return {"state": str(report.state)}

    def leased(self, job_id: str) -> None:
        self.leased_asked.append(job_id)


class _WarmPool:
    def reset(self, root: Path) -> list[str]:
        return []


class _Executor:
    def __init__(self) -> None:
        self.cleaned: list[str] = []
        self.started: list[str] = []
        self.warm = _WarmPool()

    def cleanup(self, job_id: str, work_dir: Path | None = None) -> None:
        self.cleaned.append(job_id)

    def start(self, *_: Any) -> None:
        self.started.append("x")

    def list_jobs(self) -> list[tuple[str, RunState, None]]:
        return []


def _agent(tmp_path: Path, controller: _Controller) -> tuple[Agent, _Executor]:
    executor = _Executor()
    cfg = AgentConfig(controller_url="http://127.0.0.1:9", token="agt_x.y",
                      data_roots=[tmp_path], work_root=tmp_path / "work", image="img",
                      warm_start=False)
    agent = Agent(cfg, executor)  # type: ignore[arg-type]  # no container runs here
    agent.controller = controller  # type: ignore[assignment]
    return agent, executor


def test_a_report_survives_an_outage_and_is_sent_by_the_flusher(tmp_path: Path) -> None:
    controller = _Controller(outage=1)
    agent, executor = _agent(tmp_path, controller)
    job_dir = tmp_path / "work" / "job_1"
    job_dir.mkdir(parents=True)
    jobdir.save_report(job_dir, REPORT)
    with pytest.raises(ControllerUnreachable):
        agent.flush_outbox()
    assert jobdir.load_report(job_dir) == REPORT and job_dir.exists()  # kept
    assert agent.flush_outbox() == 1
    assert controller.reports == [("job_1", REPORT)]
    assert not job_dir.exists() and executor.cleaned == ["job_1"]
    assert agent.flush_outbox() == 0  # sent once


def test_a_restarted_agent_reports_a_finished_run_and_never_runs_it_again(
        tmp_path: Path) -> None:
    controller = _Controller(outage=0)
    agent, executor = _agent(tmp_path, controller)
    job_dir = tmp_path / "work" / "job_2"
    (job_dir / "work").mkdir(parents=True)
    (job_dir / "task.json").write_text("{}")
    (job_dir / "input.json").write_text(json.dumps({"rows": 3, "bytes": 30, "sha256": "a"}))
    jobdir.save_report(job_dir, REPORT)
    assert agent.reconcile() == []
    assert controller.reports == [("job_2", REPORT)]
    assert executor.started == [] and controller.leased_asked == []
    assert not job_dir.exists()


class _Flaky(BaseHTTPRequestHandler):
    answers: ClassVar[list[int]] = []

    def do_POST(self) -> None:
        status = self.answers.pop(0) if self.answers else 200
        body = json.dumps({"state": "running"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def flaky_controller() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_busy_answers_are_retried(flaky_controller: str) -> None:
    _Flaky.answers = [503, 502, 429]
    client = ControllerClient(flaky_controller, "agt_x.y", 5.0, backoff_s=(0.01, 0.05))
    client.started("job_1")
    assert _Flaky.answers == []


def test_an_unreachable_controller_is_given_up_on_after_the_budget() -> None:
    with socket_closed() as url:
        client = ControllerClient(url, "agt_x.y", 1.0, retry_for_s=0.5, backoff_s=(0.05, 0.1))
        with pytest.raises(ControllerUnreachable):
            client.started("job_1")


def test_a_stop_ends_the_retries_at_once() -> None:
    with socket_closed() as url:
        stop = threading.Event()
        stop.set()
        client = ControllerClient(url, "agt_x.y", 1.0, retry_for_s=3600, stop=stop)
        with pytest.raises(ControllerUnreachable):
            client.started("job_1")


class socket_closed:
    """A loopback URL where nothing listens (the port was bound, then released)."""

    def __enter__(self) -> str:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *_: object) -> None:
        pass


def test_the_wait_reaches_the_next_whole_grain() -> None:
    def result(ago_s: float) -> RunResult:
        return RunResult(job_id="j", exit_code=0, timed_out=False, oom_killed=False,
                         stdout=b"", stderr=b"", stdout_truncated=False,
                         stderr_truncated=False, out_dir=Path("/nonexistent"),
                         started_at=datetime.now(UTC) - timedelta(seconds=ago_s),
                         finished_at=None, error=None)

    assert runjob.seconds_to_grain(result(1.0), 0.0) == 0.0
    assert 3.0 < runjob.seconds_to_grain(result(1.0), 5.0) <= 4.0
    assert 3.0 < runjob.seconds_to_grain(result(5.5), 5.0) <= 4.5  # into the next grain


def test_the_flusher_passes_by_the_mock_passes_file(tmp_path: Path) -> None:
    agent, _ = _agent(tmp_path, _Controller(outage=0))
    agent.mock_passes.add("a" * 64)  # a file in the work root, beside the job directories
    job_dir = tmp_path / "work" / "job_1"
    job_dir.mkdir(parents=True)
    jobdir.save_report(job_dir, REPORT)
    assert agent.flush_outbox() == 1
    assert "a" * 64 in agent.mock_passes and not job_dir.exists()


class _EarlierController(_Controller):
    """A controller of an earlier release: its report type has no ``checked`` (400)."""

    def __init__(self) -> None:
        super().__init__(outage=0)
        self.notices: list[str] = []

    def result(self, job_id: str, report: RunReport) -> dict[str, Any]:
        if report.checked:
            raise ControllerRefused(400, "checked: unknown field")
        return super().result(job_id, report)

    def checking(self, job_id: str) -> None:
        self.notices.append(f"checking {job_id}")


def test_a_checked_report_refused_by_an_earlier_controller_goes_the_old_way(
        tmp_path: Path) -> None:
    """The checking step then goes as its own notice, before the same report without the
    field: nothing is lost and the run is not reported failed."""
    controller = _EarlierController()
    agent, _ = _agent(tmp_path, controller)
    checked = RunReport(state=JobState.RELEASED, rows_read=3, bytes_read=30,
                        input_sha256="a" * 64, runner_image="img", outputs=(), checked=True)
    job_dir = tmp_path / "work" / "job_3"
    job_dir.mkdir(parents=True)
    jobdir.save_report(job_dir, checked)
    assert agent.flush_outbox() == 1
    assert controller.notices == ["checking job_3"]
    assert controller.reports == [("job_3", checked.model_copy(update={"checked": False}))]
    assert not job_dir.exists()
