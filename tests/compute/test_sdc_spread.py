"""A std's own nk and p% rules: on the squared deviations from the cell's mean."""

from __future__ import annotations

import numpy as np
import pandas as pd

from compute.sdc import MARGIN, CellStatus, Rule, SDCPolicy, magnitude_table

HIDDEN = (CellStatus.SUPPRESSED_PRIMARY, CellStatus.SUPPRESSED_SECONDARY)


def outlier_table() -> pd.DataFrame:
    """Three groups of many alike values; group ``x`` also holds one far out (51 % of its
    absolute total: nk and p% pass on |x|, while its squared deviation is nearly all of
    the cell's sum of squares)."""
    rng = np.random.default_rng(2)
    frames = [pd.DataFrame({"g": g, "v": rng.normal(3000, 30, 20)}) for g in "xyz"]
    frame = pd.concat(frames, ignore_index=True)
    frame.loc[7, "v"] = 60000.0
    return frame


def test_a_std_dominated_by_one_squared_deviation_is_hidden_sum_and_mean_are_not() -> None:
    out = magnitude_table(outlier_table(), ["g"], "v", ["sum", "mean", "std"])
    for name in ("sum", "mean"):
        assert out[name].cells.loc["x", "status"] is CellStatus.OK
    std = out["std"].cells
    assert std.loc["x", "status"] is CellStatus.SUPPRESSED_PRIMARY
    assert Rule.DOMINANCE in std.loc["x", "rules"]
    # The margin's sum of squares is its cells' plus their n (mean - margin mean)^2, all
    # released: one more std of the line is hidden so that x's is not the rest.
    line = std.loc[["x", "y", "z", MARGIN], "status"]
    assert sum(s in HIDDEN for s in line) >= 2
    assert Rule.DOMINANCE in out["std"].rules


def test_std_hides_every_cell_the_sum_and_mean_hide() -> None:
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"a": rng.choice(list("pqrs"), 400), "b": rng.choice(list("uvw"), 400),
                          "v": rng.lognormal(8, 1.2, 400)})
    out = magnitude_table(frame, ["a", "b"], "v", ["sum", "std"])
    hidden_sum = out["sum"].cells["status"].isin(HIDDEN).to_numpy()
    hidden_std = out["std"].cells["status"].isin(HIDDEN).to_numpy()
    assert not (hidden_sum & ~hidden_std).any()


def test_without_a_std_sums_and_means_are_unchanged() -> None:
    frame = outlier_table()
    alone = magnitude_table(frame, ["g"], "v", ["sum", "mean"])
    beside = magnitude_table(frame, ["g"], "v", ["sum", "mean", "std"])
    for name in ("sum", "mean"):
        pd.testing.assert_frame_equal(alone[name].cells, beside[name].cells)


def test_std_rules_count_a_units_squared_deviations_together() -> None:
    # Two records of one person, each far out but neither alone at 90 % of the sum of
    # squares beside the other; together they are one contributor holding nearly all of it.
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"g": "x", "v": rng.normal(100, 1, 30)})
    frame.loc[[0, 1], "v"] = [400.0, 400.0]
    frame["person"] = ["p"] * 2 + [f"q{i}" for i in range(28)]
    nk1 = SDCPolicy(dominance_n=1, dominance_k=0.9, p_percent=0.0)
    by_record = magnitude_table(frame, ["g"], "v", ["std"], nk1)["std"]
    assert by_record.cells.loc["x", "status"] is CellStatus.OK
    by_person = magnitude_table(frame, ["g"], "v", ["std"], nk1, unit="person")["std"]
    assert by_person.cells.loc["x", "status"] is CellStatus.SUPPRESSED_PRIMARY
