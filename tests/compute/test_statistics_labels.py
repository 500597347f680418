"""What a table publishes besides its values: its labels, and flagged cells' margins.

A number column is never a dimension; a category fewer than k records hold is pooled
under one fixed label before tabulation (the bucket then meets every rule like any
cell); and a flagged cell, whose value the route holds back, is protected by secondary
suppression like a suppressed one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from compute import release_audit, sdc, statistics
from compute.errors import InvalidInput
from compute.sdc.audit import Sketches, row_identities, slots_for
from compute.statspec import parse_statistics_spec

SCHEMA = {"ward": "string", "age": "integer", "cost": "number", "insured": "boolean"}
K = 10


def _frame(rare: dict[str, int]) -> pd.DataFrame:
    """Wards A and B with 40 records each, and the ``rare`` wards with their counts."""
    wards = ["A"] * 40 + ["B"] * 40 + [w for w, n in rare.items() for _ in range(n)]
    rng = np.random.default_rng(3)
    return pd.DataFrame({"ward": wards, "age": rng.integers(20, 80, len(wards)).astype(float),
                         "cost": rng.gamma(4.0, 900.0, len(wards)),
                         "insured": rng.integers(0, 2, len(wards)).astype(float)})


def _cells(frame: pd.DataFrame, analysis: dict[str, Any], k: int = K
           ) -> list[dict[str, Any]]:
    spec = parse_statistics_spec({"analyses": [analysis]}, SCHEMA)
    doc = statistics.compute(frame, spec, statistics.policy_for(k, None))
    a = doc["analyses"][0]
    return list((a["tables"][0] if "tables" in a else a)["cells"])


@pytest.mark.parametrize("kind", [
    {"kind": "frequency", "dims": ["ward", "cost"]},
    {"kind": "magnitude", "dims": ["cost"], "value": "age", "statistics": ["sum"]},
    {"kind": "chi_square", "dims": ["ward", "cost"]},
])
def test_a_number_column_is_never_a_dimension(kind: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_statistics_spec({"analyses": [kind]}, SCHEMA)
    j = kind["dims"].index("cost")
    assert e.value.field == f"statistics.analyses[0].dims[{j}]"
    assert "label" in e.value.rule  # says why


def test_integer_and_boolean_columns_remain_dimensions() -> None:
    parse_statistics_spec({"analyses": [{"kind": "frequency",
                                         "dims": ["ward", "age", "insured"]}]}, SCHEMA)


def test_rare_categories_are_pooled_and_the_bucket_is_checked_like_any_cell() -> None:
    frame = _frame({"Z": 1, "Y": 3})
    cells = {c["cell"]["ward"]: c for c in _cells(frame, {"kind": "frequency",
                                                           "dims": ["ward"]})}
    assert set(cells) == {"A", "B", sdc.POOLED, sdc.MARGIN}  # no label from < k records
    assert cells[sdc.POOLED]["value"] is None  # 4 records: below the threshold
    assert cells[sdc.POOLED]["status"] == "suppressed"  # hidden like any other cell
    # Secondary suppression covers the bucket: the total less A and B is not released.
    assert None in (cells["A"]["value"], cells["B"]["value"], cells[sdc.MARGIN]["value"])


def test_a_bucket_of_k_records_is_released() -> None:
    frame = _frame({w: 2 for w in "UVWXYZ"})  # six wards of two: twelve records
    cells = {c["cell"]["ward"]: c for c in _cells(frame, {"kind": "frequency",
                                                           "dims": ["ward"]})}
    assert cells[sdc.POOLED]["value"] == 12 and cells[sdc.POOLED]["status"] == "ok"


def test_rarity_is_counted_in_the_analysis_population() -> None:
    # Ward C has 12 records, 4 of them without an age: in a table by ward and age it is
    # held by 8 records of the population, so it is pooled there, not in one by ward.
    frame = pd.concat([_frame({}), pd.DataFrame({
        "ward": ["C"] * 12, "age": [40.0] * 8 + [np.nan] * 4, "cost": [1.0] * 12,
        "insured": [1.0] * 12})], ignore_index=True)
    by_ward = {c["cell"]["ward"] for c in _cells(frame, {"kind": "frequency",
                                                         "dims": ["ward"]})}
    by_ward_age = {c["cell"]["ward"] for c in _cells(frame, {"kind": "frequency",
                                                             "dims": ["ward", "age"]})}
    assert "C" in by_ward and "C" not in by_ward_age and sdc.POOLED in by_ward_age
    ages = {c["cell"]["age"] for c in _cells(frame, {"kind": "frequency", "dims": ["age"]})}
    held = frame.age.value_counts()
    assert ages - {sdc.POOLED, sdc.MARGIN} == set(held[held >= K].index)


def test_magnitude_tables_pool_the_same_way() -> None:
    frame = _frame({"Z": 1})
    cells = _cells(frame, {"kind": "magnitude", "dims": ["ward"], "value": "cost",
                           "statistics": ["sum"]})
    assert {c["cell"]["ward"] for c in cells} == {"A", "B", sdc.POOLED, sdc.MARGIN}


def test_data_holding_the_bucket_label_is_refused() -> None:
    frame = _frame({sdc.POOLED: 20})
    with pytest.raises(InvalidInput) as e:
        _cells(frame, {"kind": "frequency", "dims": ["ward"]})
    assert e.value.rule == "pooled_label"


def test_the_audited_route_and_dp_pool_too() -> None:
    frame = _frame({"Z": 1, "Y": 3})
    spec = parse_statistics_spec({"analyses": [
        {"kind": "frequency", "dims": ["ward"]},
        {"kind": "magnitude", "dims": ["ward"], "value": "cost", "statistics": ["mean"]}]},
        SCHEMA)
    slots = slots_for(K)
    history = release_audit.History(ids=row_identities(frame, "k" * 16),
                                    prior=Sketches.empty(slots), released_before=0)
    done = release_audit.compute_audited(frame, spec, statistics.policy_for(K, None),
                                         history)
    for a in done.document["analyses"]:
        cells = a["tables"][0]["cells"] if "tables" in a else a["cells"]
        assert {c["cell"]["ward"] for c in cells} == {"A", "B", sdc.POOLED, sdc.MARGIN}
    dp = parse_statistics_spec({"analyses": [{"kind": "frequency", "dims": ["ward"]}],
                                "dp": {"epsilon": 1.0}}, SCHEMA)
    doc = statistics.compute(frame, dp, statistics.policy_for(K, None))
    assert {c["cell"]["ward"] for c in doc["analyses"][0]["cells"]} == {
        "A", "B", sdc.POOLED, sdc.MARGIN}


def test_a_flagged_magnitude_cell_does_not_come_back_from_its_margin() -> None:
    # Twelve Z records all worth 3: class disclosure flags the Z cell (held back). The
    # others' values are spread (a continuous column: a discrete one's rare values would
    # make A and B short cells, R6-1).
    frame = pd.DataFrame({"ward": ["A"] * 30 + ["B"] * 30 + ["Z"] * 12,
                          "los": [i % 7 + 1 + i / 100 for i in range(60)] + [3.0] * 12})
    policy = sdc.SDCPolicy(min_count=K, class_disclosure=sdc.Action.FLAG)
    t = sdc.magnitude_table(frame, ["ward"], "los", ["sum"], policy)["sum"]
    status = dict(zip(t.cells.index, t.status, strict=True))
    assert status["Z"] is sdc.CellStatus.FLAGGED
    shown = t.values.dropna()
    # Z is withheld by the route; its line (A, B, Z, All) has another withheld cell.
    assert len({"A", "B", sdc.MARGIN} - set(shown.index)) >= 1


def test_a_flagged_count_is_protected_where_zeros_are_published() -> None:
    # Ward Z's 12 records are all insured: class disclosure flags (Z, 1); zeros are
    # published, so the empty (Z, 0) is no cover for it.
    frame = pd.DataFrame({"ward": ["A"] * 30 + ["B"] * 30 + ["Z"] * 12,
                          "insured": [float(i % 2) for i in range(60)] + [1.0] * 12})
    policy = sdc.SDCPolicy(min_count=K, zeros=sdc.Action.ALLOW,
                           class_disclosure=sdc.Action.FLAG)
    t = sdc.frequency_table(frame, ["ward", "insured"], policy)
    status = dict(zip(t.cells.index, t.status, strict=True))
    assert status[("Z", 1.0)] is sdc.CellStatus.FLAGGED
    withheld = {k for k, s in status.items() if s is not sdc.CellStatus.OK}
    # Neither the Z row nor the insured column gives (Z, 1) as its total less the rest.
    assert {("Z", sdc.MARGIN), ("Z", 1.0)} <= withheld or len(
        {k for k in withheld if k[0] == "Z"}) >= 2
    assert len({k for k in withheld if k[1] == 1.0}) >= 2
