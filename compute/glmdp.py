"""Sensitivity of one differentially private GLM round, from public values only.

A DP round (``{"statistics": ["glm"], "glm": {...}, "dp": {"epsilon": e, "bounds": ...}}``)
is evaluated at the round's public coefficients ``beta``, and every provider clips ``y`` and
each regressor to the spec's public bounds before its local sums
(``_glm_round`` in ``compute/local_aggregate.py``). This module bounds, per record, how much
one clipped record can change each released entry: the L1 norm of its contribution to that
entry's vector. :func:`compute.dp.sensitivities` multiplies it by the minimum cell count k
(one added record can release a whole provider's part of k records, as for every joint DP
entry) and each provider's Laplace noise is scaled to it (compute/dp.py). Nothing here reads data.

Notation: ``M_0 = 1`` (the intercept) and ``M_j = max(|lo_j|, |hi_j|)`` for regressor j;
``Y = hi_y``; ``E = |b_0| + sum_j |b_j| M_j`` so that ``|eta| = |x'b| <= E`` for every
clipped record; ``U = exp(E)``; ``G(a, b) = max(|lgamma(a)|, |lgamma(b)|, 0.1215)`` bounds
``|lgamma|`` on ``[a, b]`` (lgamma is convex on (0, inf) with minimum -0.12149 at 1.4616).
One record adds ``x_i x_j w`` to ``XᵀWX[i, j]`` (upper triangle), ``x_i w z`` to
``XᵀWz[i]``, its unit deviance and its log-likelihood. So, per record,

    L1(XᵀWX) <= W * sum_{i<=j} M_i M_j        L1(XᵀWz) <= Z * sum_i M_i

with W >= |w|, Z >= |w z| and, per family (canonical links, as the provider computes them):

* binomial (logit; y clipped into [0, 1]): ``mu = 1/(1+exp(-eta))``, ``w = mu(1-mu) <= 1/4``;
  ``w z = w eta + (y - mu)`` with ``|y - mu| <= 1``, so ``Z = E/4 + 1``. The unit deviance
  is a Kullback-Leibler divergence, ``0 <= d <= 2 max(-log mu, -log(1-mu)) <= 2 log(1+U)``;
  the log-likelihood ``y log mu + (1-y) log(1-mu)`` lies in ``[-log(1+U), 0]``.
* poisson (log; y clipped to ``[lo_y, Y]``, ``lo_y >= 0``): ``mu in [1/U, U]``, ``w = mu <= U``;
  ``w z = mu eta + y - mu``, so ``Z = U E + max(Y, U)``. ``0 <= d = 2(y log(y/mu) - y + mu)
  <= 2(max(0, Y log Y) + Y E + U)``; ``|ll| = |y eta - mu - lgamma(y+1)|
  <= Y E + U + G(1, Y+1)``.
* negative_binomial (NB2, log, alpha a fixed; y as poisson): ``w = mu/(1 + a mu)``, increasing
  in mu, so ``W = U/(1 + a U)``; ``w z = w eta + (y - mu)/(1 + a mu)`` and the second term
  is at most ``max(Y, W)`` in magnitude, so ``Z = W E + max(Y, W)``. ``0 <= d
  <= 2(max(0, Y log Y) + Y E + (Y + 1/a) log(1 + a U))``; ``|ll| <= Y log(1 + U/a)
  + log(1 + a U)/a + G(1/a, Y + 1/a) + G(1, Y + 1) + |lgamma(1/a)|``.
* counts ``glm.n`` and ``glm.missing``: 1 (a record is a complete case or missing).

Refused (``InvalidInput``): a round without ``beta`` (the first non-DP round starts from
each provider's own means, which no public bound covers), a column of the model without
bounds, bounds outside the family's range of ``y``, and coefficients so large that a bound
overflows or exceeds :data:`MAX_ROW_SENSITIVITY` (the noise would swamp every sum and
could not be encoded exactly).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from compute.errors import InvalidInput
from compute.spec import GLMSpec

# Past this per-record bound the noise drowns any sum and nears the limb encoding's range
# (compute/layout.py MAX_REAL = 2^70, with k and the epsilon split still to multiply in).
MAX_ROW_SENSITIVITY = 1e12
LGAMMA_MIN_ABS = 0.1215  # |min of lgamma on (0, inf)| = 0.12149.., rounded up


def _g(a: float, b: float) -> float:
    return max(abs(math.lgamma(a)), abs(math.lgamma(b)), LGAMMA_MIN_ABS)


def _xlogx(v: float) -> float:
    return v * math.log(v) if v > 0 else 0.0


def check_bounds(glm: GLMSpec, bounds: Mapping[str, tuple[float, float]]) -> None:
    """The model's columns all have bounds, and ``y``'s lie in the family's range."""
    for c in (glm.y, *glm.x):
        if c not in bounds:
            raise InvalidInput(f"dp.bounds.{c}", "required",
                               f"dp.bounds.{c}: a DP model round clips y and every regressor "
                               "to public bounds; without them a record's effect is unbounded")
    lo, hi = bounds[glm.y]
    if glm.family == "binomial" and not (lo >= 0.0 and hi <= 1.0):
        raise InvalidInput(f"dp.bounds.{glm.y}", "range",
                           f"dp.bounds.{glm.y}: binomial y lies in [0, 1]")
    if glm.family != "binomial" and lo < 0.0:
        raise InvalidInput(f"dp.bounds.{glm.y}", "range",
                           f"dp.bounds.{glm.y}: a {glm.family} y is a count, at least 0")


