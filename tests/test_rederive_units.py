"""Contributors are persons on the script route: rederive's threshold, complement and
dominance rules count the persons the dataset's identifier says the records are of."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pandas as pd

from authz.states import JobState
from authz.wire import RunTask
from compute import statistics
from containers import jobdir, mockrun, runjob
from containers.audit_store import AuditStore
from containers.executor import Limits
from containers.rederive import Finding, rederive
from containers.runspec import RunResult
from sandbox.demo_data import FIELDS, hospital_table

TYPES = {"ward": "string", "cost": "number"}
POLICY = statistics.policy_for(10, None)


def _rules(found: list[Finding]) -> set[str]:
    return {f.rule for f in found}


def _wards(persons: dict[str, list[int]], cost: list[float] | None = None
           ) -> tuple[pd.DataFrame, np.ndarray]:
    """Per ward, how many records each of its persons has (persons numbered across
    wards); the input (text, as the agent reads it) and each record's person."""
    ward = [w for w, records in persons.items() for r in records for _ in range(r)]
    counts = [r for records in persons.values() for r in records]
    units = np.repeat(np.arange(len(counts)), counts)
    costs = cost if cost is not None else list(
        np.round(np.random.default_rng(2).normal(1000, 50, len(ward)), 2))
    return (pd.DataFrame({"ward": ward, "cost": costs}).astype(str),
            np.asarray(units, dtype=np.int64))


def _table(frame: pd.DataFrame, stat: str = "sum") -> tuple[list[str], list[list[str]]]:
    typed = frame.assign(cost=frame.cost.astype(float))
    t = typed.groupby("ward").cost.agg(n="size", value=stat).reset_index()
    return (["ward", "n", f"{stat}_cost"],
            [[w, str(n), f"{v:.6f}"] for w, n, v in t.itertuples(index=False)])


def _check(frame: pd.DataFrame, units: np.ndarray | None, stat: str = "sum",
           keep: set[str] | None = None) -> list[Finding]:
    header, rows = _table(frame, stat)
    rows = [r for r in rows if keep is None or r[0] in keep]
    return rederive(header, rows, frame, TYPES, POLICY, units)


def _persons(n: int, records: int = 1) -> list[int]:
    return [records] * n


def test_a_row_of_three_persons_records_is_below_the_threshold() -> None:
    frame, units = _wards({"A": _persons(30), "B": _persons(3, 4)})
    assert _check(frame, None) == []  # twelve records
    found = _check(frame, units)
    assert "threshold" in _rules(found) and all(f.row == 2 for f in found)


def test_a_statistic_held_by_few_persons_is_below_the_threshold() -> None:
    # Ward B: twelve persons, but only three persons' records hold a cost.
    frame, units = _wards({"A": _persons(30), "B": [4, 4, 4, *_persons(9)]})
    frame.loc[frame.index[30 + 12:], "cost"] = "nan"
    found = _check(frame, units)
    assert [(f.rule, f.column) for f in found] == [("threshold", 3)]
    assert _check(frame, None) == []  # twelve records hold a cost


def test_a_persons_records_are_summed_before_dominance() -> None:
    # One person's twenty records of 2000 beside 29 persons' records of 100: no record
    # dominates the ward's sum, the person does.
    frame, units = _wards({"A": [20, *_persons(29)]}, [2000.0] * 20 + [100.0] * 29)
    assert _check(frame, None) == []
    assert _rules(_check(frame, units)) & {"dominance", "p_percent"}


def test_a_persons_squared_deviations_are_summed_for_a_std() -> None:
    # Sixty persons near 1000 and one with three records at 1200: no record's squared
    # deviation dominates the spread, the person's three together do.
    rng = np.random.default_rng(3)
    costs = [1200.0] * 3 + list(np.round(rng.normal(1000, 3, 60), 2))
    frame, units = _wards({"A": [3, *_persons(60)]}, costs)
    assert _check(frame, None, "std") == []
    assert _rules(_check(frame, units, "std")) & {"dominance", "p_percent"}


