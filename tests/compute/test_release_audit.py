"""The differencing audit: populations released before, compared with every new cell."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from authz.wire import DatasetTask
from compute import statistics
from compute.release_audit import History, compute_audited
from compute.sdc.audit import (
    Sketches,
    near_duplicates,
    row_identities,
    slots_for,
    table_sketches,
)
from compute.statspec import parse_statistics_spec
from containers.audit_store import AuditStore, audit_keys, lineage

KEY = "k3y-f0r-th3-t3st"
SCHEMA = {"ward": "string", "sex": "string", "cost": "number", "age": "integer"}
SPEC = {"analyses": [
    {"kind": "frequency", "dims": ["ward", "sex"]},
    {"kind": "magnitude", "dims": ["ward"], "value": "cost", "statistics": ["sum", "mean"]},
    {"kind": "ols", "y": "cost", "x": ["age"]},
]}
POLICY = statistics.policy_for(10, None)


def _frame(rows: int = 2000, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"ward": rng.choice(list("ABCD"), rows),
                         "sex": rng.choice(["F", "M"], rows),
                         "cost": np.round(rng.gamma(4.0, 900.0, rows), 2),
                         "age": rng.integers(18, 90, rows)})


def _run(frame: pd.DataFrame, prior: Sketches, before: int = 0,
         policy: Any = POLICY, spec: dict[str, Any] = SPEC) -> Any:
    parsed = parse_statistics_spec(spec, SCHEMA)
    return compute_audited(frame, parsed, policy,
                           History(row_identities(frame, KEY), prior, before))


def _outcomes(a: dict[str, Any]) -> set[str]:
    return {t["outcome"] for t in a["tables"]} if a.get("tables") else {a["outcome"]}


def _rules(a: dict[str, Any]) -> set[str]:
    tables = a.get("tables") or [a]
    return {r for t in tables for r in t.get("rules", [])}


def _values(doc: dict[str, Any]) -> dict[tuple[Any, ...], Any]:
    """Every released number, by (analysis, table, cell) label."""
    out: dict[tuple[Any, ...], Any] = {}
    for i, a in enumerate(doc["analyses"]):
        for t in a.get("tables") or ([a] if "cells" in a else []):
            for c in t["cells"]:
                key = (i, t.get("statistic", "count"), tuple(sorted(c["cell"].items())))
                out[key] = c["value"]
        if a.get("coefficients"):
            for row in a["coefficients"]:
                out[(i, "coef", row["term"] if "term" in row else str(row))] = row
    return out


def test_with_and_without_one_record_the_difference_is_not_released() -> None:
    full = _frame()
    first = _run(full, Sketches.empty(slots_for(10)))
    assert all(_outcomes(a) == {"released"} for a in first.document["analyses"])
    without = full.drop(index=17)  # the target's record, gone in the second run
    second = _run(without, first.released)
    before, after = _values(first.document), _values(second.document)
    # Whatever both runs released is the same number: no difference carries the record.
    both = [k for k in after if after[k] is not None and before.get(k) is not None]
    assert both, "cells without the record are still released"
    for k in both:
        assert after[k] == before[k], k
    ward = full.loc[17, "ward"]
    freq = {tuple(sorted(c["cell"].items())): c for c in
            second.document["analyses"][0]["cells"]}
    hit = freq[(("sex", full.loc[17, "sex"]), ("ward", ward))]
    assert hit["value"] is None and hit["status"] == "suppressed"
    assert "differencing" in second.document["analyses"][0]["rules"]
    assert second.document["analyses"][2]["outcome"] == "withheld"  # the model over all
    assert "differencing" in second.document["analyses"][2]["rules"]


def test_the_same_run_again_and_a_large_change_are_released() -> None:
    full = _frame()
    first = _run(full, Sketches.empty(slots_for(10)))
    again = _run(full, first.released)
    assert _values(again.document) == _values(first.document)
    # 40 records fewer in one ward: every population differs by at least k.
    fewer = full.drop(index=full.index[full.ward == "A"][:40])
    changed = _run(fewer, first.released)
    for a in changed.document["analyses"]:
        assert "differencing" not in _rules(a), a


def test_one_changed_value_is_a_changed_record() -> None:
    full = _frame()
    first = _run(full, Sketches.empty(slots_for(10)))
    edited = full.copy()
    edited.loc[5, "cost"] = edited.loc[5, "cost"] + 1000
    second = _run(edited, first.released)
    sums = second.document["analyses"][1]["tables"][0]["cells"]
    ward = {c["cell"]["ward"]: c for c in sums}[full.loc[5, "ward"]]
    assert ward["value"] is None
    assert "differencing" in second.document["analyses"][1]["tables"][0]["rules"]


@pytest.mark.parametrize("seed", range(6))
def test_the_sketch_finds_every_small_difference_and_no_large_one(seed: int) -> None:
    rng = np.random.default_rng(seed)
    frame = _frame(rows=int(rng.integers(200, 5000)), seed=seed)
    ids = row_identities(frame, KEY)
    base = table_sketches(frame, (), ids, slots_for(10))
    for d in range(1, 25):
        keep = np.ones(len(frame), dtype=bool)
        keep[rng.choice(len(frame), d, replace=False)] = False
        extra = frame.iloc[:0] if d % 2 else frame.iloc[:3]  # also added records
        other = pd.concat([frame[keep], extra.assign(age=extra.age + 1000)])
        moved = table_sketches(other, (), row_identities(other, KEY), slots_for(10))
        diff = d + len(extra)
        assert bool(near_duplicates(moved, base, 10)[0]) == (diff < 10), diff


def test_the_cap_withholds_what_would_exceed_it() -> None:
    policy = statistics.policy_for(10, {"max_released_cells": 20})
    done = _run(_frame(), Sketches.empty(slots_for(10)), policy=policy)
    outcomes = [_outcomes(a) for a in done.document["analyses"]]
    assert outcomes[0] == {"released"}  # 15 cells
    assert outcomes[1] == {"withheld"} and done.document["analyses"][1]["rules"] == [
        "release_cap"]
    assert done.cells_released <= 20
    later = _run(_frame(), done.released, before=done.cells_released, policy=policy)
    assert later.document["analyses"][0]["outcome"] == "withheld"


def test_the_store_keeps_populations_across_permits_of_a_requester(tmp_path: Path) -> None:
    store = AuditStore(tmp_path / "audit.sqlite")
    slots = slots_for(10)
    full = _frame()
    with store.session() as s:
        key = s.row_key()
        done = compute_audited(full, parse_statistics_spec(SPEC, SCHEMA), POLICY,
                               History(row_identities(full, key), s.populations(
                                   "req_1", ("ds_1",), slots), s.released("pmt_1", "job_1")))
        s.record("req_1", "ds_1", "pmt_1", "job_1", done.released, done.cells_released)
    with store.session() as s:
        assert s.row_key() == key  # made once, kept
        prior = s.populations("req_1", ("ds_1",), slots)
        # Identical populations (a ward's count and its sum of costs) are kept once.
        distinct = {done.released.to_bytes(i) for i in range(len(done.released))}
        assert len(prior) == len(distinct) < len(done.released)
        assert s.released("pmt_1", "job_2") == done.cells_released
        assert s.released("pmt_1", "job_1") == 0  # a job is never counted against itself
        assert len(s.populations("req_2", ("ds_1",), slots)) == 0  # per requester
    without = full.drop(index=3)
    # A second permit of the same requester: compared with the first permit's releases.
    second = _run_with_key(without, key, prior)
    assert any("differencing" in _rules(a) for a in second.document["analyses"])


def _run_with_key(frame: pd.DataFrame, key: str, prior: Sketches) -> Any:
    return compute_audited(frame, parse_statistics_spec(SPEC, SCHEMA), POLICY,
                           History(row_identities(frame, key), prior, 0))


def test_a_failed_job_records_nothing(tmp_path: Path) -> None:
    store = AuditStore(tmp_path / "audit.sqlite")
    with pytest.raises(RuntimeError), store.session() as s:
        s.record("req_1", "ds_1", "pmt_1", "job_1",
                 table_sketches(_frame(), ("ward",), row_identities(_frame(), KEY),
                                slots_for(10)), 5)
        raise RuntimeError("the computation failed")
    with store.session() as s:
        assert len(s.populations("req_1", ("ds_1",), slots_for(10))) == 0


def test_versions_of_a_dataset_share_one_history_and_older_records_still_count(
        tmp_path: Path) -> None:
    """Populations are kept by lineage (provider and code): version 2 (a new id) reads what
    version 1 released; what was kept under a dataset id before lineages is read too."""
    def task(ds_id: str, code: str = "H-IPE") -> DatasetTask:
        return DatasetTask(id=ds_id, code=code, provider_id="pty_h", format="csv",
                           location="a.csv", fields=())

    store = AuditStore(tmp_path / "audit.sqlite")
    slots = slots_for(10)
    pops = table_sketches(_frame(), ("ward",), row_identities(_frame(), KEY), slots)
    v1, v2, other = task("ds_v1"), task("ds_v2"), task("ds_x", code="OTHER")
    assert lineage(v1) == lineage(v2) != lineage(other)
    with store.session() as s:
        s.record("req_1", lineage(v1), "pmt_1", "job_1", pops, 5)
        s.record("req_1", "ds_old", "pmt_0", "job_0", pops, 5)  # kept by id, before
    with store.session() as s:
        assert len(s.populations("req_1", audit_keys(v2), slots)) == len(pops)
        assert len(s.populations("req_1", audit_keys(other), slots)) == 0
        assert len(s.populations("req_1", audit_keys(task("ds_old")), slots)) == 2 * len(pops)
