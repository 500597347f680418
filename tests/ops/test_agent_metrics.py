"""The agent's own metrics and readiness: counted as it works, served on loopback only
when asked, and a runner image past its allowed age reported."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from authz.states import OutputDecision
from authz.wire import JobState, OutputReport, RunReport
from containers.agent import Agent
from containers.agent_config import AgentConfig
from containers.agent_metrics import DAY_S, AgentMetrics, serve_metrics
from containers.jobwatch import Notices

RELEASED = RunReport(
    state=JobState.RELEASED, rows_read=10, bytes_read=100, input_sha256="a" * 64,
    runner_image="img", outputs=(
        OutputReport(name="table.csv", sha256="b" * 64, bytes=5,
                     decision=OutputDecision.RELEASED),
        OutputReport(name="dump.csv", sha256="c" * 64, bytes=5,
                     decision=OutputDecision.BLOCKED, reasons=("cell count below 10",))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture
def endpoint() -> Iterator[tuple[AgentMetrics, str, list[float | None]]]:
    age: list[float | None] = [3 * DAY_S]
    metrics = AgentMetrics(slots=2, max_image_age_days=30, image_age_s=lambda: age[0])
    port = free_port()
    server = serve_metrics(metrics, "127.0.0.1", port)
    yield metrics, f"http://127.0.0.1:{port}", age
    server.shutdown()
    server.server_close()


def test_runs_and_output_decisions_are_counted(
        endpoint: tuple[AgentMetrics, str, list[float | None]]) -> None:
    metrics, url, _ = endpoint
    with metrics.busy("run"):
        status, body = get(f"{url}/metrics")
        assert samples(body.decode())[("sandbox_agent_slots_busy", ())] == 1
    metrics.observe_run(RELEASED)
    metrics.observe_run(RunReport.failed("exited with status 1"))
    metrics.observe_schema_check(False)
    status, body = get(f"{url}/metrics")
    assert status == 200
    got = samples(body.decode())
    assert got[("sandbox_agent_slots", ())] == 2
    assert got[("sandbox_agent_slots_busy", ())] == 0
    assert got[("sandbox_agent_tasks_total", (("kind", "run"),))] == 1
    assert got[("sandbox_agent_runs_total", (("state", "released"),))] == 1
    assert got[("sandbox_agent_runs_total", (("state", "failed"),))] == 1
    assert got[("sandbox_agent_output_checks_total", (("decision", "released"),))] == 1
    assert got[("sandbox_agent_output_checks_total", (("decision", "blocked"),))] == 1
    assert got[("sandbox_agent_schema_checks_total", (("ok", "false"),))] == 1
    assert got[("sandbox_agent_runner_image_age_seconds", ())] == 3 * DAY_S
    # Names and counts only: nothing of the outputs (names, reasons) is a label.
    assert "table.csv" not in body.decode() and "cell count" not in body.decode()


def test_readiness_fails_on_a_runner_image_older_than_allowed(
        endpoint: tuple[AgentMetrics, str, list[float | None]]) -> None:
    _, url, age = endpoint
    status, body = get(f"{url}/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready"
    age[0] = 31 * DAY_S
    status, body = get(f"{url}/readyz")
    answer = json.loads(body)
    assert status == 503
    assert answer["field"] == "runner_image" and "30 days" in answer["rule"]
    age[0] = None  # engine unreachable: no verdict on the image
    assert get(f"{url}/readyz")[0] == 200
    assert get(f"{url}/healthz")[0] == 200
    assert get(f"{url}/nothing")[0] == 404


def test_the_banner_warns_of_a_stale_runner_image(caplog: pytest.LogCaptureFixture) -> None:
    AgentMetrics(image_age_s=lambda: 45 * DAY_S, max_image_age_days=30).banner()
    assert any(r.levelname == "WARNING" and "45.0 days old" in r.getMessage()
               for r in caplog.records)


def test_a_failing_age_probe_never_fails_a_scrape() -> None:
    def broken() -> float:
        raise OSError("engine gone")

    m = AgentMetrics(image_age_s=broken)
    assert m.image_age_s() is None and m.image_verdict() is None


class _Controller:
    def __init__(self) -> None:
        self.reports: list[tuple[str, RunReport]] = []

    def result(self, job_id: str, report: RunReport) -> dict[str, Any]:
        self.reports.append((job_id, report))
        return {"state": str(report.state)}


class _Executor:
    def cleanup(self, job_id: str, work_dir: Path | None = None) -> None:
        pass


def test_the_agent_counts_the_runs_it_reports(tmp_path: Path) -> None:
    metrics = AgentMetrics()
    agent = Agent(AgentConfig(controller_url="http://127.0.0.1:9", token="t", data_roots=[],
                              work_root=tmp_path, image="img"),
                  _Executor(), metrics)  # type: ignore[arg-type]
    controller = _Controller()
    agent.controller = controller  # type: ignore[assignment]
    (tmp_path / "job1").mkdir()
    agent._report_run("job1", RELEASED, Notices("job1"))
    assert [j for j, _ in controller.reports] == ["job1"]
    assert metrics.runs.labels("released")._value.get() == 1
