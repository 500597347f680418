"""compute.sdc: quantiles of a cell whose common values leave a few other records.

A quantile released as a value many records share tells what they hold; the cell's count
and mean (and std) then give the sum (and squares) of the records left over. So such a
quantile, or a midpoint with that value, is held (``quantile_remainder``) unless nothing
or ``min_count`` records or more are left over.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from compute.sdc import MARGIN, Action, CellStatus, Rule, SDCPolicy, magnitude_table

OK, PRIMARY = CellStatus.OK, CellStatus.SUPPRESSED_PRIMARY


def _cell(values: list[float], statistics: list[str], quantiles: Sequence[float] = ()
          ) -> dict[str, pd.Series]:
    """The statistics of one cell holding ``values``, by measure name."""
    out = magnitude_table(pd.DataFrame({"v": values}), [], "v", statistics,
                          quantiles=quantiles)
    return {name: t.cells.loc[MARGIN] for name, t in out.items()}


def test_a_common_median_beside_one_other_record_is_held() -> None:
    # Ten day cases and one nine-day stay: a median of 1 with the mean gives the 9.
    out = _cell([1.0] * 10 + [9.0], ["mean", "median"])
    assert out["q0.5"]["status"] is PRIMARY and pd.isna(out["q0.5"]["value"])
    assert out["q0.5"]["rules"] == (Rule.QUANTILE_REMAINDER,)
    # The cell takes two values, one held by a single record: a partition by value with
    # a short part, so the mean is held too (the threshold on each value's holders).
    assert out["mean"]["status"] is PRIMARY and out["mean"]["rules"] == (Rule.THRESHOLD,)


def test_midpoints_at_the_common_value_are_held_too() -> None:
    # Ten 2s, then 5 and 7. The 0.9 quantile is the midpoint of 2 and 5: with the count,
    # mean and std that is three equations in 2, 5 and 7.
    out = _cell([2.0] * 10 + [5.0, 7.0], ["median"], [0.25, 0.9])
    for name in ("q0.5", "q0.25", "q0.9"):
        assert out[name]["status"] is PRIMARY, name
        assert Rule.QUANTILE_REMAINDER in out[name]["rules"]
    # Landing on a rare value whose nearer neighbour is the common one: the same pair.
    near = _cell([2.0] * 10 + [2.5, 9.0, 9.5], [], [10 / 12])[f"q{10 / 12:g}"]
    assert near["rules"] == (Rule.QUANTILE_REMAINDER,)


def test_each_common_value_is_judged_by_what_its_own_records_leave() -> None:
    # Twelve 2s leave ten others (the ten 1s): the median 2 says as much as a cell of ten.
    out = _cell([1.0] * 10 + [2.0] * 12, ["median"])["q0.5"]
    assert out["status"] is OK and out["value"] == 2.0


def test_common_values_with_nothing_or_many_left_over_are_released() -> None:
    assert _cell([3.0] * 12 + list(np.arange(10.0, 20.0)), ["median"])["q0.5"]["value"] == 3.0
    two_groups = _cell([1.0] * 10 + [2.0] * 10, ["median"])["q0.5"]
    assert two_groups["status"] is OK and two_groups["value"] == 1.5


def test_every_record_sharing_the_value_stays_class_disclosure() -> None:
    out = _cell([4.0] * 15, ["median"])["q0.5"]
    assert out["rules"] == (Rule.CLASS_DISCLOSURE,)


def test_with_units_no_value_is_common_and_the_rule_does_not_apply() -> None:
    # Many records may be one contributor's: every quantile is a midpoint, and this one,
    # beside the lone maximum, falls to the extremes rule instead.
    df = pd.DataFrame({"v": [1.0] * 10 + [9.0], "u": range(11)})
    plain = magnitude_table(df, [], "v", ["median"])["q0.5"].cells.loc[MARGIN, "rules"]
    units = magnitude_table(df, [], "v", ["median"], unit="u")["q0.5"].cells.loc[MARGIN]
    assert plain == (Rule.QUANTILE_REMAINDER,)
    assert units["rules"] == (Rule.QUANTILE_EXTREME,) and units["status"] is PRIMARY


def test_the_rule_holds_per_cell_and_on_margins() -> None:
    df = pd.DataFrame({"g": ["a"] * 11 + ["b"] * 30,
                       "v": [1.0] * 10 + [9.0] + list(np.arange(30.0))})
    t = magnitude_table(df, ["g"], "v", ["median"])["q0.5"].cells
    assert t.loc["a", "rules"] == (Rule.QUANTILE_REMAINDER,)
    assert t.loc["b", "status"] is OK and t.loc[MARGIN, "status"] is OK


def test_every_rule_fits_the_cell_bit_masks() -> None:
    # Cells carry their rules as uint16 bit masks: one more rule than sixteen overflows.
    for rule in Rule:
        assert np.uint16(rule.bit) == rule.bit


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=10, max_size=40),
       st.lists(st.floats(0.05, 0.95), min_size=1, max_size=3))
def test_a_released_quantile_never_leaves_a_small_remainder(values: list[int],
                                                            qs: list[float]) -> None:
    out = magnitude_table(pd.DataFrame({"v": [float(v) for v in values]}), [], "v", [],
                          SDCPolicy(class_disclosure=Action.ALLOW), quantiles=qs)
    held = pd.Series(values).value_counts()
    for t in out.values():
        cell = t.cells.loc[MARGIN]
        if cell["status"] is OK and cell["value"] in held.index:
            left = len(values) - held[cell["value"]]
            assert left == 0 or left >= 10, (cell["value"], left)
