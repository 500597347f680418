"""Differentially private GLM rounds: the per-record sensitivity bound holds on extreme
records, a noised fit recovers a known model, the budget caps the rounds, and the spec
rules refuse what has no bound."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd
import pytest

from compute.dp import PrivacyBudget, sensitivities
from compute.errors import BudgetExceeded, InvalidInput, PolicyViolation
from compute.glm import fit_glm, model_request, nearest_positive_definite, round_request
from compute.glmdp import row_sensitivities
from compute.layout import Sums, build_layout
from compute.local_aggregate import local_aggregate
from compute.protocol import RequesterKeys
from compute.spec import JointSpec, parse_spec
from tests.compute.harness import joint_sums

SCHEMA = {"y": "number", "x1": "number", "x2": "number"}
X_BOUNDS = {"x1": [-1.0, 1.0], "x2": [-2.0, 3.0]}
Y_BOUNDS = {"binomial": [0.0, 1.0], "poisson": [0.0, 20.0], "negative_binomial": [0.0, 20.0]}
TRUE_BETA = (0.5, 1.0, -1.0)
FIT_BOUNDS = {"x1": [-1.0, 1.0], "x2": [-1.0, 1.0]}  # the known model's regressors' range
ENTRIES = ("glm.n", "glm.missing", "glm.xwx", "glm.xwz", "glm.deviance", "glm.loglik")


def dp_spec(family: str, beta: list[float] | None = None, epsilon: float = 1.0,
            x_bounds: dict[str, list[float]] = X_BOUNDS, **model: Any) -> JointSpec:
    bounds = {"y": Y_BOUNDS[family], **x_bounds}
    return parse_spec(model_request({"family": family, "y": "y", "x": ["x1", "x2"],
                                     "beta": beta, **model}, epsilon, bounds), SCHEMA)


def extreme_rows(rng: np.random.Generator, family: str, n: int) -> pd.DataFrame:
    """Random rows mixing values at, inside and far outside the bounds, and missing ones."""
    def column(lo: float, hi: float) -> np.ndarray[Any, Any]:
        picks = np.array([lo, hi, 0.0, lo - 50.0, hi + 50.0, np.nan])
        inside = rng.uniform(lo, hi, n)
        return np.where(rng.random(n) < 0.5, picks[rng.integers(0, len(picks), n)], inside)
    lo, hi = Y_BOUNDS[family]
    y = column(lo, hi)
    if family != "binomial":
        y = np.where(np.isnan(y), y, np.round(y))
    return pd.DataFrame({"y": y, "x1": column(*X_BOUNDS["x1"]), "x2": column(*X_BOUNDS["x2"])})


def entry_l1(a: dict[str, Any], b: dict[str, Any], name: str) -> float:
    fam = "counts" if name in a["counts"] else "reals"
    return float(np.abs(np.subtract(a[fam][name], b[fam][name], dtype=float)).sum())


@pytest.mark.parametrize("family", ["binomial", "poisson", "negative_binomial"])
def test_one_record_moves_each_sum_by_at_most_its_sensitivity(family: str) -> None:
    rng = np.random.default_rng(20261130)
    worst = dict.fromkeys(ENTRIES, 0.0)
    for trial in range(25):
        beta = [float(b) for b in rng.uniform(-0.6, 0.6, 3)]
        spec = dp_spec(family, beta, alpha=float(rng.choice([0.2, 1.0, 5.0])))
        assert spec.glm is not None
        bound = row_sensitivities(spec.glm, spec.dp_bounds)
        normalized = spec.to_json()
        base = extreme_rows(rng, family, 30)
        without = local_aggregate(normalized, base)
        for _ in range(25):  # neighbours: one more record, extreme or not
            extra = extreme_rows(rng, family, 1)
            with_one = local_aggregate(normalized, pd.concat([base, extra], ignore_index=True))
            for name in ENTRIES:
                moved = entry_l1(with_one, without, name)
                assert moved <= bound[name] * (1 + 1e-9), (family, trial, name, moved)
                worst[name] = max(worst[name], moved / bound[name])
    # The bounds are not vacuous: extreme records come within a small factor of them.
    assert worst["glm.xwx"] > 0.3 and worst["glm.xwz"] > 0.3


def test_noise_sensitivity_is_k_times_the_record_bound() -> None:
    spec = dp_spec("poisson", [0.1, 0.2, -0.3])
    assert spec.glm is not None
    row = row_sensitivities(spec.glm, spec.dp_bounds)
    sens = sensitivities(spec, build_layout(spec), min_cell_count=7)
    for name in ENTRIES:
        assert sens[name] == pytest.approx(7 * row[name])
    # The same public inputs give the same figure; the data never enter.
    assert row_sensitivities(spec.glm, spec.dp_bounds) == row


def known_logistic(seed: int, rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.uniform(-1, 1, rows), rng.uniform(-1, 1, rows)
    eta = TRUE_BETA[0] + TRUE_BETA[1] * x1 + TRUE_BETA[2] * x2
    y = (rng.random(rows) < 1 / (1 + np.exp(-eta))).astype(float)
    return pd.DataFrame({"y": y, "x1": x1, "x2": x2})


@pytest.fixture(scope="module")
def logistic_providers() -> dict[str, pd.DataFrame]:
    return {f"p{i}": known_logistic(100 + i, 40_000) for i in range(3)}


def dp_runner(frames: dict[str, pd.DataFrame], keys: RequesterKeys,
              budget: PrivacyBudget, seen: list[dict[str, Any]]) -> Any:
    def run_round(spec: JointSpec) -> Sums:
        # What a round submits parses back to the round's spec (as the controller sees it).
        assert parse_spec(round_request(spec), SCHEMA) == spec
        sums, aggregate = joint_sums(spec, frames, min_cell_count=10, keys=keys,
                                     budgets=[budget])
        seen.append(aggregate["dp"])
        return sums
    return run_round


def test_noised_logistic_fit_recovers_the_model(logistic_providers: dict[str, pd.DataFrame],
                                                keys: RequesterKeys) -> None:
    eps, rounds = 8.0, 5
    budget = PrivacyBudget("permit-1", eps * rounds)
    seen: list[dict[str, Any]] = []
    base = dp_spec("binomial", epsilon=eps, x_bounds=FIT_BOUNDS)
    fit = fit_glm(base, dp_runner(logistic_providers, keys, budget, seen),
                  max_rounds=rounds, tol=1e-3)
    # The last round's noise moves each coefficient by about 0.01 here (X'Wz's Laplace
    # scale ~50 against ~8,000 of weight per regressor): 0.15 is over ten times that.
    for name, want in zip(["intercept", "x1", "x2"], TRUE_BETA, strict=True):
        assert abs(fit["coefficients"][name]["coef"] - want) < 0.15, (name, fit)
    assert fit["dp"]["noised"] and fit["dp"]["epsilon_per_round"] == eps
    assert fit["dp"]["epsilon_spent"] == pytest.approx(eps * fit["rounds"])
    assert budget.spent == pytest.approx(eps * fit["rounds"]) and "converged" in fit
    # Every round's release records its epsilon split and the GLM sensitivities.
    assert len(seen) == fit["rounds"]
    for block in seen:
        assert block["epsilon"] == eps and block["epsilon_per_entry"] == eps / 8
        # k = 10 times w <= 1/4 times sum_{i<=j} M_i M_j, M = (1, 1, 1): 6.
        assert block["sensitivities"]["glm.xwx"] == pytest.approx(10 * 0.25 * 6)


def test_budget_caps_the_noised_rounds(logistic_providers: dict[str, pd.DataFrame],
                                       keys: RequesterKeys) -> None:
    budget = PrivacyBudget("permit-1", 3.0)
    base = dp_spec("binomial", epsilon=1.0, x_bounds=FIT_BOUNDS)
    with pytest.raises(BudgetExceeded, match=r"remaining budget \(permit-1 has 0 left\)"):
        fit_glm(base, dp_runner(logistic_providers, keys, budget, []), max_rounds=10,
                tol=1e-12)
    assert budget.spent == 3.0 and len(budget.charges) == 3  # the refused round: no charge


def test_dp_model_spec_rules() -> None:
    def rule(raw: dict[str, Any]) -> tuple[str, str]:
        with pytest.raises(InvalidInput) as err:
            parse_spec(raw, SCHEMA)
        return err.value.field, err.value.rule

    model = {"family": "poisson", "y": "y", "x": ["x1", "x2"], "beta": [0.0, 0.0, 0.0]}
    assert rule({"statistics": ["glm"], "glm": model, "dp": {"epsilon": 1.0}}) == (
        "dp.bounds.y", "required")
    assert rule({"statistics": ["glm"], "glm": model, "dp": {
        "epsilon": 1.0, "bounds": {"y": [0, 5], "x1": [0, 1]}}}) == ("dp.bounds.x2", "required")
    full = {"y": [0, 5], **X_BOUNDS}
    assert rule({"statistics": ["glm"], "glm": {**model, "beta": None},
                 "dp": {"epsilon": 1.0, "bounds": full}}) == ("glm.beta", "required")
    assert rule({"statistics": ["glm"], "glm": model,
                 "dp": {"epsilon": 1.0, "bounds": {**full, "y": [-1, 5]}}}) == (
        "dp.bounds.y", "range")
    assert rule({"statistics": ["glm"], "glm": {**model, "family": "binomial"},
                 "dp": {"epsilon": 1.0, "bounds": full}}) == ("dp.bounds.y", "range")
    assert rule({"statistics": ["glm"], "glm": {**model, "beta": [0.0, 400.0, 0.0]},
                 "dp": {"epsilon": 1.0, "bounds": full}}) == ("glm.beta",
                                                            "unbounded_sensitivity")
    ok = parse_spec({"statistics": ["glm"], "glm": model, "dp": {"epsilon": 1.0,
                                                                  "bounds": full}}, SCHEMA)
    assert ok.dp_epsilon == 1.0 and ok.to_json()["dp"]["bounds"]["x2"] == [-2.0, 3.0]


def test_noised_cross_products_are_made_positive_definite() -> None:
    indefinite = np.array([[4.0, 3.0], [3.0, 1.0]])  # eigenvalues 6.6 and -1.6
    fixed = nearest_positive_definite(indefinite)
    assert np.all(np.linalg.eigvalsh(fixed) > 0) and np.allclose(fixed, fixed.T)
    with pytest.raises(PolicyViolation, match="no positive eigenvalue"):
        nearest_positive_definite(-np.eye(2))


def test_a_diverging_noised_fit_stops_before_spending_more() -> None:
    calls: list[JointSpec] = []
    step = [Fraction(900)]

    def swamped(spec: JointSpec) -> Sums:  # sums as a heavy noise draw could leave them
        calls.append(spec)
        tri = [Fraction(1, 1000), Fraction(0), Fraction(0), Fraction(1, 1000), Fraction(0),
               Fraction(1, 1000)]
        return Sums(3, {"rows": [500], "disclosure.suppressed": [2], "glm.n": [500],
                        "glm.missing": [0]},
                    {"glm.xwx": tri, "glm.xwz": [step[0], Fraction(0), Fraction(0)],
                     "glm.deviance": [Fraction(1)], "glm.loglik": [Fraction(-1)]})

    with pytest.raises(PolicyViolation, match=r"sensitivity is bounded \(after 1 noised round"):
        fit_glm(dp_spec("poisson"), swamped, max_rounds=10)
    assert len(calls) == 1
    step[0] = Fraction(10**7)  # past any coefficient a round may carry
    with pytest.raises(PolicyViolation, match=r"diverged \(after 1 noised round"):
        fit_glm(dp_spec("poisson"), swamped, max_rounds=10)
    assert len(calls) == 2
