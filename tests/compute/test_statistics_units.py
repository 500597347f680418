"""Contributors are persons: the statistics route counts a dataset's identified units."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from compute import sdc, statistics
from compute.errors import InvalidInput
from compute.sdc.units import contributor_codes
from compute.statspec import parse_statistics_spec

KEY = "k" * 16
SCHEMA = {"ward": "string", "sex": "string", "cost": "number", "flag": "boolean"}


def test_one_identifier_column_numbers_its_values_missing_ones_stand_alone() -> None:
    ids = pd.DataFrame({"pid": ["a", "b", "a", None, "", "b", "c"]})
    codes = contributor_codes(ids, KEY)
    assert codes[0] == codes[2] and codes[1] == codes[5]
    assert len({codes[0], codes[1], codes[3], codes[4], codes[6]}) == 5


def test_several_identifier_columns_join_records_sharing_any_value() -> None:
    # r0-r3 are one person through a chain of shared values; r4 is another; r5 has none.
    ids = pd.DataFrame({"pid": ["a", "a", "b", "b", "c", None],
                        "insurance": [None, "X", "X", None, "Y", None],
                        "episode": ["e0", "e1", "e2", "e3", "e4", "e5"]})
    codes = contributor_codes(ids, KEY)
    assert len(set(codes[:4])) == 1
    assert len({codes[0], codes[4], codes[5]}) == 3


def test_a_long_chain_of_shared_values_is_one_contributor() -> None:
    n = 2000  # records i and i+1 share a value of one column or the other
    ids = pd.DataFrame({"a": [str(i // 2) for i in range(n)],
                        "b": [str((i + 1) // 2) for i in range(n)]})
    assert len(set(contributor_codes(ids, KEY))) == 1


def test_the_key_must_be_given() -> None:
    with pytest.raises(InvalidInput):
        contributor_codes(pd.DataFrame({"pid": ["a"]}), "short")


def _episodes() -> tuple[pd.DataFrame, np.ndarray]:
    """Ward A: 40 patients, one episode each. Ward B: 12 episodes of 3 patients."""
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"ward": ["A"] * 40 + ["B"] * 12,
                          "sex": rng.choice(["F", "M"], 52),
                          "cost": rng.normal(3000, 300, 52),
                          "flag": [0.0] * 40 + [1.0] * 12})
    units = np.array(list(range(40)) + [40, 41, 42] * 4)
    return frame, units


def _run(analysis: dict[str, Any], units: np.ndarray | None) -> dict[str, Any]:
    frame, _ = _episodes()
    spec = parse_statistics_spec({"analyses": [analysis]}, SCHEMA)
    doc = statistics.compute(statistics.with_units(frame, units), spec,
                             statistics.policy_for(10))
    result: dict[str, Any] = doc["analyses"][0]
    return result


@pytest.mark.parametrize("analysis", [
    {"kind": "frequency", "dims": ["ward"]},
    {"kind": "magnitude", "dims": ["ward"], "value": "cost", "statistics": ["sum", "std"]}])
def test_a_ward_of_three_patients_episodes_is_not_a_ward_of_twelve(
        analysis: dict[str, Any]) -> None:
    def labels(units: np.ndarray | None) -> dict[str, Any]:
        result = _run(analysis, units)
        table = result["tables"][0] if "tables" in result else result
        return {c["cell"]["ward"]: c["value"] for c in table["cells"]}

    assert labels(None)["B"] is not None  # records: twelve contributors
    by_person = labels(_episodes()[1])
    # Three patients: the label is pooled (fewer than ten hold it) and the cell hidden.
    assert "B" not in by_person and by_person[sdc.POOLED] is None


def test_models_and_tests_count_persons() -> None:
    units = _episodes()[1]
    ols = {"kind": "ols", "y": "cost", "x": ["flag"]}
    assert _run(ols, None)["coefficients"] is not None
    assert _run(ols, units)["coefficients"] is None
    chi = {"kind": "chi_square", "dims": ["ward", "sex"]}
    assert _run(chi, units)["values"] is None


def test_units_must_match_the_records() -> None:
    frame, units = _episodes()
    with pytest.raises(InvalidInput):
        statistics.with_units(frame, units[:-1])
