"""Differential privacy by person on the statistics route: where the dataset declares
identifier fields, each person contributes at most ``max_records_per_person`` records and
the noise is scaled to that many."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from compute import statdp, statistics
from compute.errors import InvalidInput
from compute.statspec import parse_statistics_spec
from sandbox.demo_data import hospital_table
from sandbox.sdk_statistics import StatisticsResult, describe
from tests.redteam.test_redteam_3 import ScriptAgent

SCHEMA = {"ward": "string", "cost": "number"}
FREQ = {"analyses": [{"kind": "frequency", "dims": ["ward"]}]}
# The patient of twelve episodes among 100 patients of one episode each.
FREQUENT = 12


def _episodes() -> pd.DataFrame:
    units = np.r_[np.zeros(FREQUENT, dtype=np.int64), np.arange(1, 101)]
    return pd.DataFrame({"ward": "A", "cost": 100.0, statistics.UNIT: units})


def _total(doc: dict[str, Any]) -> int:
    cells = doc["analyses"][0]["cells"]
    return int(next(c["value"] for c in cells if c["cell"]["ward"] == "All"))


@pytest.mark.parametrize("limit", [1, 3, 12])
def test_a_person_contributes_at_most_the_limit(limit: int) -> None:
    units = np.r_[np.zeros(FREQUENT, dtype=np.int64), np.arange(1, 6), [7, 7]]
    kept = statdp.bounded_contributions(units, limit, np.random.default_rng(1))
    assert kept[:FREQUENT].sum() == min(limit, FREQUENT)
    assert kept[FREQUENT:FREQUENT + 5].all()  # one record each: all kept
    assert kept[-2:].sum() == min(limit, 2)


def test_which_records_are_kept_is_a_uniform_choice_among_a_persons_records() -> None:
    # Seeded: the frequencies are fixed, and 6 standard deviations wide of 3/12.
    units = np.zeros(FREQUENT, dtype=np.int64)
    rng = np.random.default_rng(7)
    kept = np.stack([statdp.bounded_contributions(units, 3, rng) for _ in range(3000)])
    assert np.allclose(kept.mean(axis=0), 3 / FREQUENT, atol=0.05)
    assert statdp.bounded_contributions(units[:0], 3, rng).shape == (0,)


@pytest.mark.parametrize("limit", [1, 3])
def test_the_noise_and_the_counts_are_of_persons(limit: int) -> None:
    spec = parse_statistics_spec(
        {**FREQ, "dp": {"epsilon": 10.0, "max_records_per_person": limit}}, SCHEMA)
    doc = statistics.compute(_episodes(), spec, statistics.policy_for(10, None))
    assert doc["dp"]["unit"] == "person" and doc["dp"]["max_records_per_person"] == limit
    freq = doc["analyses"][0]["dp"]
    assert freq["sensitivity"] == limit and freq["scale"] == pytest.approx(limit / 10.0)
    # OpenDP's map of the L-scaled noise at sensitivity L: the job's epsilon, unchanged.
    assert freq["epsilon"] == pytest.approx(10.0)
    # 100 + min(L, 12) records counted; the noise (scale <= 0.3) is within 3 of it
    # except with probability below 1e-4, far from the 112 records held.
    assert abs(_total(doc) - (100 + limit)) <= 3


def test_sums_scale_with_the_limit_and_epsilon_is_as_asked() -> None:
    spec = parse_statistics_spec({
        "analyses": [{"kind": "magnitude", "dims": ["ward"], "value": "cost",
                      "statistics": ["sum", "mean"]}, *FREQ["analyses"]],
        "dp": {"epsilon": 1.0, "bounds": {"cost": [-50, 200]},
               "max_records_per_person": 4}}, SCHEMA)
    doc = statistics.compute(_episodes(), spec, statistics.policy_for(10, None))
    sums = doc["analyses"][0]["dp"]["sums"]
    assert sums["sensitivity"] == pytest.approx(4 * 200)
    assert sums["scale"] == pytest.approx(4 * 200 / 0.25)  # half of half of epsilon
    counts = doc["analyses"][0]["dp"]["counts"]
    assert counts["sensitivity"] == 4 and counts["epsilon"] == pytest.approx(0.25)
    spent = sums["epsilon"] + counts["epsilon"] + doc["analyses"][1]["dp"]["epsilon"]
    assert spent == pytest.approx(1.0)


def test_without_identifiers_the_unit_is_a_record_and_says_so() -> None:
    spec = parse_statistics_spec(
        {**FREQ, "dp": {"epsilon": 10.0, "max_records_per_person": 5}}, SCHEMA)
    frame = _episodes().drop(columns=[statistics.UNIT])
    doc = statistics.compute(frame, spec, statistics.policy_for(10, None))
    assert doc["dp"]["unit"] == "record" and "max_records_per_person" not in doc["dp"]
    assert "identifier" in doc["dp"]["unit_basis"]
    assert doc["analyses"][0]["dp"]["sensitivity"] == 1
    assert abs(_total(doc) - (100 + FREQUENT)) <= 3  # every record counted


@pytest.mark.parametrize("limit", [0, 1001, True, 2.5, "3", None])
def test_a_bad_limit_is_refused_naming_the_field(limit: Any) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_statistics_spec({**FREQ, "dp": {"epsilon": 1.0,
                                              "max_records_per_person": limit}}, SCHEMA)
    assert e.value.field == "statistics.dp.max_records_per_person", e.value
    assert e.value.rule


def test_the_default_limit_is_one_record_per_person() -> None:
    spec = parse_statistics_spec({**FREQ, "dp": {"epsilon": 1.0}}, SCHEMA)
    assert spec.dp is not None and spec.dp.max_records_per_person == 1


def test_the_agent_bounds_each_patients_episodes(tmp_path: Path) -> None:
    # The agent's own statistics job on a dataset declaring patient_id an identifier.
    frame = hospital_table(3, 300, "P")
    frame.loc[:FREQUENT - 1, "patient_id"] = "P-FREQUENT"
    agent = ScriptAgent(tmp_path)
    agent.publish(frame)
    doc = agent.statistics({"analyses": [{"kind": "frequency", "dims": ["sex"]}],
                            "dp": {"epsilon": 10.0, "max_records_per_person": 2}})
    assert doc["dp"]["unit"] == "person" and doc["dp"]["max_records_per_person"] == 2
    assert doc["analyses"][0]["dp"]["sensitivity"] == 2
    # 288 patients of one episode and the frequent one's two, against 300 held.
    cells = doc["analyses"][0]["cells"]
    total = next(c["value"] for c in cells if c["cell"]["sex"] == "All")
    assert abs(total - 290) <= 4


def test_the_sdk_names_the_unit() -> None:
    person = StatisticsResult({"dp": {"epsilon": 0.5, "unit": "person",
                                      "max_records_per_person": 3}}, None)
    assert person.privacy_unit == "person"
    assert "per person of at most 3 records" in describe(person)
    record = StatisticsResult({"dp": {"epsilon": 0.5, "unit": "record"}}, None)
    assert record.privacy_unit == "record" and "per record" in describe(record)
    assert StatisticsResult({"dp": None}, None).privacy_unit is None
