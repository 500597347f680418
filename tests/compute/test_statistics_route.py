"""The trusted route's computation: a spec's analyses, checked under the permit's policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from compute import statistics
from compute.statspec import parse_statistics_spec

SCHEMA = {"ward": "string", "cost": "number", "age": "integer", "insured": "boolean"}


def _frame() -> pd.DataFrame:
    rows = [{"ward": "A", "cost": 90.0 + i, "age": 30 + i % 40, "insured": "true"}
            for i in range(30)]
    rows += [{"ward": "B", "cost": 90.0 + i, "age": 30 + i % 40, "insured": "false"}
             for i in range(29)]
    rows += [{"ward": "B", "cost": 1_000_000.0, "age": 50, "insured": "true"}]  # dominates B
    return pd.DataFrame(rows)


def _cost_by_ward(settings: dict[str, Any] | None) -> dict[str, Any]:
    spec = parse_statistics_spec({"analyses": [
        {"kind": "magnitude", "dims": ["ward"], "value": "cost", "statistics": ["sum"]}]},
        SCHEMA)
    doc = statistics.compute(_frame(), spec, statistics.policy_for(10, settings))
    json.dumps(doc, allow_nan=False)  # the document is plain JSON
    table = doc["analyses"][0]["tables"][0]
    # Hidden cells carry no rules of their own: each cell here gets the table's rules.
    return {c["cell"]["ward"]: {**c, "table_rules": table["rules"]} for c in table["cells"]}


def test_a_dominated_cell_is_suppressed_under_the_default_policy() -> None:
    cells = _cost_by_ward(None)
    assert cells["A"]["status"] == "ok" and cells["A"]["value"] == sum(90.0 + i for i in range(30))
    assert cells["B"]["value"] is None and "dominance" in " ".join(cells["B"]["table_rules"])
    assert cells["B"]["status"] == "suppressed" and cells["B"]["rules"] == []


def test_the_permits_settings_are_what_applies() -> None:
    loose = {"dominance_n": 1, "dominance_k": 1.0, "p_percent": 0.0}
    assert _cost_by_ward(loose)["B"]["status"] == "ok"


def test_the_projected_file_is_read_with_its_declared_types(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    _frame().to_csv(path, index=False)
    frame = statistics.load_frame(path, SCHEMA)
    assert frame["cost"].dtype.kind == "f" and frame["insured"].tolist()[:1] == [1.0]
    assert frame["ward"].dtype == object


def test_a_record_without_a_dimension_value_is_left_out(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    rows = [*(f"A,{w}" for w in ("F", "M") * 15), "A,", *(f"B,{w}" for w in ("F", "M") * 15)]
    path.write_text("ward,sex\n" + "\n".join(rows) + "\n")
    frame = statistics.load_frame(path, {"ward": "string", "sex": "string"})
    assert frame["sex"].isna().sum() == 1
    spec = parse_statistics_spec({"analyses": [{"kind": "frequency", "dims": ["sex"]}]},
                                 {"ward": "string", "sex": "string"})
    doc = statistics.compute(frame, spec, statistics.policy_for(10, None))
    labels = {c["cell"]["sex"] for c in doc["analyses"][0]["cells"]}
    assert labels == {"F", "M", "All"}  # no category of its own for the missing value
