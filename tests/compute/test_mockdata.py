"""Mock data comes from the declared schema only: no real value, deterministic by seed."""

from __future__ import annotations

from typing import Any

import pandas as pd

from compute import mockdata
from sandbox.demo_data import hospital_table

DECLARED: list[dict[str, Any]] = [
    {"name": "patient_id", "type": "string", "sensitivity": "identifier"},
    {"name": "age", "type": "integer", "sensitivity": "internal", "range": [18, 90]},
    {"name": "sex", "type": "string", "sensitivity": "internal", "categories": ["F", "M"],
     "missing_rate": 0.1},
    {"name": "diagnosis", "type": "string", "sensitivity": "sensitive",
     "categories": ["I21", "J18", "E11", "K35", "S72"]},
    {"name": "los", "type": "integer", "sensitivity": "sensitive"},
    {"name": "cost", "type": "number", "sensitivity": "sensitive", "range": [100, 20000]},
    {"name": "note", "type": "string", "sensitivity": "internal"},
    {"name": "admitted", "type": "date", "sensitivity": "internal",
     "range": ["2025-01-01", "2025-12-31"]},
    {"name": "member_no", "type": "integer", "sensitivity": "identifier"},
]


def test_same_seed_same_table_other_seed_other_table() -> None:
    a = mockdata.generate(DECLARED, 300, seed=7)
    assert a.equals(mockdata.generate(DECLARED, 300, seed=7))
    assert not a.equals(mockdata.generate(DECLARED, 300, seed=8))
    # Per-column generators: the permitted columns alone are the same columns.
    some = mockdata.generate([DECLARED[3], DECLARED[1]], 300, seed=7)
    assert some["age"].equals(a["age"]) and some["diagnosis"].equals(a["diagnosis"])


def test_values_come_from_the_declarations_only() -> None:
    t = mockdata.generate(DECLARED, 2000, seed=1)
    assert list(t.columns) == [f["name"] for f in DECLARED]
    assert t["age"].between(18, 90).all()
    assert set(t["diagnosis"]) == {"I21", "J18", "E11", "K35", "S72"}
    assert set(t["sex"]) == {"F", "M", ""}
    assert 0.05 < (t["sex"] == "").mean() < 0.15  # the declared missing rate
    assert t["cost"].between(100, 20000).all()
    assert t["admitted"].between("2025-01-01", "2025-12-31").all()
    assert t["los"].between(*mockdata.DEFAULT_RANGE["integer"]).all()
    assert len(set(t["patient_id"])) == len(t)


def test_no_real_value_in_identifier_or_free_text_columns() -> None:
    real = hospital_table(3, 5000, "H3").astype(str)
    real["note"] = real["patient_id"] + " admitted via A&E"
    real["member_no"] = [str(i) for i in range(len(real))]
    mock = mockdata.generate(DECLARED, 5000, seed=0).astype(str)
    for column in ("patient_id", "note", "member_no"):
        assert not set(mock[column]) & set(real[column]), column
    # The distribution is the declaration's (uniform over the range), not the data's.
    assert abs(pd.to_numeric(mock["cost"]).mean() - (100 + 20000) / 2) < 400
    assert abs(pd.to_numeric(real["cost"]).mean() - (100 + 20000) / 2) > 1000