def row_sensitivities(glm: GLMSpec, bounds: Mapping[str, tuple[float, float]]
                      ) -> dict[str, float]:
    """Per-record L1 bound of each ``glm.*`` entry at the round's coefficients (see above)."""
    check_bounds(glm, bounds)
    if glm.beta is None:
        raise InvalidInput("glm.beta", "required",
                           "glm.beta: a DP model round is evaluated at public coefficients "
                           "(start from zeros): the data-derived starting means of a first "
                           "round have no public bound")
    m = [1.0, *(max(abs(bounds[c][0]), abs(bounds[c][1])) for c in glm.x)]
    big_y = bounds[glm.y][1]
    e = math.fsum(abs(b) * mj for b, mj in zip(glm.beta, m, strict=True))
    a = glm.alpha
    try:
        u = math.exp(e)
        if glm.family == "binomial":
            w, z = 0.25, e / 4 + 1.0
            log1pu = e + math.log1p(math.exp(-e))  # log(1 + U) without overflow
            dev, ll = 2 * log1pu, log1pu
        elif glm.family == "poisson":
            w, z = u, u * e + max(big_y, u)
            dev = 2 * (max(0.0, _xlogx(big_y)) + big_y * e + u)
            ll = big_y * e + u + _g(1.0, big_y + 1)
        else:
            w = u / (1 + a * u)
            z = w * e + max(big_y, w)
            dev = 2 * (max(0.0, _xlogx(big_y)) + big_y * e + (big_y + 1 / a) * math.log1p(a * u))
            ll = (big_y * math.log1p(u / a) + math.log1p(a * u) / a + _g(1 / a, big_y + 1 / a)
                  + _g(1.0, big_y + 1) + abs(math.lgamma(1 / a)))
    except OverflowError:
        w = z = dev = ll = math.inf
    out = {"glm.n": 1.0, "glm.missing": 1.0,
           "glm.xwx": w * math.fsum(m[i] * m[j] for i in range(len(m))
                                    for j in range(i, len(m))),
           "glm.xwz": z * math.fsum(m), "glm.deviance": dev, "glm.loglik": ll}
    if not all(math.isfinite(v) and v <= MAX_ROW_SENSITIVITY for v in out.values()):
        raise InvalidInput("glm.beta", "unbounded_sensitivity",
                           "glm.beta: at these coefficients and bounds one record's effect on "
                           f"a round's sums exceeds {MAX_ROW_SENSITIVITY:g}: the noise would "
                           "swamp the release (the linear predictor's bound "
                           "|b_0| + sum |b_j| max|x_j| is too large for this family)")
    return out
