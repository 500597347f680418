"""The differencing audit counts persons where the dataset declares identifier fields."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from compute import statistics
from compute.release_audit import History, compute_audited, record_tolerance
from compute.sdc.audit import Sketches, row_identities, slots_for, table_sketches
from compute.sdc.units import contributor_codes, person_identities
from compute.statspec import parse_statistics_spec
from containers.audit_store import PERSONS, RECORDS, AuditStore, refuse_records_after_persons
from containers.runspec import ExecutorError
from sandbox.demo_data import hospital_table
from tests.redteam.test_redteam_3 import PERMITTED, ScriptAgent, script_agent
from tests.redteam.test_redteam_4 import _dialysis_patient

__all__ = ["script_agent"]  # the fixture, imported for pytest

KEY = "k3y-f0r-th3-t3st"
SCHEMA = {"ward": "string", "cost": "number"}
SPEC = parse_statistics_spec({"analyses": [
    {"kind": "frequency", "dims": ["ward"]},
    {"kind": "magnitude", "dims": ["ward"], "value": "cost", "statistics": ["sum"]},
]}, SCHEMA)
POLICY = statistics.policy_for(10, None)
EMPTY = Sketches.empty(slots_for(10))


def _episodes(persons: int = 400, seed: int = 4) -> pd.DataFrame:
    """Episodes of care: each patient one to four records, all in one ward; patients
    0-11 hold twelve records each."""
    rng = np.random.default_rng(seed)
    many = np.where(np.arange(persons) < 12, 12, rng.integers(1, 5, persons))
    patient = np.repeat(np.arange(persons), many)
    ward = rng.choice(list("ABC"), persons)[patient]
    return pd.DataFrame({"patient_id": [f"P{p:05d}" for p in patient], "ward": ward,
                         "cost": np.round(rng.gamma(4.0, 900.0, len(patient)), 2)})


def _history(frame: pd.DataFrame, prior: Sketches, persons: bool = True,
             record_prior: Sketches | None = None) -> History:
    rows = row_identities(frame, KEY)
    if not persons:
        return History(rows, prior, 0)
    return History(person_identities(frame[["patient_id"]], KEY, rows), prior, 0,
                   persons=True, records=rows, record_prior=record_prior)


def _run(frame: pd.DataFrame, history: History, persons: bool = True) -> Any:
    units = contributor_codes(frame[["patient_id"]], KEY) if persons else None
    framed = statistics.with_units(frame[["ward", "cost"]].reset_index(drop=True), units)
    return compute_audited(framed, SPEC, POLICY, history)


def _total(done: Any) -> Any:
    """The released sum of costs over every ward (None: suppressed)."""
    cells = done.document["analyses"][1]["tables"][0]["cells"]
    return next(c["value"] for c in cells if c["cell"]["ward"] == "All")


def _without(frame: pd.DataFrame, patients: list[int]) -> pd.DataFrame:
    return frame[~frame.patient_id.isin([f"P{p:05d}" for p in patients])]


@pytest.mark.parametrize("erased", [[0], [0, 1, 2], list(range(9))])
def test_fewer_than_k_persons_spanning_k_records_or_more_are_caught(
        erased: list[int]) -> None:
    frame = _episodes()
    first = _run(frame, _history(frame, EMPTY))
    assert _total(first) is not None
    after = _without(frame, erased)
    assert len(frame) - len(after) >= 10  # twelve records a patient
    second = _run(after, _history(after, first.released))
    assert _total(second) is None
    assert "differencing" in second.document["analyses"][1]["tables"][0]["rules"]


def test_k_persons_or_more_are_a_large_difference() -> None:
    frame = _episodes()
    first = _run(frame, _history(frame, EMPTY))
    ward = frame.groupby("patient_id").ward.first()
    ten = [int(p[1:]) for p in ward[ward == "A"].index[12:22]]  # ten patients of ward A
    after = _without(frame, ten)
    second = _run(after, _history(after, first.released))
    for a in second.document["analyses"]:
        assert "differencing" not in str(a), a
    assert _total(second) is not None


def test_without_identifiers_records_stay_the_unit() -> None:
    """No identifier declared: unchanged, records are compared (twelve records >= k)."""
    frame = _episodes()
    first = _run(frame, _history(frame, EMPTY, persons=False), persons=False)
    after = _without(frame, [0])
    second = _run(after, _history(after, first.released, persons=False), persons=False)
    assert _total(second) is not None
    one = frame.drop(index=frame.index[-1])  # one record fewer: caught, as before
    third = _run(one, _history(one, first.released, persons=False), persons=False)
    assert _total(third) is None


def test_a_persons_identity_is_the_same_in_every_job_and_its_records_count_once() -> None:
    frame = _episodes(persons=50)
    rows = row_identities(frame, KEY)
    ids = person_identities(frame[["patient_id"]], KEY, rows)
    assert len(np.unique(ids)) == 50
    shuffled = frame.sample(frac=1.0, random_state=1)
    again = person_identities(shuffled[["patient_id"]], KEY, row_identities(shuffled, KEY))
    assert (pd.Series(again, index=shuffled.index).loc[frame.index].to_numpy() == ids).all()
    other = person_identities(frame[["patient_id"]], "an0th3r-k3y-0000", rows)
    assert not np.intersect1d(other, ids).size  # unlinkable without the key
    # One person in two wards: once in each ward, once in the total.
    two = frame.assign(ward=np.where(np.arange(len(frame)) % 2, "A", "B"))
    sk = table_sketches(two, ["ward"], ids, slots_for(10), distinct=True)
    assert int(sk.n[-1]) == 50 and int(sk.n[:-1].sum()) > 50
    # No identifier value: a person of its own, named by the record.
    blank = frame[["patient_id"]].copy()
    blank.iloc[0, 0] = ""
    assert person_identities(blank, KEY, rows)[0] == rows[0]


def test_record_populations_from_before_identifiers_are_compared_failing_closed() -> None:
    """A total released by records (no identifier declared then), asked again by persons
    after one patient's erasure: caught; the same data again: released."""
    frame = _episodes()
    old = _run(frame, _history(frame, EMPTY, persons=False), persons=False)
    assert record_tolerance(_history(frame, EMPTY).ids, 10) == 120
    after = _without(frame, [0])
    second = _run(after, _history(after, EMPTY, record_prior=old.released))
    assert _total(second) is None
    same = _run(frame, _history(frame, EMPTY, record_prior=old.released))
    assert _total(same) == _total(old)


