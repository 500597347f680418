"""Ordinary least squares, computed and checked.

Regression coefficients are "safe statistics" once enough residual degrees of freedom
remain (Ritchie 2008, *Disclosure detection in research environments in practice*; ACRO
``safe_dof_threshold`` 10; ESSnet guidelines, Bond et al. 2015): with few, the fit
approaches the data. A model that fits every record exactly reproduces each outcome from
its explanatory values, which is treated as class disclosure.

Enough degrees of freedom do not stop a regressor that few records determine: with a flag
one record holds, ``const + coef`` is that record's outcome; with a dummy m records hold,
their mean (ESSnet guidelines: a regression on dummies is a table of means). The
leverage h_i (the diagonal of the hat matrix X (X'X)^-1 X') measures this for any design:
over every linear combination of the coefficients, the largest share of one record in the
combination, (w_i)^2 / |w|^2, is h_i (Cauchy-Schwarz on the projection of that record's
indicator onto the columns of X). A mean of m records gives each 1/m, and the dummy's
stratum has h = 1/m exactly; so a model is released only if no record has h above
1/``min_count``, which allows what a table cell of ``min_count`` records allows. As the
leverages sum to the number of coefficients p, this needs at least p * ``min_count``
records.

A model also releases, in effect, the sums, sums of squares and cross-products of its
columns over its sample: the intercept and slope at a released mean give the outcome's
mean, sigma with the residual dof and R² its total sum of squares, and the standard errors
(with sigma) the regressors' X'X. For a discrete column (one whose values repeat:
:func:`compute.sdc.magnitude_cells.partition_bound`) those are the count margin, sum and
sum of squares that, beside the column's frequency table, solve for the counts it hides
(R6-1c: a 99-year-old pooled in the table by age came out of ``ols`` of age on cost). So
every column a model reads is held to the rule a magnitude cell of it meets
(:func:`_discrete_hits`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from compute.errors import InvalidInput
from compute.sdc.discrete import value_lines
from compute.sdc.frequency import check_policy, unit_codes
from compute.sdc.grid import Grid
from compute.sdc.magnitude import numeric_column
from compute.sdc.magnitude_cells import FloatArray, partition_bound, short_levels
from compute.sdc.policy import DEFAULT_POLICY, Action, SDCPolicy
from compute.sdc.result import CheckedModel, Mask
from compute.sdc.rules import Outcome, Rule, action_of, reasons
from compute.sdc.special import f_sf, t_ppf, t_sf_two_sided

INTERCEPT = "const"
# Residual sum of squares below this share of the outcome's sum of squares is an exact
# fit: far below any rounding a real model leaves, far above float noise.
_EXACT_FIT = 1e-20
# Leverage above 1/min_count by this relative margin: a stratum of exactly min_count
# records (h = 1/min_count up to rounding) is a released cell's worth, not a leak.
_LEVERAGE_TOL = 1e-9


def _withheld(hits: tuple[Rule, ...], policy: SDCPolicy) -> CheckedModel:
    return CheckedModel(None, None, Outcome.WITHHELD, hits, reasons(hits, policy))


def _holders(at: np.ndarray, units: np.ndarray | None) -> int:
    """Records (or distinct units) among those ``at`` a level."""
    return int(at.sum()) if units is None else len(np.unique(units[at]))


#: The grid of a table without dimensions (one cell, ``All``).
_NO_DIMS = Grid((), (), ())


def _discrete_hits(columns: Sequence[FloatArray], complete: Mask,
                   units: np.ndarray | None, policy: SDCPolicy) -> tuple[Rule, ...]:
    """``threshold`` where a column the model reads (whole-frame values, ``complete``
    the model's sample) fails the rule its magnitude cell without dimensions meets
    (:func:`compute.sdc.magnitude.magnitude_table`): over the sample, a column taking two
    or three values, or any number for a discrete column, has each value held by none or
    by ``min_count`` or more contributors (``short_levels``; ``units`` are the frame's
    contributor codes or None); and a discrete column's frequency table (no dimensions,
    as the route would give it over the whole frame) hides no count (``value_lines``):
    where it hides a rare value and its complement, the model's sums are equations in
    them. Every column alike, outcome or regressor: the fit gives the outcome's sum and
    squares, the standard errors a regressor's. A binary outcome (a 0/1 column) passes
    when both values are held by ``min_count`` or more, as its sum would."""
    sample_units = None if units is None else units[complete]
    one_cell = np.zeros(int(complete.sum()), dtype=np.int64)
    for x in columns:
        most = partition_bound(x)
        if short_levels(one_cell, x[complete], sample_units, 1, policy.min_count,
                        most=most)[0]:
            return (Rule.THRESHOLD,)
        if most is None and value_lines(_NO_DIMS, x, units, policy)[0]:
            return (Rule.THRESHOLD,)
    return ()


def _strata_hits(design: np.ndarray, q: np.ndarray, regressors: int,
                 policy: SDCPolicy, units: np.ndarray | None = None) -> tuple[Rule, ...]:
    """Rules hit by records that determine their own fit.

    ``threshold``: a two-valued regressor (a flag, a dummy) with a level held by fewer
    than ``min_count`` records (distinct units with ``units``). ``leverage``: a record's
    hat value above 1/``min_count``, from the thin Q of X = QR (h_i = |Q_i|^2: O(n p) on
    top of the O(n p^2) QR, never the n x n hat matrix); with ``units``, a unit's hat
    values summed (the trace of its block of the hat matrix: m of a stratum's M records
    weigh m/M together, as one person's twelve episodes of a flag weigh 1).
    """
    hits: list[Rule] = []
    for col in design[:, design.shape[1] - regressors:].T:
        # Two-valued: every record at the minimum or the maximum (O(n), no sort).
        low, high = col.min(), col.max()
        at_low, at_high = col == low, col == high
        if low < high and int(at_low.sum() + at_high.sum()) == len(col) \
                and min(_holders(at_low, units), _holders(at_high, units)) < policy.min_count:
            hits.append(Rule.THRESHOLD)
            break
    leverage = np.einsum("ij,ij->i", q, q)
    if units is not None:
        leverage = np.bincount(units, leverage)
    if float(leverage.max()) * policy.min_count > 1.0 + _LEVERAGE_TOL:
        hits.append(Rule.LEVERAGE)
    return tuple(hits)


def ols(frame: pd.DataFrame, y: str, xs: Sequence[str], policy: SDCPolicy = DEFAULT_POLICY,
        *, intercept: bool = True, unit: str | None = None) -> CheckedModel:
    """Least-squares fit of ``y`` on ``xs`` (rows with a missing value are dropped).

    ``coefficients``: index ``const`` (with ``intercept``) then ``xs``; columns ``coef``,
    ``std_err``, ``t``, ``p_value`` (two-sided), ``ci_low``, ``ci_high`` (95 %).
    ``fit``: ``n``, ``df_model``, ``df_resid``, ``r2``, ``adj_r2``, ``f``, ``f_p_value``,
    ``sigma``. Without an intercept R² is uncentred, as statsmodels reports it.
    Withheld when ``df_resid < min_dof``, when the columns are linearly dependent, when
    a two-valued regressor has a level held by fewer than ``min_count`` records, when a
    column fails its magnitude cell's value rule (:func:`_discrete_hits`), or when
    a record's leverage exceeds 1/``min_count`` (see the module docstring). ``unit``: the
    contributor column; levels are then held by distinct units, and a unit's records'
    leverages count together.
    """
    policy = check_policy(policy)
    if isinstance(xs, str) or not isinstance(xs, Sequence) or not xs:
        raise InvalidInput("xs", "type", "xs must be a non-empty list of column names")
    names = [y, *xs]
    if len(set(names)) != len(names):
        raise InvalidInput("xs", "unique", "y and xs must be distinct columns")
    if intercept and INTERCEPT in xs:
        raise InvalidInput("xs", "reserved", f"{INTERCEPT!r} names the intercept")
    columns = [numeric_column(frame, y, "y"), *(numeric_column(frame, x, "xs") for x in xs)]
    data = np.column_stack(columns)
    all_units = units = unit_codes(frame, unit, tuple(names))
    complete: Mask = np.asarray(~np.isnan(data).any(axis=1), dtype=bool)
    data = data[complete]
    if units is not None:
        units = units[complete]
    yv = data[:, 0]
    design = data[:, 1:]
    if intercept:
        design = np.column_stack([np.ones(len(yv)), design])
    n, k = design.shape
    dof = n - k
    if dof < policy.min_dof:
        return _withheld((Rule.RESIDUAL_DOF,), policy)
    if np.linalg.matrix_rank(design) < k:
        return _withheld((Rule.RANK_DEFICIENT,), policy)

    q, r = np.linalg.qr(design)
    found = set(_discrete_hits(columns, complete, all_units, policy)) \
        | set(_strata_hits(design, q, len(xs), policy, units))
    if found:
        return _withheld(tuple(rule for rule in Rule if rule in found), policy)
    beta = np.linalg.solve(r, q.T @ yv)
    resid = yv - design @ beta
    rss = float(resid @ resid)
    tss = float(((yv - yv.mean()) ** 2).sum()) if intercept else float(yv @ yv)
    hits: tuple[Rule, ...] = ()
    if policy.class_disclosure is not Action.ALLOW and rss <= _EXACT_FIT * max(float(yv @ yv),
                                                                             1.0):
        hits = (Rule.EXACT_FIT,)
        if action_of(Rule.EXACT_FIT, policy) is Action.SUPPRESS:
            return _withheld(hits, policy)

    r_inv = np.linalg.inv(r)
    sigma2 = rss / dof
    se = np.sqrt(np.diag(r_inv @ r_inv.T) * sigma2)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = beta / se
    p = [0.0 if not math.isfinite(v) else t_sf_two_sided(abs(float(v)), dof) for v in t]
    crit = t_ppf(0.975, dof)
    coefficients = pd.DataFrame(
        {"coef": beta, "std_err": se, "t": t, "p_value": p,
         "ci_low": beta - crit * se, "ci_high": beta + crit * se},
        index=pd.Index(([INTERCEPT] if intercept else []) + list(xs), name="term"))
    df_model = k - 1 if intercept else k
    r2 = 1.0 - rss / tss if tss > 0 else float("nan")
    adj = 1.0 - (1.0 - r2) * ((n - 1) if intercept else n) / dof
    if df_model > 0 and rss > 0:
        f = (tss - rss) / df_model / (rss / dof)
        f_p = f_sf(f, df_model, dof)
    else:
        f, f_p = float("nan"), float("nan")
    fit = {"n": float(n), "df_model": float(df_model), "df_resid": float(dof), "r2": r2,
           "adj_r2": adj, "f": f, "f_p_value": f_p, "sigma": math.sqrt(sigma2)}
    outcome = Outcome.REVIEW if hits else Outcome.RELEASED
    return CheckedModel(coefficients, fit, outcome, hits, reasons(hits, policy))
