"""Distribution functions the SDC engine needs, in pure Python (scipy is not a dependency).

The chi-square, Student t and F tail probabilities all reduce to two regularized
incomplete functions, evaluated as in Press et al., *Numerical Recipes* (3rd ed., 2007)
§6.2 (gamma: series below ``a + 1``, Lentz continued fraction above) and §6.4 (beta:
continued fraction, with the symmetry ``I_x(a, b) = 1 - I_{1-x}(b, a)`` chosen so that the
fraction converges quickly). Relations from Abramowitz & Stegun (1964) §26.4 (chi-square),
§26.7 (t) and §26.6 (F). Each tail is computed directly (never as ``1 - cdf`` of a
value near 1), so small p-values keep their relative precision.
"""

from __future__ import annotations

import math

_EPS = 1e-15
_TINY = 1e-300
# Both expansions need O(sqrt(max(a, b))) terms; this bound covers parameters far beyond
# any table (a chi-square dof is at most max_cells) or model (residual dof of 10^9).
_MAX_ITER = 200_000


class ConvergenceError(ArithmeticError):
    """An expansion did not converge: a programming error, never a data condition."""


def _check_positive(name: str, v: float) -> None:
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a positive finite number")


def _gamma_p_series(a: float, x: float) -> float:
    """P(a, x) by its power series; converges fast for x < a + 1 (NR eq. 6.2.5)."""
    ap, term = a, 1.0 / a
    total = term
    for _ in range(_MAX_ITER):
        ap += 1.0
        term *= x / ap
        total += term
        if abs(term) < abs(total) * _EPS:
            return total * math.exp(-x + a * math.log(x) - math.lgamma(a))
    raise ConvergenceError("incomplete gamma series")


def _lentz_step(an: float, bn: float, c: float, d: float) -> tuple[float, float]:
    """One term ``an / (bn + ...)`` of a continued fraction by the modified Lentz method
    (NR 5.2): the next (C, D), each kept off zero; the fraction's value is multiplied by
    C D."""
    d = an * d + bn
    if abs(d) < _TINY:
        d = _TINY
    c = bn + an / c
    if abs(c) < _TINY:
        c = _TINY
    return c, 1.0 / d


def _gamma_q_fraction(a: float, x: float) -> float:
    """Q(a, x) by the modified Lentz continued fraction; for x >= a + 1 (NR eq. 6.2.7)."""
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITER):
        an = -i * (i - a)
        b += 2.0
        c, d = _lentz_step(an, b, c, d)
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h
    raise ConvergenceError("incomplete gamma continued fraction")


def gamma_q(a: float, x: float) -> float:
    """Upper regularized incomplete gamma Q(a, x) = Γ(a, x) / Γ(a)."""
    _check_positive("a", a)
    if math.isnan(x) or x < 0:
        raise ValueError("x must be >= 0")
    if x == 0:
        return 1.0
    if math.isinf(x):
        return 0.0
    if x < a + 1.0:
        return max(0.0, 1.0 - _gamma_p_series(a, x))
    return _gamma_q_fraction(a, x)


def _beta_fraction(x: float, a: float, b: float) -> float:
    """Continued fraction for I_x(a, b) (NR eq. 6.4.5, modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    if abs(d) < _TINY:
        d = _TINY
    d = 1.0 / d
    h = d
    for m in range(1, _MAX_ITER):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        c, d = _lentz_step(aa, 1.0, c, d)
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        c, d = _lentz_step(aa, 1.0, c, d)
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ConvergenceError("incomplete beta continued fraction")


def beta_i(x: float, a: float, b: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    _check_positive("a", a)
    _check_positive("b", b)
    if math.isnan(x) or x < 0 or x > 1:
        raise ValueError("x must lie in [0, 1]")
    if x == 0:
        return 0.0
    if x == 1:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(x, a, b) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(1.0 - x, b, a) / b


def chi2_sf(x: float, dof: float) -> float:
    """P(X > x) for X ~ chi-square(dof) = Q(dof/2, x/2) (A&S §26.4)."""
    _check_positive("dof", dof)
    if math.isnan(x):
        raise ValueError("x must be a number")
    if x <= 0:
        return 1.0
    return gamma_q(dof / 2.0, x / 2.0)


def t_sf_two_sided(t: float, dof: float) -> float:
    """P(|T| > |t|) for T ~ Student t(dof) = I_{dof/(dof+t²)}(dof/2, 1/2) (A&S §26.7)."""
    _check_positive("dof", dof)
    if math.isnan(t):
        raise ValueError("t must be a number")
    if math.isinf(t):
        return 0.0
    return beta_i(dof / (dof + t * t), dof / 2.0, 0.5)


def f_sf(f: float, dof1: float, dof2: float) -> float:
    """P(F > f) for F ~ F(dof1, dof2) = I_{dof2/(dof2+dof1·f)}(dof2/2, dof1/2) (A&S §26.6)."""
    _check_positive("dof1", dof1)
    _check_positive("dof2", dof2)
    if math.isnan(f):
        raise ValueError("f must be a number")
    if f <= 0:
        return 1.0
    if math.isinf(f):
        return 0.0
    return beta_i(dof2 / (dof2 + dof1 * f), dof2 / 2.0, dof1 / 2.0)


def t_ppf(prob: float, dof: float) -> float:
    """The t(dof) quantile for prob in (0.5, 1), by bisection on the two-sided tail.

    Bisection, not Newton: the tail is monotone in t, so 200 halvings of a bracket found by
    doubling reach full double precision without any risk of overshooting.
    """
    _check_positive("dof", dof)
    if not 0.5 < prob < 1.0:
        raise ValueError("prob must lie in (0.5, 1)")
    target = 2.0 * (1.0 - prob)
    lo, hi = 0.0, 1.0
    while t_sf_two_sided(hi, dof) > target:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if t_sf_two_sided(mid, dof) > target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
