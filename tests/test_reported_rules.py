"""A table's reported rules: a cell under the threshold counts as ``threshold`` alone."""

from __future__ import annotations

from typing import Any

import pandas as pd

from compute import sdc
from compute.statistics import _outcome


def _one_cell_sum(holders: int) -> dict[str, Any]:
    frame = pd.DataFrame({"flag": [1.0] * holders + [0.0] * 40})
    tables = sdc.magnitude_table(frame, (), "flag", ["sum"], sdc.DEFAULT_POLICY)
    return _outcome("sum", tables["sum"])


def test_small_sum_reports_threshold_alone_whatever_else_hit() -> None:
    one, several = _one_cell_sum(1), _one_cell_sum(5)
    assert one["rules"] == several["rules"] == ["threshold"]
    assert one["reasons"] == several["reasons"]
    assert len(one["reasons"]) == 1
