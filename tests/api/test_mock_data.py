"""Declared field metadata, and mock data made from it for any dataset in the catalog."""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
import pytest

from tests.api.helpers import PATIENT_FIELDS, register

DECLARED: list[dict[str, Any]] = [
    {"name": "patient_id", "type": "string", "sensitivity": "identifier"},
    {"name": "age", "type": "integer", "sensitivity": "internal", "range": [0, 99],
     "missing_rate": 0.02},
    {"name": "sex", "type": "string", "sensitivity": "internal", "categories": ["F", "M"]},
    {"name": "diagnosis", "type": "string", "sensitivity": "sensitive",
     "categories": ["I21", "J18", "E11"]},
    {"name": "cost", "type": "number", "sensitivity": "sensitive", "range": [100, 5000.5]},
]


def _csv(r: Any) -> pd.DataFrame:
    assert r.status_code == 200, r.json
    assert r.mimetype == "text/csv" and "attachment" in r.headers["Content-Disposition"]
    return pd.read_csv(io.BytesIO(r.data), dtype=str, keep_default_na=False)


def test_mock_data_of_a_catalog_dataset(make_party: Any, make_agent: Any) -> None:
    provider = make_party("provider")
    agent = make_agent(provider)
    ds = register(provider, agent, fields=DECLARED)
    assert ds["fields"][2]["categories"] == ["F", "M"]
    assert "categories" not in ds["fields"][0]  # nothing undeclared is stored
    requester = make_party("requester")
    t = _csv(requester.get(f"/datasets/{ds['id']}/mock-data?rows=500&seed=3"))
    assert list(t.columns) == [f["name"] for f in DECLARED] and len(t) == 500
    assert set(t["diagnosis"]) == {"I21", "J18", "E11"}
    assert all(v.startswith("MOCK-patient_id-") for v in t["patient_id"])
    assert _csv(requester.get(f"/datasets/{ds['id']}/mock-data?rows=500&seed=3")).equals(t)
    # From the declarations only: another dataset declared alike, whatever its file
    # holds, has the very same mock data.
    twin = register(provider, agent, fields=DECLARED, location="other.csv")
    assert _csv(requester.get(f"/datasets/{twin['id']}/mock-data?rows=500&seed=3")).equals(t)
    bad = requester.get(f"/datasets/{ds['id']}/mock-data?rows=0")
    assert bad.status_code == 400 and bad.json["field"] == "rows"


def test_mock_data_only_for_what_the_catalog_shows(make_party: Any) -> None:
    provider = make_party("provider")
    ds = register(provider)  # still being checked: not in the catalog for others
    assert make_party("requester").get(f"/datasets/{ds['id']}/mock-data").status_code == 404
    assert provider.get(f"/datasets/{ds['id']}/mock-data").status_code == 200


@pytest.mark.parametrize(("field", "rule_part"), [
    ({"name": "x", "type": "integer", "sensitivity": "internal", "categories": ["1"]},
     "only a string field declares categories"),
    ({"name": "x", "type": "string", "sensitivity": "identifier", "categories": ["a"]},
     "an identifier's values are never published"),
    ({"name": "x", "type": "integer", "sensitivity": "internal", "range": [5, 1]},
     "min must not be above max"),
    ({"name": "x", "type": "date", "sensitivity": "internal", "range": [1, 2]},
     "YYYY-MM-DD dates for a date field"),
    ({"name": "x", "type": "string", "sensitivity": "internal", "range": [1, 2]},
     "a range is [min, max]"),
    ({"name": "x", "type": "string", "sensitivity": "internal", "missing_rate": 1.5},
     "must be between 0.0 and 1.0"),
])
def test_declared_metadata_is_validated(make_party: Any, field: dict[str, Any],
                                        rule_part: str) -> None:
    from tests.api.helpers import dataset_body

    r = make_party("provider").post("/datasets",
                                    dataset_body(fields=[*PATIENT_FIELDS, field]))
    assert r.status_code == 400, r.json
    assert r.json["field"].startswith("fields[5]") and rule_part in r.json["rule"]
