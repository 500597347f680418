"""Joint GLMs by IRLS against statsmodels on the pooled data (RAND HIE, shipped by
statsmodels), the OLS inference, grouped variances, and the refusals."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from compute.errors import TooFewProviders
from compute.glm import BelowMinimumCount, RoundCapReached, fit_glm
from compute.layout import Sums
from compute.protocol import RequesterKeys
from compute.spec import JointSpec, parse_spec
from tests.compute.conftest import FULL_SPEC, SCHEMA
from tests.compute.harness import joint_sums, run_joint

REGRESSORS = ["lncoins", "idp", "lpi", "fmde", "physlm", "disea", "hlthg", "hlthf", "hlthp"]
REL = 1e-6


@pytest.fixture(scope="module")
def randhie() -> pd.DataFrame:
    data: pd.DataFrame = sm.datasets.randhie.load_pandas().data
    data["visited"] = (data["mdvis"] > 0).astype(float)
    return banded(data, ["mdvis", *REGRESSORS])


def banded(data: pd.DataFrame, columns: list[str], k: int = 10) -> pd.DataFrame:
    """The data as its providers would publish it for joint models (R6-1e): a model
    column whose values repeat (``partition_bound``) may hold no value that 1..k-1 of a
    provider's records hold. Each such value (the long tail of ``mdvis``, the rare
    levels of ``physlm``, ``disea``, ``fmde``, ``lpi``) becomes the nearest value every
    provider holds k times or more: a top-code for a tail, a merge into a neighbouring
    band inside. The reference fits run on the same banded data."""
    parts = providers(data)
    out = data.copy()
    for c in columns:
        counts = pd.concat([f[c].value_counts() for f in parts.values()], axis=1).fillna(0)
        safe = np.sort(counts.index[(counts >= k).all(axis=1)].to_numpy(dtype=float))
        x = out[c].to_numpy(dtype=float)
        at = np.clip(np.searchsorted(safe, x), 1, len(safe) - 1)
        below, above = safe[at - 1], safe[at]
        out[c] = np.where(np.isin(x, safe), x,
                          np.where(x - below <= above - x, below, above))
    return out


def providers(data: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Split unevenly over 4 providers (10 %, 20 %, 30 %, 40 %), shuffled first."""
    shuffled = data.sample(frac=1.0, random_state=7).reset_index(drop=True)
    cuts = np.cumsum([0, 0.1, 0.2, 0.3, 0.4]) * len(shuffled)
    return {f"p{i}": shuffled.iloc[int(a):int(b)] for i, (a, b) in
            enumerate(itertools.pairwise(cuts))}


def runner(frames: dict[str, pd.DataFrame], keys: RequesterKeys, k: int = 10) -> Any:
    def run_round(spec: JointSpec) -> Sums:
        return joint_sums(spec, frames, min_cell_count=k, keys=keys)[0]
    return run_round


def schema(data: pd.DataFrame) -> dict[str, str]:
    return {c: "number" for c in data.columns}


def close(a: float, b: float) -> bool:
    return abs(a - b) <= REL * max(abs(b), 1e-12)


def check(fit: dict[str, Any], ref: Any) -> None:
    names = ["intercept", *REGRESSORS]
    for i, name in enumerate(names):
        got = fit["coefficients"][name]
        assert close(got["coef"], ref.params.iloc[i]), (name, got["coef"], ref.params.iloc[i])
        assert close(got["std_err"], ref.bse.iloc[i]), (name, got["std_err"], ref.bse.iloc[i])
        assert abs(got["z"] - ref.tvalues.iloc[i]) <= REL * max(abs(ref.tvalues.iloc[i]), 1)
        assert abs(got["p_value"] - ref.pvalues.iloc[i]) <= 1e-9 + REL * ref.pvalues.iloc[i]
        lo, hi = ref.conf_int().iloc[i]
        assert close(got["ci_low"], lo) and close(got["ci_high"], hi)
    assert close(fit["deviance"], ref.deviance) and close(fit["aic"], ref.aic)
    assert fit["n"] == ref.nobs


def pooled_fit(data: pd.DataFrame, y: str, family: Any) -> Any:
    x = sm.add_constant(data[REGRESSORS])
    return sm.GLM(data[y], x, family=family).fit(tol=1e-12)


def spec_for(data: pd.DataFrame, family: str, y: str, **extra: Any) -> JointSpec:
    return parse_spec({"statistics": ["glm"], "glm": {"family": family, "y": y,
                                                      "x": REGRESSORS, **extra}}, schema(data))


def test_poisson_of_mdvis_matches_statsmodels(randhie: pd.DataFrame,
                                              keys: RequesterKeys) -> None:
    fit = fit_glm(spec_for(randhie, "poisson", "mdvis"), runner(providers(randhie), keys))
    check(fit, pooled_fit(randhie, "mdvis", sm.families.Poisson()))
    assert 3 <= fit["rounds"] <= 12


