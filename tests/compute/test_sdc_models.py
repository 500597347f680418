"""compute.sdc: OLS, the chi-square test of independence, within-group variance."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from compute.errors import InvalidInput
from compute.sdc import (
    INTERCEPT,
    Action,
    Outcome,
    Rule,
    SDCPolicy,
    chi_square_test,
    ols,
    within_group_variance,
)
from compute.sdc.special import f_sf

# Anscombe's quartet, set I (Anscombe 1973, The American Statistician 27:17-21).
ANSCOMBE_X = [10, 8, 13, 9, 11, 14, 6, 4, 12, 7, 5]
ANSCOMBE_Y = [8.04, 6.95, 7.58, 8.81, 8.33, 9.96, 7.24, 4.26, 10.84, 4.82, 5.68]


def test_ols_reproduces_the_textbook_anscombe_fit() -> None:
    # R: summary(lm(y1 ~ x1, anscombe)): 3.0001 (1.1247), 0.5001 (0.1179), t 2.667 and
    # 4.241, p 0.02573 and 0.00217, sigma 1.237 on 9 df, R² 0.6665, adj 0.6295, F 17.99.
    df = pd.DataFrame({"x": ANSCOMBE_X, "y": ANSCOMBE_Y})
    # Eleven records for two coefficients: the extreme x (4 and 14) have leverage 0.32,
    # more than a mean of ten records gives one record; a threshold of three allows it.
    m = ols(df, "y", ["x"], SDCPolicy(min_dof=9, min_count=3))
    assert m.outcome is Outcome.RELEASED and m.coefficients is not None and m.fit is not None
    c = m.coefficients
    assert c.loc[INTERCEPT, "coef"] == pytest.approx(3.0001, abs=5e-5)
    assert c.loc["x", "coef"] == pytest.approx(0.5001, abs=5e-5)
    assert c.loc[INTERCEPT, "std_err"] == pytest.approx(1.1247, abs=5e-5)
    assert c.loc["x", "std_err"] == pytest.approx(0.1179, abs=5e-5)
    assert c.loc[INTERCEPT, "t"] == pytest.approx(2.667, abs=5e-4)
    assert c.loc["x", "t"] == pytest.approx(4.241, abs=5e-4)
    assert c.loc[INTERCEPT, "p_value"] == pytest.approx(0.02573, abs=5e-6)
    assert c.loc["x", "p_value"] == pytest.approx(0.00217, abs=5e-6)
    assert m.fit["sigma"] == pytest.approx(1.237, abs=5e-4)
    assert m.fit["r2"] == pytest.approx(0.6665, abs=5e-5)
    assert m.fit["adj_r2"] == pytest.approx(0.6295, abs=5e-5)
    assert m.fit["f"] == pytest.approx(17.99, abs=5e-3)
    assert m.fit["f_p_value"] == pytest.approx(0.00217, abs=5e-6)
    assert m.fit["df_resid"] == 9
    # 95 % CI: 0.5001 -+ t(9; 0.975) 0.1179 = 0.5001 -+ 2.262157 * 0.1179.
    assert c.loc["x", "ci_low"] == pytest.approx(0.2334, abs=1e-4)
    assert c.loc["x", "ci_high"] == pytest.approx(0.7668, abs=1e-4)


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = 2.0 + x @ np.array([1.5, -0.7, 0.0]) + rng.normal(0, 2.0, n)
    return pd.DataFrame({"y": y, "a": x[:, 0], "b": x[:, 1], "c": x[:, 2]})


@pytest.mark.parametrize("intercept", [True, False])
def test_ols_matches_the_normal_equations(intercept: bool) -> None:
    df = _frame(3000, 1)
    m = ols(df, "y", ["a", "b", "c"], intercept=intercept)
    assert m.coefficients is not None and m.fit is not None
    x = df[["a", "b", "c"]].to_numpy()
    if intercept:
        x = np.column_stack([np.ones(len(x)), x])
    y = df["y"].to_numpy()
    xtx_inv = np.linalg.inv(x.T @ x)
    beta = xtx_inv @ x.T @ y
    resid = y - x @ beta
    n, k = x.shape
    sigma2 = resid @ resid / (n - k)
    se = np.sqrt(np.diag(xtx_inv) * sigma2)
    tss = ((y - y.mean()) ** 2).sum() if intercept else y @ y
    r2 = 1 - resid @ resid / tss
    np.testing.assert_allclose(m.coefficients["coef"], beta, rtol=1e-9)
    np.testing.assert_allclose(m.coefficients["std_err"], se, rtol=1e-9)
    np.testing.assert_allclose(m.coefficients["t"], beta / se, rtol=1e-9)
    assert m.fit["r2"] == pytest.approx(r2, rel=1e-9)
    df_model = k - 1 if intercept else k
    assert m.fit["f"] == pytest.approx((r2 / df_model) / ((1 - r2) / (n - k)), rel=1e-9)
    # With thousands of dof the t tail is the normal one to three digits (away from the
    # far tail, where the two part ways in relative terms).
    for t, p in zip(m.coefficients["t"], m.coefficients["p_value"], strict=True):
        if abs(t) < 5:
            assert p == pytest.approx(math.erfc(abs(t) / math.sqrt(2)), rel=2e-3)


def test_a_well_powered_regression_is_released_untouched() -> None:
    m = ols(_frame(2000, 2), "y", ["a", "b", "c"])
    assert m.outcome is Outcome.RELEASED and m.rules == () and m.reasons == ()
    assert m.coefficients is not None and m.coefficients.loc["a", "p_value"] < 1e-10


def test_a_low_dof_regression_is_refused() -> None:
    m = ols(_frame(13, 3), "y", ["a", "b", "c"])  # 13 - 4 = 9 residual dof
    assert m.outcome is Outcome.WITHHELD and m.coefficients is None and m.fit is None
    assert m.rules == (Rule.RESIDUAL_DOF,)
    assert m.reasons == ("residual degrees of freedom: fewer than 10",)
    # Fourteen records pass the dof rule; but four coefficients over fourteen records
    # leave a mean leverage of 4/14, above 1/min_count, so only a policy with a lower
    # threshold releases them.
    assert ols(_frame(14, 3), "y", ["a", "b", "c"]).rules == (Rule.LEVERAGE,)
    assert ols(_frame(14, 3), "y", ["a", "b", "c"], SDCPolicy(min_count=1)).outcome \
        is Outcome.RELEASED


def test_missing_values_drop_their_rows() -> None:
    df = _frame(14, 3)
    df.loc[0, "b"] = np.nan
    assert ols(df, "y", ["a", "b", "c"]).rules == (Rule.RESIDUAL_DOF,)


def test_collinear_columns_are_refused() -> None:
    df = _frame(100, 4).assign(d=lambda f: 2 * f.a - f.b)
    m = ols(df, "y", ["a", "b", "d"])
    assert m.outcome is Outcome.WITHHELD and m.rules == (Rule.RANK_DEFICIENT,)


def test_an_exact_fit_is_class_disclosure() -> None:
    # Enough records that no one of them has leverage above 1/min_count.
    df = _frame(200, 5).assign(y=lambda f: 1.0 + 2.0 * f.a)
    flagged = ols(df, "y", ["a", "b"])
    assert flagged.outcome is Outcome.REVIEW and flagged.rules == (Rule.EXACT_FIT,)
    hidden = ols(df, "y", ["a", "b"], SDCPolicy(class_disclosure=Action.SUPPRESS))
    assert hidden.outcome is Outcome.WITHHELD and hidden.coefficients is None
    assert ols(df, "y", ["a", "b"], SDCPolicy(class_disclosure=Action.ALLOW)).outcome \
        is Outcome.RELEASED


def _flagged(n: int, held: int, seed: int, level: float = 1.0) -> pd.DataFrame:
    """``n`` records with a cost; ``flag`` is ``level`` for the first ``held``, else 0."""
    rng = np.random.default_rng(seed)
    flag = np.where(np.arange(n) < held, level, 0.0)
    return pd.DataFrame({"y": rng.lognormal(8, 0.5, n), "flag": flag,
                         "a": rng.normal(size=n)})


def test_a_flag_one_record_holds_withholds_the_model() -> None:
    # const + coef would be that record's own outcome, whatever the residual dof.
    df = _flagged(2000, 1, 11)
    m = ols(df, "y", ["flag"])
    assert m.outcome is Outcome.WITHHELD and m.coefficients is None and m.fit is None
    assert m.rules == (Rule.THRESHOLD, Rule.LEVERAGE)
    assert ols(df, "y", ["flag", "a"]).rules == (Rule.THRESHOLD, Rule.LEVERAGE)
    # Coded 1/2 instead of 0/1 it is the same stratum.
    assert ols(df.assign(flag=df.flag + 1), "y", ["flag"]).outcome is Outcome.WITHHELD


def test_a_dummy_needs_min_count_records_at_each_level() -> None:
    # Nine records: const + coef is their mean, a cell below the threshold. Ten are a
    # cell the threshold releases (h = 1/10 exactly), and so is the model.
    assert ols(_flagged(500, 9, 12), "y", ["flag"]).outcome is Outcome.WITHHELD
    m = ols(_flagged(500, 10, 12), "y", ["flag"])
    assert m.outcome is Outcome.RELEASED and m.coefficients is not None
    df = _flagged(500, 10, 12)
    assert m.coefficients["coef"].sum() == pytest.approx(df.y[:10].mean(), rel=1e-9)
    # The other level counts as much: a flag every record but nine holds.
    assert ols(_flagged(500, 491, 13), "y", ["flag"]).rules == (Rule.THRESHOLD, Rule.LEVERAGE)
    assert ols(_flagged(500, 9, 12), "y", ["flag"], SDCPolicy(min_count=9)).outcome \
        is Outcome.RELEASED


def test_a_record_far_out_on_a_continuous_regressor_has_leverage() -> None:
    # The fit passes (nearly) through a record alone at the far end of x.
    df = _flagged(1000, 0, 14).assign(a=lambda f: f.a.where(f.index != 5, 400.0))
    assert ols(df, "y", ["a"]).rules == (Rule.LEVERAGE,)


def test_leverage_catches_strata_no_single_column_shows() -> None:
    # Two continuous regressors that move together, but for one record off their line:
    # neither column is rare on its own (every value distinct, none far out), yet that
    # record alone determines the fitted direction across the line.
    rng = np.random.default_rng(15)
    a = rng.normal(size=1000)
    b = a + rng.normal(scale=0.01, size=1000)
    b[5] = a[5] + 1.0
    df = pd.DataFrame({"y": rng.normal(size=1000), "a": a, "b": b})
    assert ols(df, "y", ["a", "b"]).rules == (Rule.LEVERAGE,)
    assert ols(df, "y", ["a"]).outcome is Outcome.RELEASED
    # A three-level code as x and x²: the two records at level 2 get their own fitted
    # value, their mean (leverage); the code's level of two is also a short part of its
    # values (threshold: its sums beside its counts give them, with x alone too).
    code = np.array([2.0, 2.0] + [0.0, 1.0] * 499)
    df = pd.DataFrame({"y": rng.normal(size=1000), "x": code, "x2": code ** 2})
    assert ols(df, "y", ["x", "x2"]).rules == (Rule.THRESHOLD, Rule.LEVERAGE)
    assert ols(df, "y", ["x"]).rules == (Rule.THRESHOLD,)


def test_ols_input_checks() -> None:
    df = _frame(50, 6).assign(s="x", const=1.0)
    for y, xs in (("y", []), ("y", "a"), ("y", ["y"]), ("y", ["s"]), ("y", ["nope"]),
                  ("y", ["a", "a"]), ("y", ["const"])):
        with pytest.raises(InvalidInput):
            ols(df, y, xs)


def _table(counts: list[list[int]]) -> pd.DataFrame:
    rows = [(f"r{i}", f"c{j}") for i, row in enumerate(counts) for j, n in enumerate(row)
            for _ in range(n)]
    return pd.DataFrame(rows, columns=["a", "b"])


def test_chi_square_of_a_textbook_two_by_two() -> None:
    # Expected 25 everywhere, (5^2 / 25) * 4 = 4; with 1 dof p = erfc(sqrt(2)).
    r = chi_square_test(_table([[20, 30], [30, 20]]), ["a", "b"])
    assert r.outcome is Outcome.RELEASED and r.values is not None
    assert r.values["statistic"] == pytest.approx(4.0, rel=1e-12)
    assert r.values["dof"] == 1
    assert r.values["p_value"] == pytest.approx(math.erfc(math.sqrt(2.0)), rel=1e-10)


def test_chi_square_with_two_dof_matches_the_closed_form() -> None:
    obs = np.array([[30, 45, 25], [40, 20, 40]], dtype=float)
    exp = np.outer(obs.sum(1), obs.sum(0)) / obs.sum()
    stat = float(((obs - exp) ** 2 / exp).sum())
    r = chi_square_test(_table(obs.astype(int).tolist()), ["a", "b"])
    assert r.values is not None
    assert r.values["statistic"] == pytest.approx(stat, rel=1e-12)
    assert r.values["dof"] == 2
    assert r.values["p_value"] == pytest.approx(math.exp(-stat / 2), rel=1e-10)


def test_chi_square_is_withheld_when_the_table_would_be_suppressed() -> None:
    r = chi_square_test(_table([[20, 30], [3, 20]]), ["a", "b"])
    assert r.outcome is Outcome.WITHHELD and r.values is None
    assert r.rules == (Rule.THRESHOLD, Rule.SUPPRESSED_INPUT)


def test_chi_square_with_sparse_expected_counts_is_flagged() -> None:
    r = chi_square_test(_table([[10, 10], [10, 970]]), ["a", "b"])
    assert r.outcome is Outcome.REVIEW and r.rules == (Rule.SPARSE_EXPECTED,)
    assert r.values is not None


def test_chi_square_needs_two_dimensions() -> None:
    with pytest.raises(InvalidInput):
        chi_square_test(_table([[20, 30], [30, 20]]), ["a"])
    with pytest.raises(InvalidInput):
        chi_square_test(_table([[20, 30]]), ["a", "b"])


def test_within_group_variance_matches_pandas() -> None:
    rng = np.random.default_rng(7)
    df = pd.DataFrame({"g": rng.choice(list("abcd"), 800), "v": rng.normal(50, 10, 800)})
    df.loc[df.g == "b", "v"] += 3
    r = within_group_variance(df, ["g"], "v")
    assert r.outcome is Outcome.RELEASED and r.values is not None
    grp = df.groupby("g")["v"]
    n, g = len(df), grp.ngroups
    pooled = float(((grp.count() - 1) * grp.var()).sum() / (n - g))
    between = float((grp.count() * (grp.mean() - df.v.mean()) ** 2).sum() / (g - 1))
    assert r.values["within_variance"] == pytest.approx(pooled, rel=1e-10)
    assert r.values["between_variance"] == pytest.approx(between, rel=1e-10)
    assert r.values["f"] == pytest.approx(between / pooled, rel=1e-10)
    assert r.values["p_value"] == pytest.approx(f_sf(between / pooled, g - 1, n - g))
    assert (r.values["dof_within"], r.values["dof_between"]) == (n - g, g - 1)


def test_within_group_variance_of_a_textbook_one_way_anova() -> None:
    # Means 2, 5, 8; SS_within 6 on 6 dof, SS_between 54 on 2: F = 27 and, for 2
    # numerator dof, P(F > f) = (1 + 2 f / d2) ** (-d2 / 2) = 10 ** -3.
    df = pd.DataFrame({"g": list("aaabbbccc"), "v": [1, 2, 3, 4, 5, 6, 7, 8, 9]})
    # min_count 1: each group is three values held by one record each, a partition by
    # value whose parts are short cells at any higher threshold.
    r = within_group_variance(df, ["g"], "v", SDCPolicy(min_count=1, min_dof=6))
    assert r.values is not None
    assert r.values["within_variance"] == pytest.approx(1.0)
    assert r.values["between_variance"] == pytest.approx(27.0)
    assert r.values["f"] == pytest.approx(27.0)
    assert r.values["p_value"] == pytest.approx(1e-3, rel=1e-9)


def test_within_group_variance_is_withheld_for_small_groups_low_dof_or_dominance() -> None:
    rng = np.random.default_rng(8)
    df = pd.DataFrame({"g": ["a"] * 40 + ["b"] * 5, "v": rng.normal(0, 1, 45)})
    assert within_group_variance(df, ["g"], "v").rules == (Rule.THRESHOLD,)
    tiny = pd.DataFrame({"g": ["a"] * 10, "v": rng.normal(0, 1, 10)})
    assert within_group_variance(tiny, ["g"], "v").rules == (Rule.RESIDUAL_DOF,)
    outlier = pd.DataFrame({"g": ["a"] * 30 + ["b"] * 30,
                            "v": [1000.0] + [0.0, 1.0] * 14 + [0.5] + [0.0, 1.0] * 15})
    r = within_group_variance(outlier, ["g"], "v")
    assert r.outcome is Outcome.WITHHELD and Rule.DOMINANCE in r.rules


def test_within_group_variance_flags_groups_of_identical_values() -> None:
    df = pd.DataFrame({"g": ["a"] * 20 + ["b"] * 20, "v": [3.0] * 20 + [5.0] * 20})
    r = within_group_variance(df, ["g"], "v")
    assert r.outcome is Outcome.REVIEW and r.rules == (Rule.CLASS_DISCLOSURE,)
