"""``sandbox dev-run`` names a mock run's outputs as the real run shows them: the agent's
own checks and report (no Docker: the run's /out is written here), then the controller's
naming of the same report, compared with what the dev-run prints."""

from __future__ import annotations

import base64
import hashlib
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from authz.states import JobState, ScriptRelease
from authz.wire import RunReport, RunTask, dump
from containers import devrun, jobdir, mockrun, runjob
from containers.executor import Limits
from containers.runspec import RunResult
from sandbox import cli_devrun
from tests.api.test_release_review import Review

# Names a script could choose to carry a value: the real run shows them by position.
TABLE_NAME, CHART_NAME = "cost_c91_1234567.csv", "n_hiv_3.png"


def _chart() -> bytes:
    img = Image.new("RGB", (60, 30), "white")
    ImageDraw.Draw(img).rectangle((10, 5, 30, 25), fill=(31, 95, 153))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _mock_run(tmp_path: Path, dataset: dict[str, Any], release: ScriptRelease,
              files: dict[str, bytes]) -> mockrun.MockRun:
    """The agent's report of a mock run under ``release`` whose /out holds ``files``."""
    script = b"print('x')\n"
    task = RunTask(job_id="dev-1", kind="script", permit_id="dev-run",
                   script_b64=base64.b64encode(script).decode(),
                   script_sha256=hashlib.sha256(script).hexdigest(),
                   datasets=(devrun.dataset_task(dataset, ["age", "sex", "diagnosis"]),),
                   min_cell_count=10, timeout_s=60, script_release=release)
    mtask = mockrun.mock_task(task, tmp_path / "mockdata", rows=200)
    job_dir = tmp_path / "work" / mtask.job_id
    jobdir.prepare(mtask, job_dir, lambda _: [tmp_path / "mockdata"], "img", Limits())
    out = tmp_path / "out"
    out.mkdir()
    for name, content in files.items():
        (out / name).write_bytes(content)
    now = datetime.now(UTC)
    result = RunResult(mtask.job_id, 0, False, False, b"", b"", False, False, out, now, now,
                       None)
    return mockrun.MockRun(result, "", runjob.report(mtask, job_dir, result, "img", None),
                           files)


def _real_names(review: Review, report: RunReport) -> list[tuple[str, str]]:
    """The same report as the agent's result of a real job: what the requester sees."""
    r = review.analyst.post("/jobs", {"permit_id": review.permit_id,
                                      "dataset_ids": [review.ds["id"]],
                                      "script": "print('x')\n"})
    job_id = r.json["id"]
    assert review.agent.post("/agent/tasks/next").json["task"]["job_id"] == job_id
    r = review.agent.post(f"/agent/jobs/{job_id}/result", dump(report))
    assert r.status_code == 200, r.json
    return [(o["name"], o["decision"])
            for o in review.analyst.get(f"/jobs/{job_id}").json["outputs"]]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_dev_run_names_held_outputs_as_the_real_run_does(
        make_party: Any, make_agent: Any, make_person: Any, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    review = Review(make_party, make_agent, make_person)
    files = {TABLE_NAME: b"sex,n\nF,100\nM,100\n", CHART_NAME: _chart(),
             "notes.svg": b"<svg/>"}
    run = _mock_run(tmp_path, review.ds, ScriptRelease.REVIEW, files)
    assert run.report.state == JobState.AWAITING_REVIEW
    cli_devrun._report(run, tmp_path / "dev-run-out")
    printed = capsys.readouterr().out
    real = _real_names(review, run.report)
    # A table and a PNG held for the checkers, an SVG withheld: all by position.
    assert real == [("output-1", "pending_review"), ("output-2", "pending_review"),
                    ("output-3", "withheld")]
    shown = [line.split(":")[0].strip() for line in printed.splitlines()
             if line.startswith("  output-") or line.startswith(f"  {CHART_NAME}")
             or line.startswith(f"  {TABLE_NAME}")]
    assert shown == [name for name, _ in real]
    for (name, decision), file in zip(real, sorted(files), strict=True):
        assert f"  {name}: {decision}" in printed and printed.count(f"[{file}]") == 1
    assert "run: awaiting_review" in printed
    # The table's re-derivation findings, as the checkers would read them, are shown.
    held_table = run.report.outputs[sorted(files).index(TABLE_NAME)]
    assert held_table.findings
    for finding in held_table.findings:
        assert f"    finding: {finding}" in printed
    assert cli_devrun.exit_status(run) == 2  # as `sandbox submit --wait`: waiting for people


def test_without_a_review_permit_an_image_is_withheld_by_position(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dataset = {"id": "ds_1", "code": "DS-1", "provider_id": "p", "fields": [
        {"name": "age", "type": "integer", "sensitivity": "internal", "range": [0, 99]},
        {"name": "sex", "type": "string", "sensitivity": "internal",
         "categories": ["F", "M"]},
        {"name": "diagnosis", "type": "string", "sensitivity": "sensitive",
         "categories": ["I21", "J18"]}]}
    run = _mock_run(tmp_path, dataset, ScriptRelease.AUTOMATIC, {CHART_NAME: _chart()})
    cli_devrun._report(run, tmp_path / "dev-run-out")
    printed = capsys.readouterr().out
    # The agent reports it as withheld-1; the requester sees output-1.
    assert "  output-1: withheld: an image" in printed and "withheld-1" not in printed
    assert f"[{CHART_NAME}]" in printed
