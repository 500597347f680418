"""Joint generalized linear models by iteratively reweighted least squares (requester side).

One IRLS iteration is one joint round: every provider computes, at the round's public
coefficients, its X'WX, X'Wz, deviance and log-likelihood over its complete cases
(``compute/local_aggregate.py``), checks disclosure, masks, encrypts; the controller adds;
the requester decrypts the pooled sums and solves ``(X'WX) beta = X'Wz`` for the next
coefficients (Nelder & Wedderburn 1972; McCullagh & Nelder, *Generalized Linear Models*,
2nd ed., section 2.5). Pooled sums are exact (docs/joint-statistics.md), so the fit is the
pooled-data fit: the same iterations statsmodels runs on the pooled table.

At convergence the standard errors are ``sqrt(diag((X'WX)^-1))`` with the dispersion fixed
at 1 (Poisson, binomial, negative binomial with known alpha), z = coef / se, two-sided
normal p-values and 95 % Wald intervals, as statsmodels' GLM reports them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from compute.errors import PolicyViolation
from compute.layout import Sums
from compute.spec import GLMSpec, JointSpec

DEFAULT_MAX_ROUNDS = 25
# On the Newton step: IRLS converges quadratically, so the coefficients returned after a
# step of relative size s are within about s^2 of the optimum (1e-16 here); the standard
# errors, taken at the start of that step, within about s.
DEFAULT_TOL = 1e-8
Z_975 = NormalDist().inv_cdf(0.975)


class RoundCapReached(PolicyViolation):
    """The fit needed more IRLS rounds than allowed (HTTP 409)."""


class BelowMinimumCount(PolicyViolation):
    """A round's release was suppressed by the disclosure check (HTTP 409)."""


@dataclass(frozen=True)
class GLMRound:
    """What one round's pooled sums give: the next coefficients and the round's fit."""

    n: int
    beta: tuple[float, ...]  # the weighted least-squares solution: the next coefficients
    cov: tuple[tuple[float, ...], ...]  # (X'WX)^-1, the dispersion being 1
    deviance: float  # at the round's own coefficients
    loglik: float

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "beta": list(self.beta), "deviance": self.deviance,
                "loglik": self.loglik}


def irls_round(spec: JointSpec, sums: Sums) -> GLMRound:
    """Solve one round's pooled weighted least squares.

    Refuses a round whose release is partial: a provider with fewer complete cases than
    the minimum count withdraws them (the disclosure check), and a model fitted without it
    would be silently a model of fewer providers.
    """
    assert spec.glm is not None
    k = 1 + len(spec.glm.x)
    n = sums.counts["glm.n"][0]
    if sums.counts["disclosure.suppressed"][0] or n == 0:
        raise BelowMinimumCount("a provider has fewer complete cases than the minimum count "
                                "for this model: the round's release was suppressed, and no "
                                "model is fitted")
    if n <= k:
        raise BelowMinimumCount("fewer complete cases than coefficients: no model is fitted")
    tri = sums.reals["glm.xwx"]
    xwx = np.zeros((k, k))
    iu = np.triu_indices(k)
    xwx[iu] = [float(v) for v in tri]
    xwx = xwx + np.triu(xwx, 1).T
    xwz = np.array([float(v) for v in sums.reals["glm.xwz"]])
    try:
        cov = np.linalg.inv(xwx)
    except np.linalg.LinAlgError as e:
        raise PolicyViolation("the regressors are collinear: no unique fit") from e
    beta = np.linalg.solve(xwx, xwz)
    return GLMRound(n, tuple(float(b) for b in beta),
                    tuple(tuple(float(v) for v in row) for row in cov),
                    float(sums.reals["glm.deviance"][0]), float(sums.reals["glm.loglik"][0]))


def glm_result(glm: GLMSpec, last: GLMRound, rounds: int) -> dict[str, Any]:
    """Coefficients with standard errors, z, p and 95 % intervals; deviance and AIC."""
    k = 1 + len(glm.x)
    coefficients = {}
    for i, name in enumerate(["intercept", *glm.x]):
        coef = last.beta[i]
        se = math.sqrt(last.cov[i][i]) if last.cov[i][i] > 0 else math.nan
        z = coef / se if se > 0 else math.nan
        coefficients[name] = {
            "coef": coef, "std_err": se, "z": z,
            "p_value": math.erfc(abs(z) / math.sqrt(2)) if math.isfinite(z) else math.nan,
            "ci_low": coef - Z_975 * se, "ci_high": coef + Z_975 * se}
    return {"family": glm.family, "link": "logit" if glm.family == "binomial" else "log",
            "y": glm.y, "x": list(glm.x), "n": last.n, "df_resid": last.n - k,
            "coefficients": coefficients, "deviance": last.deviance,
            "loglik": last.loglik, "aic": -2 * last.loglik + 2 * k, "rounds": rounds,
            **({"alpha": glm.alpha} if glm.family == "negative_binomial" else {})}


def round_spec(base: JointSpec, beta: tuple[float, ...] | None) -> JointSpec:
    """The spec of the round evaluated at ``beta`` (None: the starting round)."""
    assert base.glm is not None
    return JointSpec(statistics=base.statistics, glm=GLMSpec(
        base.glm.family, base.glm.y, base.glm.x, beta, base.glm.alpha))


def fit_glm(base: JointSpec, run_round: Callable[[JointSpec], Sums], *,
            max_rounds: int = DEFAULT_MAX_ROUNDS, tol: float = DEFAULT_TOL) -> dict[str, Any]:
    """Iterate rounds until the coefficients stop moving (relative step below ``tol``).

    ``run_round`` runs one joint round and returns its decrypted pooled sums (the SDK
    submits a joint job; tests play every party in one process).
    """
    if base.glm is None:
        raise PolicyViolation("the spec asks for no glm")
    beta: tuple[float, ...] | None = None
    for r in range(1, max_rounds + 1):
        rnd = irls_round(round_spec(base, beta), run_round(round_spec(base, beta)))
        if beta is not None:
            step = max(abs(a - b) for a, b in zip(rnd.beta, beta, strict=True))
            if step <= tol * (1.0 + max(abs(b) for b in beta)):
                return glm_result(base.glm, rnd, r)
        beta = rnd.beta
    raise RoundCapReached(f"round cap reached: the fit did not converge within {max_rounds} "
                          "rounds")
