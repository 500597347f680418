"""compute.sdc.ols: the columns a model reads meet the rule their magnitude cell meets (R6-1c).

A model releases, in effect, the sums and sums of squares of its columns over its sample
(the fit gives the outcome's, the standard errors a regressor's X'X). A discrete column
(values that repeat) is a partition by value: each value held by none or by ``min_count``
contributors or more, and its frequency table hiding no count.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from compute.sdc import Outcome, Rule, SDCPolicy, ols

K = SDCPolicy().min_count


def _stage(counts: dict[int, int], seed: int) -> pd.DataFrame:
    """A discrete ``stage`` (``counts``: value to records) beside a continuous ``cost``
    and ``weight`` (every value distinct)."""
    rng = np.random.default_rng(seed)
    stage = np.repeat(list(counts), list(counts.values())).astype(float)
    n = len(stage)
    return pd.DataFrame({"stage": stage, "cost": rng.lognormal(8, 0.4, n),
                         "weight": rng.normal(70, 12, n)})


def test_a_discrete_outcome_with_a_rare_value_is_withheld() -> None:
    # Three patients at stage 3 among 2,000: the model of stage gives its sum and squares.
    m = ols(_stage({0: 1500, 1: 300, 2: 197, 3: 3}, 1), "stage", ["cost"])
    assert m.outcome is Outcome.WITHHELD and m.coefficients is None and m.fit is None
    assert m.rules == (Rule.THRESHOLD,)
    # The reason names the rule and the policy's threshold, no figure of the data.
    assert [int(v) for v in re.findall(r"\d+", " ".join(m.reasons))] == [K]


def test_a_discrete_outcome_whose_every_value_is_common_is_released() -> None:
    m = ols(_stage({0: 1400, 1: 300, 2: 200, 3: K}, 2), "stage", ["cost"])
    assert m.outcome is Outcome.RELEASED and m.coefficients is not None and m.fit


def test_a_binary_outcome_needs_each_value_held_by_min_count() -> None:
    # A 0/1 outcome (a linear probability model) is the normal case: released when both
    # values are held by k or more, as its sum (the count of ones) would be.
    df = _stage({0: 1990, 1: K}, 3)
    assert ols(df, "stage", ["cost"]).outcome is Outcome.RELEASED
    assert ols(_stage({0: 1991, 1: K - 1}, 3), "stage", ["cost"]).rules == (Rule.THRESHOLD,)
    assert ols(_stage({0: K - 1, 1: 1991}, 3), "stage", ["cost"]).rules == (Rule.THRESHOLD,)


def test_a_discrete_regressor_with_a_rare_value_is_withheld() -> None:
    # An age-like regressor of sixty common values and one rare one: the standard errors
    # give X'X, its sum and squares. Neither a two-valued flag nor a leverage case.
    df = _stage({a: 30 for a in range(20, 80)} | {99: 1}, 4)
    m = ols(df, "cost", ["stage"])
    assert m.rules == (Rule.THRESHOLD,) and m.coefficients is None
    # With the rare value moved into a common one, the same model is released.
    common = df.assign(stage=df.stage.where(df.stage != 99, 50.0))
    assert ols(common, "cost", ["stage"]).outcome is Outcome.RELEASED
    # Beside a continuous regressor the discrete one still withholds the model.
    assert ols(df, "cost", ["weight", "stage"]).rules == (Rule.THRESHOLD,)


def test_a_continuous_outcome_and_regressors_are_unaffected() -> None:
    # Costs and weights take (almost) every value once: no frequency table labels them,
    # and no value is a part of a partition. An outlier is the leverage rule's business
    # on a regressor and nobody's on the outcome (its sum is a magnitude cell's).
    df = _stage({0: 1000, 1: 1000}, 5)
    df.loc[7, "cost"] = 1e7
    m = ols(df, "cost", ["weight"])
    assert m.outcome is Outcome.RELEASED and m.rules == ()
    assert ols(df, "cost", ["weight", "stage"]).outcome is Outcome.RELEASED
    assert ols(df, "weight", ["cost"]).rules == (Rule.LEVERAGE,)  # as before


def test_the_frequency_table_hiding_a_count_withholds_the_model() -> None:
    # The rare value's records have no cost, so the model's sample holds every value of
    # stage k times or more; but the frequency table of stage (over every record) pools
    # it and hides a complement, and the model's sums of stage are equations in those.
    df = _stage({0: 1500, 1: 300, 2: 197, 3: 3}, 6)
    df.loc[df.stage == 3, "cost"] = np.nan
    assert ols(df, "stage", ["cost"]).rules == (Rule.THRESHOLD,)
    assert ols(df, "cost", ["stage"]).rules == (Rule.THRESHOLD,)
    # Without the rare records the table hides nothing and the model is released.
    assert ols(df[df.stage != 3], "stage", ["cost"]).outcome is Outcome.RELEASED


def test_a_value_counts_persons_where_the_data_declares_them() -> None:
    # Stage 3 held by twelve records of three patients: common as records, rare as
    # persons.
    df = _stage({0: 1500, 1: 300, 2: 188, 3: 12}, 7)
    df["patient"] = np.arange(len(df))
    df.loc[df.stage == 3, "patient"] = [1_000_000 + i % 3 for i in range(12)]
    assert ols(df, "stage", ["cost"]).outcome is Outcome.RELEASED
    assert ols(df, "stage", ["cost"], unit="patient").rules == (Rule.THRESHOLD,)
    assert ols(df, "cost", ["stage"], unit="patient").outcome is Outcome.WITHHELD


def test_a_column_judged_on_the_whole_frame_not_the_sample() -> None:
    # Few records of a continuous column in the sample: a sample of three values is a
    # partition by value (its count and sum solve for the parts), whatever the column.
    rng = np.random.default_rng(8)
    n = 400
    x = rng.normal(size=n)
    x[:200] = np.nan  # half the records have no x; the rest take three values
    x[200:] = np.repeat([1.0, 2.0, 3.0], [195, 3, 2])
    df = pd.DataFrame({"y": rng.normal(size=n), "x": x})
    assert ols(df, "y", ["x"]).rules[0] is Rule.THRESHOLD
