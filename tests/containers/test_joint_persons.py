"""A joint part's rules count and sum persons where the dataset numbers them.

Before, a joint part counted records: k episodes of one patient were a released cell, and a
patient whose many moderate episodes together dominated a sum passed nk and p%. With each
record's person (``units``, compute/joint_units.py) the part withdraws both, as the
statistics route does; without units the rules are as they were.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authz.wire import RunTask
from compute import local_aggregate as la
from compute.errors import InvalidInput
from compute.joint_sdc import GLM_RULE, RARE_VALUE_RULE
from compute.spec import parse_spec
from containers import jobdir, joint_part
from containers.executor import Limits
from sandbox.demo_data import FIELDS, hospital_table
from tests.compute.conftest import DIAGNOSES, SCHEMA, hospital_frame

K = 5


def aggregate(spec: dict[str, Any], frame: pd.DataFrame, units: Any = None) -> dict[str, Any]:
    return la.local_aggregate(parse_spec(spec, SCHEMA).to_json(), frame, K, None, units)


def own_persons(n: int) -> Any:
    return np.arange(n, dtype=np.int64)


def test_a_cell_of_one_patients_episodes_is_withdrawn() -> None:
    frame = hospital_frame(90, 600).dropna(subset=["diagnosis"]).reset_index(drop=True)
    frame = frame[frame.diagnosis != "C34"].reset_index(drop=True)
    # One patient's six episodes of C34: six records, one person.
    patient = frame.iloc[:6].assign(diagnosis="C34")
    frame = pd.concat([frame.iloc[6:], patient], ignore_index=True)
    units = own_persons(len(frame))
    units[-6:] = units[-6]
    spec = {"statistics": ["count", "grouped"], "columns": ["cost"],
            "groups": {"by": "diagnosis", "categories": DIAGNOSES, "values": ["cost"]}}
    by_records = aggregate(spec, frame)["counts"]
    assert by_records["grp.rows"][DIAGNOSES.index("C34")] == 6  # six records pass k = 5
    by_persons = aggregate(spec, frame, units)["counts"]
    assert by_persons["grp.rows"][DIAGNOSES.index("C34")] == 0
    assert by_persons["rows"][0] == by_records["rows"][0] - 6  # from the whole job
    # Six patients of one episode each are six persons: released.
    assert aggregate(spec, frame, own_persons(len(frame)))["counts"]["grp.rows"][
        DIAGNOSES.index("C34")] == 6


def test_a_patient_whose_episodes_dominate_a_sum_is_withdrawn() -> None:
    frame = hospital_frame(91, 300).dropna(subset=["cost"]).reset_index(drop=True)
    frame["cost"] = 1000.0 + (frame.index % 7) * 10.0
    # Forty equal episodes of one patient hold most of the sum: no record dominates it
    # alone, the patient does.
    frame.loc[:39, "cost"] = 1000.0 * len(frame)
    units = own_persons(len(frame))
    units[:40] = 0
    spec = {"statistics": ["count", "sum"], "columns": ["cost"]}
    kept = aggregate(spec, frame)["counts"]
    assert kept["rows"] == [len(frame)]  # forty equal records: none dominates alone
    withdrawn = aggregate(spec, frame, units)["counts"]
    assert withdrawn["rows"] == [len(frame) - 40]
    assert withdrawn["disclosure.suppressed"][0] >= 1


def test_a_model_on_a_value_one_patient_holds_fails() -> None:
    frame = hospital_frame(92, 500).dropna(subset=["cost"]).reset_index(drop=True)
    frame["age"] = 40 + (frame.index % 5) * 5  # five bands, each held by ~100 persons
    frame.loc[:5, "age"] = 99  # six episodes, one patient
    units = own_persons(len(frame))
    units[:6] = 0
    spec = {"statistics": ["ols"], "ols": {"y": "cost", "x": ["age"]}}
    assert aggregate(spec, frame)["counts"]["ols.n"][0] == len(frame)
    with pytest.raises(InvalidInput) as refused:
        aggregate(spec, frame, units)
    assert refused.value.rule == RARE_VALUE_RULE
    assert "99" not in str(refused.value)


def test_a_model_round_one_patients_episodes_carry_fails() -> None:
    frame = hospital_frame(93, 400).dropna(subset=["cost", "los"]).reset_index(drop=True)
    # Twelve episodes of one patient at the far end of cost: at coefficients steep on cost
    # they hold most of the weight together, though no single episode holds over 1/k.
    frame.loc[:11, "cost"] = 61234.56
    units = own_persons(len(frame))
    units[:12] = 0
    spec = {"statistics": ["glm"], "glm": {"family": "poisson", "y": "age",
                                           "x": ["cost", "los"],
                                           "beta": [-10.0, 0.0005, 0.0]}}
    assert aggregate(spec, frame)["counts"]["glm.n"][0] == len(frame)
    with pytest.raises(InvalidInput) as refused:
        aggregate(spec, frame, units)
    assert (refused.value.field, refused.value.rule) == ("glm.beta", GLM_RULE)


def test_one_person_per_record_changes_nothing() -> None:
    frame = hospital_frame(94, 800)
    spec = {"statistics": ["count", "mean", "std", "histogram", "grouped", "ols"],
            "columns": ["cost", "los"], "bins": {"los": [0, 2, 5, 10, 100]},
            "ols": {"y": "cost", "x": ["los"]},
            "groups": {"by": "diagnosis", "categories": DIAGNOSES, "values": ["cost"]}}
    assert aggregate(spec, frame, own_persons(len(frame))) == aggregate(spec, frame)


class _Aggregated(Exception):
    """Stops a part once it has aggregated (the test needs no masks or encryption)."""


def test_a_joint_part_on_a_dataset_with_an_identifier_counts_its_persons(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent numbers a joint part's persons from the dataset's declared identifier
    (read in the provider's domain, never projected) and its aggregation counts them."""
    (tmp_path / "data").mkdir()
    table = hospital_table(3, 300, "P")
    table.loc[:9, "patient_id"] = "P-000000"  # one patient's ten episodes
    table.to_csv(tmp_path / "data" / "episodes.csv", index=False)
    spec = parse_spec({"statistics": ["count", "mean"], "columns": ["cost"]},
                      {"cost": "number"}).to_json()
    task = RunTask.model_validate({
        "job_id": "job_1", "kind": "joint", "permit_id": "pmt_1", "requester_id": "req_1",
        "script_b64": base64.b64encode(b"").decode(), "script_sha256": "0" * 64,
        "min_cell_count": 10, "timeout_s": 60,
        "datasets": [{"id": "ds_1", "code": "episodes", "provider_id": "prov_1",
                      "format": "csv", "location": "episodes.csv",
                      "fields": [f for f in FIELDS if f["name"] == "cost"],
                      "identifiers": ["patient_id"]}],
        "joint": {"joint_id": "jnt_1", "spec": spec,
                  "public_context_b64": base64.b64encode(b"-").decode(),
                  "context_fingerprint": "0" * 64}})
    job_dir = tmp_path / "work" / "job_1"
    jobdir.prepare(task, job_dir, lambda _: [tmp_path / "data"], "img", Limits())
    assert "patient_id" not in (job_dir / "in" / "data.csv").read_text()
    units = np.load(job_dir / jobdir.UNIT_IDS)
    assert len(units) == len(table)
    assert len(np.unique(units)) == table.patient_id.nunique() < len(table)

    seen: dict[str, Any] = {}

    def aggregated(spec: Any, frame: Any, k: Any, withdrawn: Any, units: Any,
                   small_cells: Any = None) -> Any:
        seen["units"] = units
        raise _Aggregated

    monkeypatch.setattr(joint_part, "local_aggregate", aggregated)
    with pytest.raises(_Aggregated):
        joint_part.run_part(task, job_dir, Ed25519PrivateKey.generate(),
                            lambda: pytest.fail("no masks before aggregating"))
    assert np.array_equal(seen["units"], units)
