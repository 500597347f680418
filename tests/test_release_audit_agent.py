"""The agent's side of the differencing audit: row identities at prepare, the store at report."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from authz.wire import RunTask
from containers import jobdir, statistics_job
from containers.audit_store import AuditStore
from containers.executor import Limits
from containers.runspec import ExecutorError
from sandbox.demo_data import FIELDS, hospital_table

SPEC = {"analyses": [{"kind": "magnitude", "dims": ["diagnosis"], "value": "cost",
                      "statistics": ["sum"]}]}
PERMITTED = ["age", "sex", "diagnosis", "cost"]


def _task(job_id: str, permit_id: str = "pmt_1") -> RunTask:
    return RunTask.model_validate({
        "job_id": job_id, "kind": "statistics", "permit_id": permit_id,
        "requester_id": "req_1", "script_b64": base64.b64encode(b"{}").decode(),
        "script_sha256": "0" * 64, "min_cell_count": 10, "timeout_s": 60,
        "statistics": SPEC,
        "datasets": [{"id": "ds_1", "code": "episodes", "provider_id": "prov_1",
                      "format": "csv", "location": "episodes.csv",
                      "fields": [f for f in FIELDS if f["name"] in PERMITTED]}]})


def _run(tmp_path: Path, store: AuditStore, job_id: str, permit_id: str = "pmt_1"
         ) -> dict[str, object]:
    task = _task(job_id, permit_id)
    job_dir = tmp_path / "work" / job_id
    jobdir.prepare(task, job_dir, lambda _: [tmp_path / "data"], "img", Limits(), store)
    assert not (job_dir / "in" / jobdir.ROW_IDS).exists()  # never beside the input
    report = statistics_job.statistics_report(task, job_dir, "img", store)
    doc: dict[str, object] = json.loads(base64.b64decode(report.outputs[0].content_b64 or ""))
    return doc


def test_a_record_removed_between_runs_is_not_differenced(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    frame = hospital_table(3, 2000, "P")
    frame.to_csv(tmp_path / "data" / "episodes.csv", index=False)
    store = AuditStore(tmp_path / "audit.sqlite")
    _run(tmp_path, store, "job_1")
    t = int(frame.cost.idxmax())
    frame.drop(index=t).to_csv(tmp_path / "data" / "episodes.csv", index=False)
    # Another permit of the same requester on the same dataset.
    doc = _run(tmp_path, store, "job_2", permit_id="pmt_2")
    cells = doc["analyses"][0]["tables"][0]["cells"]  # type: ignore[index]
    hit = next(c for c in cells if c["cell"]["diagnosis"] == frame.loc[t, "diagnosis"])
    rules = doc["analyses"][0]["tables"][0]["rules"]  # type: ignore[index]
    assert hit["value"] is None and "differencing" in rules


def test_without_row_identities_the_job_fails_closed(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    hospital_table(3, 200, "P").to_csv(tmp_path / "data" / "episodes.csv", index=False)
    task = _task("job_1")
    job_dir = tmp_path / "work" / "job_1"
    jobdir.prepare(task, job_dir, lambda _: [tmp_path / "data"], "img", Limits())
    with pytest.raises(ExecutorError):
        statistics_job.statistics_report(task, job_dir, "img", AuditStore(tmp_path / "a.sqlite"))


def test_contributors_are_read_from_the_identifier_never_projected(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    frame = hospital_table(3, 200, "P")
    frame.to_csv(tmp_path / "data" / "episodes.csv", index=False)
    data = _task("job_1").model_dump()
    data["datasets"][0]["identifiers"] = ["patient_id"]
    task = RunTask.model_validate(data)
    job_dir = tmp_path / "work" / "job_1"
    jobdir.prepare(task, job_dir, lambda _: [tmp_path / "data"], "img", Limits())
    projected = (job_dir / "in" / "data.csv").read_text()
    assert "patient_id" not in projected and frame.patient_id[0] not in projected
    units = np.load(job_dir / jobdir.UNIT_IDS)
    assert len(units) == len(frame) and units.dtype == np.int64  # numbers, not identifiers
    # A job prepared without them (an older agent) fails closed: never counts records.
    (job_dir / jobdir.UNIT_IDS).unlink()
    with pytest.raises(ExecutorError):
        statistics_job.statistics_report(task, job_dir, "img")
