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

With ``dp`` every round's sums arrive noised (each provider's Laplace noise, scaled by
``compute/glmdp.py``) and each round is charged its epsilon. The fit then starts from the
spec's public coefficients (zeros unless given), treats the noised X'WX as what it is: a
symmetric matrix that may not be positive definite, projected onto the positive-definite
cone before solving; it stops when the step falls below ``tol`` or after ``max_rounds``
rounds (then reporting ``converged: false``: the rounds are paid for) and refuses cleanly a
fit that the noise drove out of the region where a round's sensitivity is bounded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from compute.errors import InvalidInput, PolicyViolation
from compute.glmdp import row_sensitivities
from compute.layout import Sums
from compute.spec import GLMSpec, JointSpec

DEFAULT_MAX_ROUNDS = 25
# On the Newton step: IRLS converges quadratically, so the coefficients returned after a
# step of relative size s are within about s^2 of the optimum (1e-16 here); the standard
# errors, taken at the start of that step, within about s.
DEFAULT_TOL = 1e-8
Z_975 = NormalDist().inv_cdf(0.975)
# Eigenvalues of a noised X'WX below this fraction of the largest are raised to it: the
# projection onto the positive-definite cone keeps the solve well conditioned.
PD_FLOOR = 1e-6
MAX_COEF = 1e6  # compute/spec.py's range for glm.beta: a next round could not carry more


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
    would be silently a model of fewer providers. Under DP the suppressed-cell count is
    noised like every entry, so it cannot tell a partial round apart; providers still
    withdraw parts below the minimum count.
    """
    assert spec.glm is not None
    k = 1 + len(spec.glm.x)
    n = sums.counts["glm.n"][0]
    noised = spec.dp_epsilon is not None
    if (sums.counts["disclosure.suppressed"][0] and not noised) or n <= 0:
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
    if noised:
        xwx = nearest_positive_definite(xwx)
    try:
        cov = np.linalg.inv(xwx)
    except np.linalg.LinAlgError as e:
        raise PolicyViolation("the regressors are collinear: no unique fit") from e
    beta = np.linalg.solve(xwx, xwz)
    return GLMRound(n, tuple(float(b) for b in beta),
                    tuple(tuple(float(v) for v in row) for row in cov),
                    float(sums.reals["glm.deviance"][0]), float(sums.reals["glm.loglik"][0]))


def nearest_positive_definite(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The symmetric matrix with ``a``'s eigenvectors and its eigenvalues raised to at least
    ``PD_FLOOR`` times the largest (post-processing of the noised sums: no privacy cost).
    Refuses when no eigenvalue is positive: the noise swamped the round's sums."""
    vals, vecs = np.linalg.eigh((a + a.T) / 2)
    top = float(vals.max())
    if not top > 0 or not np.all(np.isfinite(vals)):
        raise PolicyViolation("the noised X'WX has no positive eigenvalue: the noise swamps "
                              "this round's sums; fit with a larger epsilon per round, wider "
                              "data (more records) or narrower bounds")
    out: np.ndarray[Any, Any] = (vecs * np.maximum(vals, PD_FLOOR * top)) @ vecs.T
    return out


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
    """The spec of the round evaluated at ``beta`` (None: the starting round); a DP fit's
    rounds carry its per-round epsilon and clipping bounds."""
    assert base.glm is not None
    return JointSpec(statistics=base.statistics, dp_epsilon=base.dp_epsilon,
                     dp_bounds=base.dp_bounds,
                     dp_max_records_per_person=base.dp_max_records_per_person, glm=GLMSpec(
                         base.glm.family, base.glm.y, base.glm.x, beta, base.glm.alpha))


def round_request(spec: JointSpec) -> dict[str, Any]:
    """The spec a round submits (``POST /joint-jobs``), as the requester writes it."""
    assert spec.glm is not None
    out: dict[str, Any] = {"statistics": ["glm"], "glm": spec.glm.to_json()}
    if spec.dp_epsilon is not None:
        out["dp"] = {"epsilon": spec.dp_epsilon,
                     "bounds": {c: list(b) for c, b in spec.dp_bounds.items()}}
        if spec.dp_max_records_per_person != 1:
            out["dp"]["max_records_per_person"] = spec.dp_max_records_per_person
    return out


