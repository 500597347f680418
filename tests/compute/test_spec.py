"""Bad specs fail with InvalidInput naming the field and the rule, before any job runs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from compute.errors import InvalidInput
from compute.layout import build_layout
from compute.spec import parse_spec, spec_from_json
from tests.compute.conftest import FULL_SPEC, SCHEMA


def test_full_spec_roundtrips_through_json() -> None:
    spec = parse_spec(FULL_SPEC, SCHEMA)
    again = spec_from_json(spec.to_json(), SCHEMA)
    assert again == spec
    assert build_layout(again).digest == build_layout(spec).digest


def test_brief_shorthand_groups() -> None:
    spec = parse_spec({"statistics": ["grouped"], "groups": {
        "by": "diagnosis", "categories": ["J18", "I21"], "values": ["cost"]}}, SCHEMA)
    assert spec.group_cells == 2


@pytest.mark.parametrize(("patch", "field", "rule"), [
    ({"statistics": ["median"]}, "statistics[0]", "unknown_statistic"),
    ({"statistics": "mean"}, "statistics", "type"),
    ({"columns": ["age", "salary"]}, "columns[1]", "unknown_column"),
    ({"columns": ["age", "sex"]}, "columns[1]", "not_numeric"),
    ({"ols": {"y": "cost", "x": ["diagnosis"]}}, "ols.x[0]", "not_numeric"),
    ({"bins": {"age": [0, 40, 18]}}, "bins.age", "not_increasing"),
    ({"bins": {"age": [0, "x"]}}, "bins.age[1]", "type"),
    ({"groups": {"by": [{"column": "diagnosis", "categories": [str(i) for i in range(20)]},
                        {"column": "sex", "categories": [str(i) for i in range(20)]}],
                 "values": []}}, "groups.by", "too_many_groups"),
    ({"contingency": {"rows": "sex", "cols": "diagnosis", "row_categories": ["F", "F"],
                      "col_categories": ["J18"]}}, "contingency.row_categories", "duplicate"),
    ({"quantiles": {"cost": {"probs": [1.5], "edges": [0, 1]}}}, "quantiles.cost.probs", "range"),
    ({"quantiles": {"cost": {"probs": [0.5], "edges": [float(i) for i in range(4098)]}}},
     "quantiles.cost.edges", "too_many"),
    ({"shift": {"sex": 1.0}}, "shift.sex", "not_numeric"),
    ({"colour": 1}, "colour", "unknown_field"),
    ({"version": 2}, "version", "unsupported"),
])
def test_bad_specs(patch: dict[str, Any], field: str, rule: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_spec({**FULL_SPEC, **patch}, SCHEMA)
    assert (err.value.field, err.value.rule) == (field, rule)
    assert err.value.http_status == 400


def test_missing_and_unused_sections() -> None:
    with pytest.raises(InvalidInput) as err:
        parse_spec({"statistics": ["histogram"]}, SCHEMA)
    assert (err.value.field, err.value.rule) == ("bins", "required")
    with pytest.raises(InvalidInput) as err:
        parse_spec({"statistics": ["count"], "columns": ["age"], "bins": {"age": [0, 1]}},
                   SCHEMA)
    assert err.value.rule == "statistic_not_requested"


def test_too_many_slots() -> None:
    edges = [float(i) for i in range(4097)]
    raw = {"statistics": ["quantiles"],
           "quantiles": {f"c{i}": {"probs": [0.5], "edges": edges} for i in range(17)}}
    with pytest.raises(InvalidInput) as err:
        parse_spec(raw, {f"c{i}": "number" for i in range(17)})
    assert (err.value.field, err.value.rule) == ("spec", "too_many_slots")


def test_dp_rules() -> None:
    with pytest.raises(InvalidInput) as err:
        parse_spec({**FULL_SPEC, "dp": {"epsilon": 1.0}}, SCHEMA)
    assert (err.value.field, err.value.rule) == ("dp", "statistic_not_supported")
    with pytest.raises(InvalidInput) as err:
        parse_spec({"statistics": ["mean"], "columns": ["cost"], "dp": {"epsilon": 1.0}},
                   SCHEMA)
    assert (err.value.field, err.value.rule) == ("dp.bounds.cost", "required")
    with pytest.raises(InvalidInput) as err:
        parse_spec({"statistics": ["count"], "columns": ["cost"], "dp": {"epsilon": 0}}, SCHEMA)
    assert err.value.rule == "range"


def test_column_keyed_sections_in_any_order_give_one_layout() -> None:
    """The controller's JSON sorts object keys on the way to the agents; the requester's
    SDK keeps its own order. Both must derive the same slot layout, or the combined
    aggregate decrypts to garbage after every provider's run was spent."""
    spec = {"statistics": ["histogram", "quantiles"],
            "bins": {"cost": [0, 1000, 5000], "age": [0, 18, 65, 120]},
            "quantiles": {"cost": {"probs": [0.5], "edges": [0, 1000, 5000]},
                          "age": {"probs": [0.5], "edges": [0, 50, 120]}}}
    as_written = parse_spec(spec, SCHEMA)
    as_sorted = spec_from_json(json.loads(json.dumps(as_written.to_json(), sort_keys=True)),
                               SCHEMA)
    assert build_layout(as_written).entries == build_layout(as_sorted).entries
