"""Script tables held for review go into the differencing audit as held populations:
counted as released while the review is open, released once approved, dropped if not."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from authz.wire import LeaseState, RunTask, parse
from compute.sdc.audit import sketch_cells, slots_for
from containers import jobdir, review_audit, runjob, statistics_job
from containers.audit_store import AuditStore
from containers.executor import Limits
from containers.runspec import RunResult
from sandbox.demo_data import FIELDS, hospital_table
from tests.api.test_release_review import Review

PERMITTED = ["age", "sex", "diagnosis", "cost"]
COUNTS = {"analyses": [{"kind": "frequency", "dims": ["diagnosis"]}]}


def _task(job_id: str, statistics: dict[str, Any] | None = None) -> RunTask:
    return RunTask.model_validate({
        "job_id": job_id, "kind": "statistics" if statistics else "script",
        "permit_id": "pmt_1", "requester_id": "req_1",
        "script_b64": base64.b64encode(b"print(1)\n").decode(), "script_sha256": "0" * 64,
        "min_cell_count": 10, "timeout_s": 60, "statistics": statistics,
        "datasets": [{"id": "ds_1", "code": "episodes", "provider_id": "prov_1",
                      "format": "csv", "location": "episodes.csv",
                      "fields": [f for f in FIELDS if f["name"] in PERMITTED]}]})


class Provider:
    def __init__(self, tmp_path: Path, rows: int = 2000) -> None:
        self.tmp = tmp_path
        (tmp_path / "data").mkdir()
        self.frame = hospital_table(3, rows, "P")
        self.write(self.frame)
        self.store = AuditStore(tmp_path / "audit.sqlite")

    def write(self, frame: pd.DataFrame) -> None:
        frame.to_csv(self.tmp / "data" / "episodes.csv", index=False)

    def _prepare(self, task: RunTask) -> Path:
        job_dir = self.tmp / "work" / task.job_id
        jobdir.prepare(task, job_dir, lambda _: [self.tmp / "data"], "img", Limits(),
                       self.store)
        return job_dir

    def script_run(self, job_id: str, table: pd.DataFrame) -> Any:
        """A script run (review permit) whose /out holds ``table`` as t.csv."""
        task = _task(job_id)
        job_dir = self._prepare(task)
        out = job_dir / "fake-out"
        out.mkdir()
        table.to_csv(out / "t.csv", index=False)
        now = datetime.now(UTC)
        result = RunResult(job_id, 0, False, False, b"", b"", False, False, out, now, now,
                           None)
        return runjob.report(task, job_dir, result, "img", None, audit=self.store)

    def counts(self, job_id: str) -> dict[str, Any]:
        """The statistics route's count per diagnosis: {diagnosis: cell}."""
        task = _task(job_id, COUNTS)
        report = statistics_job.statistics_report(task, self._prepare(task), "img", self.store)
        doc = json.loads(base64.b64decode(report.outputs[0].content_b64 or ""))
        table = doc["analyses"][0]
        # Hidden cells carry no rules of their own: each cell here gets the table's.
        return {c["cell"]["diagnosis"]: {**c, "table_rules": table["rules"]}
                for c in table["cells"]}


def _by_diagnosis(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.groupby("diagnosis").size().rename("n").reset_index()


def test_a_held_table_counts_as_released_until_its_review_settles(tmp_path: Path) -> None:
    p = Provider(tmp_path)
    report = p.script_run("job_1", _by_diagnosis(p.frame))
    assert report.state == "awaiting_review"
    with p.store.session() as s:
        assert s.held_jobs() == ["job_1"]
        assert s.released("pmt_1", "other") == 2 * len(_by_diagnosis(p.frame))
    # One record leaves: the same table now differs from the held one by one record.
    gone = int(p.frame.cost.idxmax())
    p.write(p.frame.drop(index=gone))
    diagnosis = p.frame.loc[gone, "diagnosis"]
    cells = p.counts("job_2")
    cell = cells[diagnosis]
    assert cell["value"] is None and "differencing" in cell["table_rules"]
    shown = sum(c["value"] is not None for c in cells.values())
    # The checker rejected it: dropped, so the cell is no longer a difference of anything
    # this requester holds.
    with p.store.session() as s:
        s.settle("job_1", [])
        assert s.held_jobs() == [] and s.released("pmt_1", "other") == shown
    cell = p.counts("job_3")[diagnosis]
    assert cell["value"] is not None and "differencing" not in cell["rules"]


def test_an_approved_table_is_released_in_the_audit(tmp_path: Path) -> None:
    p = Provider(tmp_path)
    p.script_run("job_1", _by_diagnosis(p.frame))
    with p.store.session() as s:
        s.settle("job_1", ["t.csv"])
        assert s.held_jobs() == []
        assert s.released("pmt_1", "other") == 2 * len(_by_diagnosis(p.frame))
    gone = int(p.frame.cost.idxmax())
    p.write(p.frame.drop(index=gone))
    cell = p.counts("job_2")[p.frame.loc[gone, "diagnosis"]]
    assert cell["value"] is None and "differencing" in cell["table_rules"]


def test_a_held_table_near_an_earlier_release_tells_its_reviewer(tmp_path: Path) -> None:
    p = Provider(tmp_path)
    p.counts("job_1")  # released automatically by the statistics route
    gone = int(p.frame.cost.idxmax())
    smaller = p.frame.drop(index=gone)
    p.write(smaller)
    report = p.script_run("job_2", _by_diagnosis(smaller))
    assert report.state == "awaiting_review"
    assert any(f.startswith("differencing") for f in report.outputs[0].findings)


def test_the_agent_settles_held_populations_from_the_review_decision(
        tmp_path: Path, make_party: Any, make_agent: Any, make_person: Any) -> None:
    review = Review(make_party, make_agent, make_person)
    table = b"sex,n\nF,30\nM,22\n"
    approved = review.held_job(("t.csv", table))
    rejected = review.held_job(("t.csv", table))
    store = AuditStore(tmp_path / "audit.sqlite")
    slots = slots_for(10)

    pops = sketch_cells(np.zeros(30, np.int64), np.arange(30, dtype=np.uint64) + 1, 1, slots)
    with store.session() as s:
        for job in (approved, rejected, "job_of_another_agent"):
            s.hold("req", "ds", "pmt", job, [("t.csv", pops, 6)])

    def leased(job_id: str) -> LeaseState | None:
        r = review.agent.get(f"/agent/jobs/{job_id}")
        return None if r.status_code == 404 else parse(LeaseState, r.json)

    # Nothing decided yet: everything stays held.
    assert review_audit.settle_reviews(store, leased) == 0
    # The checkers decide on the output by its positional name; the agent is told of it
    # by the name it reported (its store's key).
    assert review.decide(review.checkers[0], approved, "output-1").status_code == 200
    assert review.decide(review.checkers[0], rejected, "output-1",
                         "reject").status_code == 200
    lease = leased(approved)
    assert lease is not None and lease.released_outputs == ("t.csv",)
    assert review_audit.settle_reviews(store, leased) == 2
    with store.session() as s:
        assert s.held_jobs() == ["job_of_another_agent"]  # its own agent settles it
        assert s.released("pmt", "none") == 6 + 6  # the approved one, and the still held
        assert len(s.populations("req", ("ds",), slots)) == 2