def model_request(model: Mapping[str, Any], epsilon: float | None = None,
                  bounds: Mapping[str, Sequence[float]] | None = None) -> dict[str, Any]:
    """The base spec of a fit: a DP fit starts from public coefficients (zeros unless the
    model gives ``beta``), since a first round's data-derived starting means have no
    public sensitivity bound."""
    if epsilon is None:
        return {"statistics": ["glm"], "glm": dict(model)}
    x = model.get("x")
    start = model.get("beta")
    if start is None and isinstance(x, list):
        start = [0.0] * (1 + len(x))
    return {"statistics": ["glm"], "glm": {**model, "beta": start},
            "dp": {"epsilon": epsilon, "bounds": {c: list(b) for c, b in (bounds or {}).items()}}}


def _dp_summary(base: JointSpec, rounds: int, converged: bool) -> dict[str, Any]:
    eps = float(base.dp_epsilon or 0.0)
    return {"converged": converged, "dp": {
        "noised": True, "epsilon_per_round": eps, "rounds": rounds,
        "epsilon_spent": eps * rounds,
        "bounds": {c: list(b) for c, b in base.dp_bounds.items()},
        "note": "every round's sums were noised (Laplace) and charged to the permit's "
                "budget; standard errors, z, p and intervals do not account for the noise"}}


def fit_glm(base: JointSpec, run_round: Callable[[JointSpec], Sums], *,
            max_rounds: int = DEFAULT_MAX_ROUNDS, tol: float = DEFAULT_TOL) -> dict[str, Any]:
    """Iterate rounds until the coefficients stop moving (relative step below ``tol``).

    ``run_round`` runs one joint round and returns its decrypted pooled sums (the SDK
    submits a joint job; tests play every party in one process). The fit starts from the
    spec's ``beta`` when it gives one. With ``dp`` the result says so (``dp``: epsilon per
    round, rounds, total spent) and a fit still moving at ``max_rounds`` is returned with
    ``converged: false`` instead of raising: its rounds' budget is already spent.
    """
    if base.glm is None:
        raise PolicyViolation("the spec asks for no glm")
    noised = base.dp_epsilon is not None
    beta: tuple[float, ...] | None = base.glm.beta
    rnd: GLMRound | None = None
    for r in range(1, max_rounds + 1):
        spec = round_spec(base, beta)
        rnd = irls_round(spec, run_round(spec))
        if noised:
            _check_next(base, rnd.beta, r)
        if beta is not None:
            step = max(abs(a - b) for a, b in zip(rnd.beta, beta, strict=True))
            if step <= tol * (1.0 + max(abs(b) for b in beta)):
                return {**glm_result(base.glm, rnd, r),
                        **(_dp_summary(base, r, True) if noised else {})}
        beta = rnd.beta
    if noised and rnd is not None:
        return {**glm_result(base.glm, rnd, max_rounds), **_dp_summary(base, max_rounds, False)}
    raise RoundCapReached(f"round cap reached: the fit did not converge within {max_rounds} "
                          "rounds")


def _check_next(base: JointSpec, beta: tuple[float, ...], rounds: int) -> None:
    """A noised update must stay where a next round is bounded, else stop before spending."""
    spent = f"after {rounds} noised round(s), epsilon {(base.dp_epsilon or 0.0) * rounds:g} spent"
    if not all(math.isfinite(b) and abs(b) <= MAX_COEF for b in beta):
        raise PolicyViolation(f"the noised fit diverged ({spent}): fit with a larger epsilon "
                              "per round or narrower bounds")
    assert base.glm is not None
    nxt = GLMSpec(base.glm.family, base.glm.y, base.glm.x, beta, base.glm.alpha)
    try:
        row_sensitivities(nxt, base.dp_bounds)
    except InvalidInput as e:
        raise PolicyViolation(f"the noised fit left the coefficients at which a round's "
                              f"sensitivity is bounded ({spent}): {e}") from e
