"""The differencing audit by persons also compares holdings: the same persons over other
records are a difference; and its second pass shows only cells it audited."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from compute import statistics
from compute.release_audit import Audited, History, compute_audited
from compute.sdc.audit import (
    Sketches,
    holding_limit,
    holding_sketches,
    holding_slots,
    row_identities,
    slots_for,
)
from compute.sdc.combinations import differenced
from compute.sdc.units import contributor_codes, person_identities
from compute.statspec import parse_statistics_spec
from containers.audit_store import PERSONS, AuditStore
from sandbox.demo_data import hospital_table
from tests.compute.test_release_audit_persons import KEY, POLICY, _episodes, _run, _total

K = POLICY.min_count
SLOTS, H_SLOTS = slots_for(K), holding_slots(K)


def _history(frame: pd.DataFrame, before: Audited | None = None) -> History:
    rows = row_identities(frame, KEY)
    return History(person_identities(frame[["patient_id"]], KEY, rows),
                   before.released if before else Sketches.empty(SLOTS), 0, persons=True,
                   records=rows, holdings=before.holdings if before else None)


def _one_more_episode(frame: pd.DataFrame, patients: list[str]) -> pd.DataFrame:
    extra = frame[frame.patient_id.isin(patients)].groupby("patient_id").head(1)
    return pd.concat([frame, extra.assign(cost=1234.56)], ignore_index=True)


def test_holdings_differ_by_two_identities_per_person_whose_records_differ() -> None:
    persons = np.arange(1, 41, dtype=np.uint64).repeat(3)
    records = np.arange(1000, 1120, dtype=np.uint64)
    cells = np.zeros(120, dtype=np.int64)
    before = holding_sketches(cells, persons, records, 1, H_SLOTS)
    assert int(before.n[0]) == 80  # each person twice, however many records
    limit = holding_limit(K)

    def changed(people: int) -> Any:
        """Each of the first ``people`` persons holds one more record."""
        extra = np.arange(1, people + 1, dtype=np.uint64)
        after = holding_sketches(np.zeros(120 + people, dtype=np.int64),
                                 np.concatenate([persons, extra]),
                                 np.concatenate([records, 5000 + extra]), 1, H_SLOTS)
        return differenced(after, before, limit)[0]

    assert changed(1) and changed(K - 1)  # the same persons, other records: caught
    assert not changed(K)  # k persons' records: no fewer than k contributors differ
    again = holding_sketches(cells, persons, records, 1, H_SLOTS)
    assert not differenced(again, before, limit)[0]  # the same holdings: no difference


def test_one_more_episode_of_a_known_patient_is_caught() -> None:
    frame = _episodes()
    first = _run(frame, _history(frame))
    assert _total(first) is not None and first.holdings is not None
    after = _one_more_episode(frame, ["P00100"])
    second = _run(after, _history(after, first))
    assert _total(second) is None
    assert "differencing" in second.document["analyses"][1]["tables"][0]["rules"]


def test_a_monthly_update_of_k_patients_or_more_is_released() -> None:
    """The trade-off: a cell changed by k or more persons' records is released; one
    changed by fewer is suppressed, however many records those few hold."""
    frame = _episodes()
    first = _run(frame, _history(frame))
    ward_a = frame[frame.ward == "A"].patient_id.unique()[12:12 + K]
    second = _run(_one_more_episode(frame, list(ward_a)),
                  _history(_one_more_episode(frame, list(ward_a)), first))
    assert _total(second) is not None
    for a in second.document["analyses"]:
        assert "differencing" not in str(a), a


def test_a_margin_short_of_one_record_of_a_person_it_holds_is_caught_in_one_job() -> None:
    frame = _episodes()
    frame.loc[frame.index[frame.patient_id == "P00000"][0], "ward"] = np.nan
    spec = parse_statistics_spec({"analyses": [
        {"kind": "magnitude", "value": "cost", "statistics": ["sum"]},
        {"kind": "magnitude", "dims": ["ward"], "value": "cost", "statistics": ["sum"]},
    ]}, {"ward": "string", "cost": "number"})
    framed = statistics.with_units(frame[["ward", "cost"]].reset_index(drop=True),
                                   contributor_codes(frame[["patient_id"]], KEY))
    done = compute_audited(framed, spec, POLICY, _history(frame))
    assert done.document["analyses"][0]["tables"][0]["cells"][0]["value"] is not None
    by_ward = done.document["analyses"][1]["tables"][0]["cells"]
    assert next(c["value"] for c in by_ward if c["cell"]["ward"] == "All") is None


def test_the_second_pass_shows_no_cell_the_first_hid() -> None:
    """Last month's sum by diagnosis released whole; this month a dominated category
    and one newcomer elsewhere: the audit hides the total, and the complement of the
    first computation stays hidden (it was never compared with last month's)."""
    frame = hospital_table(7, 600, "R")
    spec = parse_statistics_spec({"analyses": [
        {"kind": "magnitude", "dims": ["diagnosis"], "value": "cost",
         "statistics": ["sum"]}]}, {"diagnosis": "string", "cost": "number"})

    def run(df: pd.DataFrame, prior: Sketches) -> tuple[Audited, Any]:
        ids = row_identities(df, KEY)
        data = df[["diagnosis", "cost"]].reset_index(drop=True)
        plain = statistics.analysis(statistics.tabulated(data, spec.analyses[0], POLICY),
                                    spec.analyses[0], POLICY)
        return compute_audited(data, spec, POLICY, History(ids, prior, 0)), plain

    first, _ = run(frame, Sketches.empty(SLOTS))
    newcomers = pd.DataFrame([
        {"patient_id": "R-900001", "age": 58, "sex": "M", "diagnosis": "I21", "los": 60,
         "cost": 20_000_000.0},
        {"patient_id": "R-900002", "age": 81, "sex": "F", "diagnosis": "S72", "los": 12,
         "cost": 31415.92}])
    second, plain = run(pd.concat([frame, newcomers], ignore_index=True), first.released)
    audited = second.document["analyses"][0]["tables"][0]["cells"]
    unaudited = plain["tables"][0]["cells"]
    assert any(c["value"] is None for c in unaudited)
    for mine, theirs in zip(audited, unaudited, strict=True):
        assert theirs["value"] is not None or mine["value"] is None, mine["cell"]
    assert next(c["value"] for c in audited if c["cell"]["diagnosis"] == "All") is None


def test_persons_kept_without_holdings_fail_closed(tmp_path: Path) -> None:
    """Person populations recorded before holdings were kept: a cell over exactly their
    persons cannot have its records compared, and is suppressed; a release that kept
    its holdings is compared by them instead."""
    frame = _episodes()
    store = AuditStore(tmp_path / "audit.sqlite")
    old = _run(frame, _history(frame))
    with store.session() as s:  # as an agent before holdings recorded it
        s.record("req_1", "pty/H", "pmt_1", "job_0", old.released, 8, PERSONS)
        bare = s.bare_persons("req_1", ("pty/H",), SLOTS)
    assert bare == {old.released.digest(i) for i in range(len(old.released))}
    rows = row_identities(frame, KEY)
    history = History(person_identities(frame[["patient_id"]], KEY, rows), old.released,
                      0, persons=True, records=rows, bare=bare)
    assert _total(_run(frame, history)) is None
    with store.session() as s:
        s.record("req_2", "pty/H", "pmt_2", "job_1", old.released, 8, PERSONS,
                 old.holdings)
        assert not s.bare_persons("req_2", ("pty/H",), SLOTS)
