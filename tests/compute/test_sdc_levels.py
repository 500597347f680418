"""A magnitude cell whose value takes few values is a partition by value: the threshold
applies to each value's contributors (``compute.sdc.magnitude_cells.short_levels``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from compute.sdc import (
    MARGIN,
    CellStatus,
    Outcome,
    Rule,
    frequency_table,
    magnitude_table,
    within_group_variance,
)
from compute.sdc.magnitude_cells import FEW_LEVELS, partition_bound, short_levels
from compute.sdc.policy import DEFAULT_POLICY
from compute.sdc.rules import describe

PRIMARY, SECONDARY = CellStatus.SUPPRESSED_PRIMARY, CellStatus.SUPPRESSED_SECONDARY
K = DEFAULT_POLICY.min_count


def _flags(holders: int, n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    flag = np.zeros(n, dtype=bool)
    flag[:holders] = True
    return pd.DataFrame({"g": rng.choice(["a", "b"], n), "flag": flag,
                         "person": [f"p{i}" for i in range(n)]})


def test_a_boolean_sum_held_by_fewer_than_k_is_a_short_cell() -> None:
    for holders, hidden in ((3, True), (K - 1, True), (K, False)):
        cell = magnitude_table(_flags(holders), [], "flag", ["sum", "mean"])
        for name in ("sum", "mean"):
            c = cell[name].cells.loc[MARGIN]
            assert (c["status"] is PRIMARY) == hidden, (holders, name)
            assert (Rule.THRESHOLD in c["rules"]) == hidden
            assert pd.isna(c["value"]) == hidden
    # The complement is a level too: k-1 records without the flag.
    assert magnitude_table(_flags(200 - 3), [], "flag", ["sum"])["sum"].cells.loc[
        MARGIN, "status"] is PRIMARY


def test_the_reason_is_the_threshold_text_with_no_count() -> None:
    t = magnitude_table(_flags(3), [], "flag", ["sum"])["sum"]
    assert t.reasons == (describe(Rule.THRESHOLD, DEFAULT_POLICY),)


def test_a_short_level_in_one_group_brings_secondary_suppression() -> None:
    df = _flags(0, 300)
    df.loc[df.index[df.g == "a"][:4], "flag"] = True  # four holders in a, none in b
    df.loc[df.index[df.g == "b"][:40], "flag"] = True
    df["h"] = np.where(np.arange(300) % 2 == 0, "x", "y")
    cells = magnitude_table(df, ["g", "h"], "flag", ["sum"])["sum"].cells
    status = cells["status"]
    assert Rule.THRESHOLD in cells.loc[("a", MARGIN), "rules"]
    assert status[("a", MARGIN)] is PRIMARY
    # The margin less the other row must not give the hidden one back.
    assert status[("b", MARGIN)] in (PRIMARY, SECONDARY) or status[(MARGIN, MARGIN)] in (
        PRIMARY, SECONDARY)


def test_three_values_are_a_partition_and_the_bound_ignores_the_statistics() -> None:
    """Three values are a partition of any column; four or more are of a discrete one
    (its values repeat: R6-1), not of a continuous one whose cell happens to take four."""
    rng = np.random.default_rng(1)
    base = rng.choice([0.0, 1.0], 300)
    three = pd.DataFrame({"v": np.r_[base, [2.0, 2.0]]})
    four = pd.DataFrame({"v": np.r_[base, [2.0, 2.0, 3.0, 3.0]]})
    # Cell a takes the four values; cell b a continuous spread: the column is continuous.
    mixed = pd.DataFrame({"g": ["a"] * 304 + ["b"] * 300,
                          "v": np.r_[four.v, rng.normal(50, 10, 300)]})
    for stats in (["sum"], ["sum", "mean"], ["sum", "std"]):
        for frame in (three, four):
            t = magnitude_table(frame, [], "v", stats)["sum"].cells.loc[MARGIN]
            assert t["status"] is PRIMARY and Rule.THRESHOLD in t["rules"], stats
        assert magnitude_table(mixed, ["g"], "v", stats)["sum"].cells.loc[
            "a", "status"] is CellStatus.OK, stats


def test_discrete_is_judged_on_the_whole_column() -> None:
    # One distinct value per ten records at most: a stage code, an age in a large table.
    stage = np.repeat([0.0, 1.0, 2.0, 3.0], [500, 40, 25, 3])
    assert partition_bound(stage) is None
    assert partition_bound(np.r_[stage, np.nan, np.nan]) is None
    ages = np.clip(np.random.default_rng(2).normal(55, 18, 2000).round(), 0, 99)
    assert partition_bound(ages) is None
    # A cost in cents, a measurement: mostly distinct values.
    cents = np.random.default_rng(3).integers(10_000, 900_000, 2000).astype(float)
    assert partition_bound(cents) == FEW_LEVELS
    assert partition_bound(np.array([1.0, 2.0, 3.0])) == FEW_LEVELS


def test_levels_count_persons_where_the_data_declares_them() -> None:
    # Twelve flagged records (enough as records) of three patients (too few as persons).
    df = _flags(12)
    df.loc[:11, "person"] = ["p0", "p1", "p2"] * 4
    sum_of = magnitude_table(df, [], "flag", ["sum"])["sum"].cells.loc[MARGIN]
    assert sum_of["status"] is CellStatus.OK
    by_person = magnitude_table(df, [], "flag", ["sum"], unit="person")["sum"].cells
    assert by_person.loc[MARGIN, "status"] is PRIMARY
    assert Rule.THRESHOLD in by_person.loc[MARGIN, "rules"]


def test_short_levels_kernel() -> None:
    c = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2], dtype=np.int64)
    v = np.array([0.0, 0.0, 1.0, 5.0, 5.0, 5.0, 5.0, 1.0, 2.0])
    # Cell 0: levels of 2 and 1 records; cell 1: one level (no partition); cell 2: 1 + 1.
    assert short_levels(c, v, None, 4, 2).tolist() == [True, False, True, False]
    # As persons: cell 0's two zeros are one person.
    u = np.array([7, 7, 8, 1, 2, 3, 4, 5, 6], dtype=np.int64)
    assert short_levels(c, v, u, 4, 2).tolist() == [True, False, True, False]
    assert short_levels(c[:0], v[:0], None, 4, 2).tolist() == [False] * 4


def test_a_one_group_variance_of_a_boolean_is_withheld() -> None:
    df = _flags(3).assign(g="a")
    r = within_group_variance(df, ["g"], "flag")
    assert r.outcome is Outcome.WITHHELD and Rule.THRESHOLD in r.rules and r.values is None


def test_knowing_each_cells_distinct_values_changes_nothing() -> None:
    # The table passes each cell's distinct values (from its sort) to skip many-valued
    # cells; the answer must be the one computed from the records alone.
    rng = np.random.default_rng(3)
    c = rng.integers(0, 30, 3000).astype(np.int64)
    v = np.where(c % 3 == 0, rng.normal(0, 1, 3000), rng.integers(0, 1 + c % 5, 3000) * 1.0)
    u = rng.integers(0, 400, 3000).astype(np.int64)
    n_values = np.array([len(np.unique(v[c == i])) for i in range(30)], dtype=np.int64)
    for persons in (None, u):
        assert (short_levels(c, v, persons, 30, 40, n_values)
                == short_levels(c, v, persons, 30, 40)).all()
        assert short_levels(c, v, persons, 30, 40).any()


def test_a_discrete_cell_is_released_only_where_its_frequency_line_is() -> None:
    """R6-1d: every value of M is held by k or more, but the frequency table by group and
    stage hides two of M's counts as complements of F's three stage-3 patients: M's sum
    would solve for them, and F's three is the stage-3 margin less M and X."""
    def frame(parts: dict[str, dict[int, int]]) -> pd.DataFrame:
        return pd.DataFrame([(g, v) for g, p in parts.items() for v, c in p.items()
                             for _ in range(c)], columns=["g", "stage"])

    linked = frame({"F": {0: 900, 1: 40, 2: 30, 3: 3},
                    "M": {0: 900, 1: 200, 2: 200, 3: 12},
                    "X": {0: 900, 1: 10, 2: 10, 3: 15}})
    counts = frequency_table(linked, ["g", "stage"]).cells["status"]
    assert counts[("M", 1)] is not CellStatus.OK and counts[("M", 3)] is not CellStatus.OK
    status = magnitude_table(linked, ["g"], "stage", ["sum"])["sum"].cells["status"]
    assert status["F"] is PRIMARY and status["M"] is PRIMARY
    assert status[MARGIN] is CellStatus.OK  # its line is released: the sum adds nothing
    # M's line released in full: M's sum follows from its counts and is released. X has
    # no stage 3: the empty cell is hidden (zeros) and X's stage 2 as its complement, so
    # X's sum would give both (and F's three as the margin less them).
    shown = frame({"F": {0: 900, 1: 40, 2: 30, 3: 3},
                   "M": {0: 900, 1: 200, 2: 200, 3: 12},
                   "X": {0: 900, 1: 60, 2: 50}})
    status = magnitude_table(shown, ["g"], "stage", ["sum"])["sum"].cells["status"]
    assert status["M"] is CellStatus.OK
    assert status["F"] is PRIMARY and status["X"] is PRIMARY
