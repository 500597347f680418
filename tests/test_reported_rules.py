"""A table's reported rules: a cell under the threshold counts as ``threshold`` alone."""

from __future__ import annotations

from typing import Any

import pandas as pd

from compute import sdc
from compute.statistics import _outcome, analysis
from compute.statspec import parse_statistics_spec


def _one_cell_sum(holders: int) -> dict[str, Any]:
    frame = pd.DataFrame({"flag": [1.0] * holders + [0.0] * 40})
    tables = sdc.magnitude_table(frame, (), "flag", ["sum"], sdc.DEFAULT_POLICY)
    return _outcome("sum", tables["sum"], sdc.DEFAULT_POLICY)


def test_small_sum_reports_threshold_alone_whatever_else_hit() -> None:
    one, several = _one_cell_sum(1), _one_cell_sum(5)
    assert one["rules"] == several["rules"] == ["threshold"]
    assert one["reasons"] == several["reasons"]
    assert len(one["reasons"]) == 1


def test_an_empty_hidden_cell_reports_threshold_not_zeros() -> None:
    """Ward A has no insured patient: its (A, 1) cell is empty and hidden, and secondary
    suppression hides the rectangle (A, 0), (B, 0), (B, 1). With the margins shown the
    rectangle has one unknown; ``zeros`` among the table's rules would say one corner is
    0, leaving four candidate tables (one of them the truth). Reported as ``threshold``,
    a corner is anything from 0 to k - 1."""
    frame = pd.DataFrame({"ward": ["A"] * 30 + ["B"] * 30 + ["C"] * 40,
                          "insured": [0] * 30 + [0] * 15 + [1] * 15 + [0] * 20 + [1] * 20})
    spec = parse_statistics_spec(
        {"analyses": [{"kind": "frequency", "dims": ["ward", "insured"]}]},
        {"ward": "category", "insured": "integer"})
    checked = sdc.frequency_table(frame, ("ward", "insured"), sdc.DEFAULT_POLICY)
    assert any(sdc.Rule.ZEROS in rules for rules in checked.cells["rules"])  # it was hit
    doc = analysis(frame, spec.analyses[0], sdc.DEFAULT_POLICY)
    hidden = [c for c in doc["cells"] if c["value"] is None]
    assert hidden, "the empty cell is hidden"
    assert "zeros" not in doc["rules"]
    assert doc["rules"][0] == "threshold"
    assert len(doc["reasons"]) == len(doc["rules"])
