"""Script route: a statistic of a column taking two or three values in a group, or of a
discrete column, is a count of each value's holders, held to the threshold like a row
(``rederive_units.short_level``)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from compute import statistics
from containers.rederive import Finding, rederive

TYPES = {"ward": "string", "flag": "integer"}
POLICY = statistics.policy_for(10, None)


def _frame(wards: dict[str, list[int]]) -> pd.DataFrame:
    """Per ward its records' flag values; text, as the agent reads the input."""
    return pd.DataFrame({"ward": [w for w, v in wards.items() for _ in v],
                         "flag": [x for v in wards.values() for x in v]}).astype(str)


def _check(frame: pd.DataFrame, keep: set[str], units: np.ndarray | None = None,
           stat: str = "sum") -> list[Finding]:
    typed = frame.assign(flag=frame.flag.astype(float))
    t = typed.groupby("ward").flag.agg(n="size", value=stat).reset_index()
    rows = [[w, str(n), f"{v:.6f}"] for w, n, v in t.itertuples(index=False) if w in keep]
    return rederive(["ward", "n", f"{stat}_flag"], rows, frame, TYPES, POLICY, units)


def _where(found: list[Finding], rule: str) -> set[tuple[int | None, int | None]]:
    return {(f.column, f.row) for f in found if f.rule == rule}


def test_a_sum_of_a_flag_held_by_fewer_than_k_is_a_threshold() -> None:
    for ones, short in ((3, True), (9, True), (10, False)):
        frame = _frame({"a": [1] * ones + [0] * (40 - ones), "b": [1] * 20 + [0] * 20})
        for stat in ("sum", "mean"):
            found = _check(frame, {"a", "b"}, stat=stat)
            assert ((3, 1) in _where(found, "threshold")) == short, (ones, stat)
            assert (3, 2) not in _where(found, "threshold")
    # Three values are a partition too (count, sum and squares give each count); so are
    # four or more of a discrete column (its values repeat: beside the column's frequency
    # table the sums give the counts it hides, R6-1b), not of a continuous one.
    three = _frame({"a": [0] * 30 + [1] * 20 + [2] * 3, "b": [1] * 20 + [0] * 20})
    assert (3, 1) in _where(_check(three, {"a", "b"}), "threshold")
    four = _frame({"a": [0] * 30 + [1] * 20 + [2] * 3 + [5] * 2, "b": [1] * 20 + [0] * 20})
    assert (3, 1) in _where(_check(four, {"a", "b"}), "threshold")
    continuous = _frame({"a": [0] * 30 + [1] * 20 + [2] * 3 + [5] * 2,
                         "b": list(range(100, 160))})
    assert not _where(_check(continuous, {"a", "b"}), "threshold")


def test_each_values_holders_are_persons_where_declared() -> None:
    # Twelve flagged episodes (enough as records) of three patients (too few as persons).
    frame = _frame({"a": [1] * 12 + [0] * 28, "b": [1] * 20 + [0] * 20})
    units = np.r_[np.arange(12) % 3, np.arange(3, 71)].astype(np.int64)
    assert not _where(_check(frame, {"a", "b"}), "threshold")
    assert (3, 1) in _where(_check(frame, {"a", "b"}, units), "threshold")


def test_left_out_groups_whose_flag_few_hold_are_a_complement() -> None:
    # Wards c and d (five and seven records) are left out as below k: twelve records, but
    # the table's total less its rows is their sum, three ones, which no one dominates.
    frame = _frame({"a": [1] * 20 + [0] * 20, "b": [1] * 15 + [0] * 15,
                    "c": [1, 1, 0, 0, 0], "d": [1] + [0] * 6})
    found = _check(frame, {"a", "b"})
    assert (3, None) in _where(found, "complement")
    spread = _frame({"a": [1] * 20 + [0] * 20, "b": [1] * 15 + [0] * 15,
                     "c": [1] * 5 + [0] * 4, "d": [1] * 5 + [0] * 3, "e": [0] * 3})
    assert not _where(_check(spread, {"a", "b"}), "complement")


def test_level_findings_carry_no_data() -> None:
    frame = _frame({"a": [1] * 3 + [0] * 37, "b": [1] * 20 + [0] * 20,
                    "c": [1, 1, 0, 0, 0], "d": [1] + [0] * 6})
    for f in _check(frame, {"a", "b"}):
        # The policy's threshold and its k-1 are the only numbers a message may hold.
        assert not re.search(r"\d", re.sub(r"\b(10|9)\b", "", f.message)), f.message
