"""Typed record identities, identity spaces, edition overlap and the label check
(compute.sdc.identity), and the store's compatibility with identities kept before them."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from authz.wire import RunTask
from compute.sdc.audit import row_identities, slots_for, table_sketches
from compute.sdc.identity import (
    blind_hits,
    canonical_column,
    label_digest,
    overlap,
    record_identities,
    relabelled,
    signature,
    space_of,
)
from compute.sdc.units import person_identities
from containers import jobdir, statistics_job
from containers.audit_store import AuditStore
from containers.executor import Limits
from sandbox.demo_data import FIELDS, hospital_table

KEY = "k3y-f0r-th3-t3st"
TYPED = [("age", "integer"), ("sex", "string"), ("cost", "number")]


def test_one_spelling_per_value_of_each_type() -> None:
    assert list(canonical_column(pd.Series(["3", "3.0", "03", " 3 ", "3.00"]), "integer")
                ) == ["3.0"] * 5
    assert list(canonical_column(pd.Series(["yes", "True", "1", "t"]), "boolean")
                ) == ["true"] * 4
    assert list(canonical_column(pd.Series(["2026-10-31", "2026/10/31", "31 Oct 2026"]),
                                 "date")) == ["2026-10-31"] * 3
    assert list(canonical_column(pd.Series(["F ", " F", "F"]), "string")) == ["F"] * 3
    blank = canonical_column(pd.Series(["", "nan", None, "NaN"]), "number")
    assert len(set(blank)) == 1


def test_identities_ignore_other_columns_and_spellings() -> None:
    frame = hospital_table(3, 300, "P")
    ids = record_identities(frame, TYPED, KEY)
    respelled = frame.astype({"age": float}).astype(str).assign(
        extracted="2026-11-30", sex=lambda f: f.sex + " ")
    assert np.array_equal(ids, record_identities(respelled, TYPED, KEY))
    assert np.array_equal(ids, record_identities(frame, TYPED[::-1], KEY))  # field order
    assert space_of(TYPED) == space_of(TYPED[::-1]) != space_of(TYPED[:2])
    assert not np.isin(ids, record_identities(frame, TYPED, "an0th3r-k3y-0000")).any()
    # A value the release reads changed: that record, and only it, is new.
    edited = frame.copy()
    edited.loc[7, "cost"] += 1
    assert (ids != record_identities(edited, TYPED, KEY)).sum() == 1


def test_identifiers_in_one_spelling() -> None:
    frame = pd.DataFrame({"patient_id": ["7", "07", " 7.0", "R-1 ", "R-1"]})
    rows = record_identities(frame.assign(x=range(5)), [("x", "integer")], KEY)
    persons = person_identities(frame, KEY, rows)
    assert len(set(persons[:3])) == 1 and persons[3] == persons[4] != persons[0]


def test_edition_overlap() -> None:
    ids = record_identities(hospital_table(3, 5000, "P"), TYPED, KEY)
    grown = np.concatenate([ids, record_identities(hospital_table(4, 500, "Q"), TYPED, KEY)])
    assert overlap(signature(ids), 5000, signature(grown), 5500) > 0.9
    rotated = record_identities(hospital_table(3, 5000, "P"), TYPED, "an0th3r-k3y-0000")
    assert overlap(signature(ids), 5000, signature(rotated), 5000) < 0.1
    assert overlap(signature(ids), 5000, np.zeros(0, np.uint64), 0) == 0.0


def test_labels_and_counts() -> None:
    a = label_digest(KEY, [("age", 3), ("sex", "F")], ["sex", "age", "cost"])
    assert a == label_digest(KEY, [("sex", "F "), ("age", "3.0")], ["cost", "age", "sex"])
    assert a != label_digest(KEY, [("sex", "F")], ["sex", "age", "cost"])
    assert a != label_digest("an0th3r-k3y-0000", [("age", 3), ("sex", "F")],
                             ["sex", "age", "cost"])
    prior = {a: [(600, 610)]}
    hit = relabelled([a, a, a, None], np.array([599, 600, 650, 599]),
                     np.array([609, 611, 660, 609]), prior, 10)
    assert hit.tolist() == [True, True, False, False]
    assert blind_hits(np.array([100, 109, 110, 0]), np.array([100, 119]), 10).tolist() == [
        False, True, True, False]


def _task(job_id: str, permit: str = "pmt_1", extra: tuple[str, ...] = ()) -> RunTask:
    fields = [f for f in FIELDS if f["name"] in ("age", "sex", "cost")]
    fields += [{"name": x, "type": "string", "sensitivity": "internal"} for x in extra]
    return RunTask.model_validate({
        "job_id": job_id, "kind": "statistics", "permit_id": permit,
        "requester_id": "req_1", "script_b64": base64.b64encode(b"{}").decode(),
        "script_sha256": "0" * 64, "min_cell_count": 10, "timeout_s": 60,
        "statistics": {"analyses": [{"kind": "magnitude", "value": "cost",
                                     "statistics": ["sum"]}]},
        "datasets": [{"id": "ds_1", "code": "episodes", "provider_id": "prov_1",
                      "format": "csv", "location": "episodes.csv",
                      "fields": fields}]})


def _prepared(tmp_path: Path, store: AuditStore, task: RunTask) -> Path:
    job_dir = tmp_path / "work" / task.job_id
    jobdir.prepare(task, job_dir, lambda _: [tmp_path / "data"], "img", Limits(), store)
    return job_dir


def _report(store: AuditStore, task: RunTask, job_dir: Path) -> Any:
    report = statistics_job.statistics_report(task, job_dir, "img", store)
    doc = json.loads(base64.b64decode(report.outputs[0].content_b64 or ""))
    return doc["analyses"][0]["tables"][0]["cells"][0]["value"]


def test_populations_kept_before_typed_identities_fail_closed(tmp_path: Path) -> None:
    """A store holding a total kept the old way (every column hashed as text). The next
    edition gains an extract date, so those identities no longer match: a total one
    record apart is suppressed by count; one far apart is released."""
    (tmp_path / "data").mkdir()
    frame = hospital_table(3, 2000, "P")
    store = AuditStore(tmp_path / "audit.sqlite")
    with store.session() as s:
        old = table_sketches(frame, (), row_identities(frame, s.row_key()), slots_for(10),
                             value="cost")
        s.record("req_1", "prov_1/episodes", "pmt_1", "job_0", old, 1)  # legacy space
    frame.drop(index=5).assign(extracted="2026-11-30").to_csv(
        tmp_path / "data" / "episodes.csv", index=False)
    assert _report(store, _task("job_1"), _prepared(tmp_path, store, _task("job_1"))) is None
    frame.iloc[:1500].to_csv(tmp_path / "data" / "episodes.csv", index=False)
    assert _report(store, _task("job_2"), _prepared(tmp_path, store, _task("job_2"))
                   ) is not None


def test_a_space_first_recorded_after_a_job_was_prepared_is_compared(tmp_path: Path
                                                                    ) -> None:
    """Job A is prepared (no space but its own in the store); meanwhile job B, under a
    permit with a ward field, releases a total over one more record. A has no identities
    in B's space: its total is compared with B's by count, never with nothing."""
    (tmp_path / "data").mkdir()
    frame = hospital_table(3, 2000, "P").assign(ward=lambda f: "W" + (f.age % 3).astype(str))
    store = AuditStore(tmp_path / "audit.sqlite")
    frame.drop(index=5).to_csv(tmp_path / "data" / "episodes.csv", index=False)
    a = _task("job_a")
    a_dir = _prepared(tmp_path, store, a)
    frame.to_csv(tmp_path / "data" / "episodes.csv", index=False)
    b = _task("job_b", "pmt_2", ("ward",))
    assert _report(store, b, _prepared(tmp_path, store, b)) is not None
    assert _report(store, a, a_dir) is None