def test_a_store_made_before_persons_stays_readable_and_fails_safe(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    frame = _episodes(persons=60)
    pops = table_sketches(frame, ["ward"], row_identities(frame, KEY), slots_for(10))
    db = sqlite3.connect(path)  # the schema before units
    db.execute("CREATE TABLE populations (requester TEXT NOT NULL, dataset TEXT NOT NULL, "
               "slots INTEGER NOT NULL, digest TEXT NOT NULL, records INTEGER NOT NULL, "
               "sketch BLOB NOT NULL, job TEXT NOT NULL, "
               "PRIMARY KEY (requester, dataset, slots, digest))")
    db.executemany("INSERT INTO populations VALUES ('req_1', 'pty/H', ?, ?, ?, ?, 'job_0')",
                   [(pops.slots, f"d{i}", int(pops.n[i]), pops.to_bytes(i))
                    for i in range(len(pops))])
    db.commit()
    db.close()
    store = AuditStore(path)
    with store.session() as s:
        assert len(s.populations("req_1", ("pty/H",), slots_for(10))) == len(pops)
        assert len(s.populations("req_1", ("pty/H",), slots_for(10), PERSONS)) == 0
        refuse_records_after_persons(s, "req_1", ("pty/H",))  # records only: fine
        s.record("req_1", "pty/H", "pmt_1", "job_1", pops.take(np.array([0])), 1, PERSONS)
    with store.session() as s:
        assert len(s.populations("req_1", ("pty/H",), slots_for(10), RECORDS)) == len(pops)
        with pytest.raises(ExecutorError):  # identifiers no longer declared
            refuse_records_after_persons(s, "req_1", ("pty/H",))


def test_script_route_rows_before_and_after_one_patients_erasure(
        script_agent: ScriptAgent) -> None:
    """The script route: a table of n and sum of cost by sex, verified and released,
    then the same table after one patient's twelve episodes were erased: its row differs
    from the released one by one person, and the run is held for a person."""
    frame, _ = _dialysis_patient(hospital_table(7, 600, "R"))

    def by_sex(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
        table = df[PERMITTED].groupby("sex").agg(n=("cost", "size"),
                                                 sum_cost=("cost", "sum")).reset_index()
        return {"cost_by_sex.csv": table.round(2)}

    script_agent.publish(frame)
    assert script_agent.run(by_sex(frame))  # released
    erased = frame[frame.diagnosis != "N18"]
    script_agent.publish(erased)
    assert script_agent.run(by_sex(erased)) == {}  # held: a person decides
    with script_agent.store.session() as s:
        assert s.held_jobs()