def test_the_shape_and_the_complement_count_persons() -> None:
    frame, units = _wards({"A": _persons(30), "C": _persons(25), "B": _persons(3, 4)})
    # By records ward B (twelve) must be a row; by persons it is below k and may be left
    # out, but the total less the rows then gives its three persons.
    assert _rules(_check(frame, None, keep={"A", "C"})) == {"shape"}
    assert _rules(_check(frame, units, keep={"A", "C"})) == {"complement"}
    alone, alone_units = _wards({"A": _persons(30), "B": _persons(12, 4)})
    assert _check(alone, alone_units) == []


def test_findings_name_no_figure_of_the_data() -> None:
    frame, units = _wards({"A": _persons(30), "B": _persons(3, 4)})
    for f in _check(frame, units):
        assert not re.search(r"\d", f.message.replace(str(POLICY.min_count), "")
                             .replace(str(POLICY.min_count - 1), ""))


def _script_task(root: Path) -> tuple[RunTask, Path]:
    (root / "data").mkdir()
    hospital_table(3, 300, "P").to_csv(root / "data" / "episodes.csv", index=False)
    task = RunTask.model_validate({
        "job_id": "job_1", "kind": "script", "permit_id": "pmt_1", "requester_id": "req_1",
        "script_b64": base64.b64encode(b"pass\n").decode(), "script_sha256": "0" * 64,
        "min_cell_count": 10, "timeout_s": 60, "script_release": "automatic",
        "datasets": [{"id": "ds_1", "code": "episodes", "provider_id": "prov_1",
                      "format": "csv", "location": "episodes.csv",
                      "fields": [f for f in FIELDS if f["name"] in ("diagnosis", "cost")],
                      "identifiers": ["patient_id"]}]})
    job_dir = root / "work" / "job_1"
    jobdir.prepare(task, job_dir, lambda _: [root / "data"], "img", Limits(),
                   AuditStore(root / "a.sqlite"))
    return task, job_dir


def test_a_script_jobs_persons_are_numbered_outside_its_input(tmp_path: Path) -> None:
    _, job_dir = _script_task(tmp_path)
    units = np.load(job_dir / jobdir.UNIT_IDS)
    assert len(units) == 300 and units.dtype == np.int64
    mounted = [p.name for d in ("in", "job", "work") for p in (job_dir / d).rglob("*")]
    assert jobdir.UNIT_IDS not in mounted
    assert "patient_id" not in (job_dir / "in" / "data.csv").read_text()


def test_a_script_job_prepared_without_its_persons_is_held(tmp_path: Path) -> None:
    task, job_dir = _script_task(tmp_path)
    (job_dir / jobdir.UNIT_IDS).unlink()  # an older agent prepared it
    frame = pd.read_csv(job_dir / "in" / "data.csv")
    out = job_dir / "out"
    out.mkdir()
    frame.groupby("diagnosis").cost.agg(n="size", sum_cost="sum").reset_index().to_csv(
        out / "t.csv", index=False)
    result = RunResult("job_1", 0, False, False, b"", b"", False, False, out, None, None,
                       None)
    report = runjob.report(task, job_dir, result, "img", None,
                           audit=AuditStore(tmp_path / "a.sqlite"))
    assert report.state == JobState.AWAITING_REVIEW
    assert any("unverifiable" in f for f in report.outputs[0].findings)


def test_a_mock_run_has_no_persons_to_read(tmp_path: Path) -> None:
    # Mock tables hold the permitted fields only: the identifier is not there to read.
    task, _ = _script_task(tmp_path)
    mock = mockrun.mock_task(task, tmp_path / "mock", rows=50)
    job_dir = tmp_path / "work" / mock.job_id
    jobdir.prepare(mock, job_dir, lambda _: [tmp_path / "mock"], "img", Limits())
    assert not (job_dir / jobdir.UNIT_IDS).exists()