def test_logistic_matches_statsmodels(randhie: pd.DataFrame, keys: RequesterKeys) -> None:
    fit = fit_glm(spec_for(randhie, "binomial", "visited"), runner(providers(randhie), keys))
    check(fit, pooled_fit(randhie, "visited", sm.families.Binomial()))


def test_negative_binomial_matches_statsmodels(randhie: pd.DataFrame,
                                               keys: RequesterKeys) -> None:
    fit = fit_glm(spec_for(randhie, "negative_binomial", "mdvis", alpha=0.8),
                  runner(providers(randhie), keys))
    check(fit, pooled_fit(randhie, "mdvis", sm.families.NegativeBinomial(alpha=0.8)))


def test_round_cap_and_small_provider_are_refused(randhie: pd.DataFrame,
                                                  keys: RequesterKeys) -> None:
    spec = spec_for(randhie, "poisson", "mdvis")
    with pytest.raises(RoundCapReached, match="round cap reached"):
        fit_glm(spec, runner(providers(randhie), keys), max_rounds=2)
    frames = providers(randhie)
    frames["p0"] = frames["p0"].iloc[:5]  # fewer complete cases than k = 10
    with pytest.raises(BelowMinimumCount, match="minimum count"):
        fit_glm(spec, runner(frames, keys))
    # Fewer than three providers: the controller does not combine (a joint round needs all).
    two = dict(list(providers(randhie).items())[:2])
    with pytest.raises(TooFewProviders):
        fit_glm(spec, runner(two, keys))


def test_glm_spec_rules(randhie: pd.DataFrame) -> None:
    from compute.errors import InvalidInput

    for bad, rule in (({"family": "gamma", "y": "mdvis", "x": ["idp"]}, "unsupported"),
                      ({"family": "poisson", "y": "mdvis", "x": ["mdvis"]}, "duplicate"),
                      ({"family": "poisson", "y": "mdvis", "x": ["idp"], "beta": [1.0]},
                       "too_short"),
                      ({"family": "poisson", "y": "mdvis", "x": ["idp"], "link": "x"},
                       "unknown_field")):
        with pytest.raises(InvalidInput) as err:
            parse_spec({"statistics": ["glm"], "glm": bad}, schema(randhie))
        assert err.value.rule == rule
    with pytest.raises(InvalidInput) as err:
        parse_spec({"statistics": ["glm"], "glm": {"family": "poisson", "y": "mdvis",
                                                   "x": ["idp"]},
                    "dp": {"epsilon": 1.0}}, schema(randhie))
    # A DP model round clips y and every regressor: without bounds it is refused.
    assert (err.value.field, err.value.rule) == ("dp.bounds.mdvis", "required")


def test_ols_inference_matches_statsmodels(hospitals: dict[str, pd.DataFrame]) -> None:
    spec = parse_spec(FULL_SPEC, SCHEMA)
    res = run_joint(spec, hospitals, min_cell_count=1, min_providers=1)
    pooled = pd.concat(hospitals.values())
    cc = pooled[["cost", "age", "los"]].dropna()
    ref = sm.OLS(cc["cost"], sm.add_constant(cc[["age", "los"]])).fit()
    assert res.ols is not None
    for i, name in enumerate(["intercept", "age", "los"]):
        got = res.ols["coefficients"][name]
        assert close(got["std_err"], ref.bse.iloc[i]) and close(got["t"], ref.tvalues.iloc[i])
        assert abs(got["p_value"] - ref.pvalues.iloc[i]) <= 1e-12 + REL * ref.pvalues.iloc[i]
        lo, hi = ref.conf_int().iloc[i]
        assert close(got["ci_low"], lo) and close(got["ci_high"], hi)
    assert close(res.ols["adj_r2"], ref.rsquared_adj)


def test_within_group_variance(hospitals: dict[str, pd.DataFrame]) -> None:
    spec = parse_spec(FULL_SPEC, SCHEMA)
    res = run_joint(spec, hospitals, min_cell_count=1, min_providers=1)
    pooled = pd.concat(hospitals.values())
    assert res.grouped is not None
    age_bin = pd.cut(pooled["age"], [0, 18, 40, 65, 120], right=False)
    ref = pooled.groupby([age_bin, "diagnosis"], observed=False)["cost"].var()
    checked = 0
    for cell in res.grouped["cells"]:
        if cell["key"] == ["other"] or cell["cost"]["n"] < 2:
            continue
        band = next(iv for iv in ref.index.levels[0]
                    if f"[{iv.left:g}, {iv.right:g})" == cell["key"][0])
        want = ref.loc[(band, cell["key"][1])]
        assert abs(cell["cost"]["variance"] - want) <= 1e-9 * want
        checked += 1
    assert checked >= 12
