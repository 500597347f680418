"""Magnitude tables (sum, mean, std, median, quantiles) and within-group variance, checked.

Sensitivity rules on every cell, margins included: threshold on contributors (ACRO
``safe_threshold``), nk dominance and the p% rule (ACRO ``safe_nk_n``/``safe_nk_k`` and
``safe_pratio_p``; Hundepool et al. 2012, ch. 4), zeros and class disclosure. The rules look
at *absolute* contributions: ACRO fails every cell holding a negative value (its
``negative`` mask) instead, and Hundepool et al. state the rules for non-negative
contributions; a large negative contribution dominates a cell just as a large positive
one does, so magnitudes are what count. A value that takes two or three values in a cell
partitions it (the count, sum and sum of squares solve for each value's count: the sum
of a boolean is its holders' count), and so does any value of a discrete column (one
whose values repeat: beside its frequency table, the sums solve for the counts that
table hides), so the threshold also applies to each value's contributors there. Medians
and quantiles follow the output-checking guidance for percentiles (SDAP, *Handbook on
Statistical Disclosure Control for Outputs*, 2019; ESSnet guidelines, Bond et al. 2015):
enough records, and never one record's exact value.

The per-cell aggregates these rules read (contributions, totals, order statistics) are
computed in :mod:`compute.sdc.magnitude_cells`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from compute.errors import InvalidInput
from compute.sdc.discrete import value_lines
from compute.sdc.frequency import (
    check_policy,
    count_cells,
    distinct_per_cell,
    force,
    frequency_hits,
    unit_codes,
    withheld_cells,
)
from compute.sdc.grid import (
    Grid,
    IntArray,
    check_column,
    check_dims,
    check_size,
    encode,
    interior,
    subsets,
)
from compute.sdc.magnitude_cells import (
    CellAggregates,
    FloatArray,
    accumulate,
    partition_bound,
    short_levels,
)
from compute.sdc.policy import DEFAULT_POLICY, Action, SDCPolicy
from compute.sdc.result import (
    Bits,
    CheckedStatistic,
    CheckedTable,
    Mask,
    action_bits,
    build_table,
    scalar_result,
)
from compute.sdc.rules import Measure, Rule, Statistic
from compute.sdc.secondary import protect_held
from compute.sdc.special import f_sf

_ADDITIVE = (Statistic.SUM, Statistic.MEAN, Statistic.STD)


def numeric_column(frame: pd.DataFrame, name: object, field_name: str) -> FloatArray:
    col = check_column(frame, name, field_name)
    series = frame[col]
    if not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)):
        raise InvalidInput(field_name, "numeric", f"column {col!r} must be numeric")
    values: FloatArray = np.asarray(series.to_numpy(dtype=np.float64, na_value=np.nan),
                                    dtype=np.float64)
    if np.isinf(values).any():
        raise InvalidInput(field_name, "finite", f"column {col!r} holds infinite values")
    return values


def count_pattern(grid: Grid, units: IntArray | None, policy: SDCPolicy,
                  zeros_public: bool) -> Mask:
    """Cells the frequency table of the same dimensions hides (all margins).

    A released sum and mean of one cell give its count (sum / mean), so sums, means and
    stds hide at least these: no count the frequency table withholds comes back this way.
    Counted as in :func:`frequency_table` (records with a missing value included).
    """
    if not grid.dims:  # a single cell: the count table has no lines
        return np.zeros((), dtype=bool)
    rows = grid.present()
    counts = count_cells(grid, rows)
    contributors = counts if units is None else distinct_per_cell(
        grid, rows, units, counts.size).reshape(counts.shape)
    primary, held = withheld_cells(frequency_hits(counts, contributors, policy), policy)
    # Held (flagged) counts included: the frequency table does not release them either.
    return protect_held(primary, held, counts, counts == 0, zeros_public) | held


def _measures(statistics: Sequence[Statistic | str | Measure], quantiles: Sequence[float],
              policy: SDCPolicy) -> list[Measure]:
    if isinstance(statistics, str) or not isinstance(statistics, Sequence):
        raise InvalidInput("statistics", "type", "statistics must be a list")
    out: list[Measure] = []
    for s in statistics:
        if isinstance(s, Measure):
            m = s
        else:
            try:
                st = s if isinstance(s, Statistic) else Statistic(s)
            except ValueError:
                raise InvalidInput("statistics", "enum",
                                   "statistics are sum, mean, std, median, min, max") from None
            m = Measure(Statistic.QUANTILE, 0.5) if st is Statistic.MEDIAN else Measure(st)
        out.append(m)
    if isinstance(quantiles, str) or not isinstance(quantiles, Sequence):
        raise InvalidInput("quantiles", "type", "quantiles must be a list of probabilities")
    out.extend(Measure(Statistic.QUANTILE, q) for q in quantiles)
    if not out:
        raise InvalidInput("statistics", "non_empty", "at least one statistic is needed")
    for m in out:
        if m.statistic is Statistic.COUNT:
            raise InvalidInput("statistics", "count", "counts come from frequency_table")
        if m.statistic in (Statistic.MIN, Statistic.MAX) and not policy.allow_extremes:
            raise InvalidInput("statistics", "extremes",
                               "min and max are not released under this policy")
        if m.statistic is Statistic.QUANTILE:
            q = m.q
            if isinstance(q, bool) or not isinstance(q, int | float) or not 0 <= q <= 1:
                raise InvalidInput("quantiles", "range", "quantiles must lie in [0, 1]")
            if q in (0, 1) and not policy.allow_extremes:
                raise InvalidInput("quantiles", "extremes",
                                   "quantiles 0 and 1 are the min and max, not released")
    return list(dict.fromkeys(out))


def _bits(mask: Mask, rule: Rule) -> Bits:
    return np.where(mask, np.uint16(rule.bit), np.uint16(0)).astype(np.uint16)


def _base_hits(cells: CellAggregates, policy: SDCPolicy) -> Bits:
    """Rules every statistic of a cell obeys: threshold, zeros, class disclosure."""
    hits = _bits((cells.n_contrib > 0) & (cells.n_contrib < policy.min_count), Rule.THRESHOLD)
    if policy.zeros is not Action.ALLOW:
        hits |= _bits(cells.n_contrib == 0, Rule.ZEROS)
    if policy.class_disclosure is not Action.ALLOW:
        # Every contributor holds one value: any statistic of the cell reveals it.
        hits |= _bits((cells.n_contrib >= 2) & (cells.vmin == cells.vmax),
                      Rule.CLASS_DISCLOSURE)
    return hits


def _dominance_bits(total: FloatArray, top: dict[int, FloatArray], policy: SDCPolicy
                    ) -> Bits:
    """nk dominance and p% on non-negative contributions summing to ``total`` per cell,
    ``top[n]`` the sum of each cell's n largest."""
    dominated = np.zeros(total.shape, dtype=bool)
    for r in policy.nk_rules:
        dominated |= (total > 0) & (top[r.n] >= r.k * total)
    top1, top2 = top[1], top[2]
    rest = total - top2
    p_hit = (policy.p_percent > 0) & (top1 > 0) & (rest < policy.p_percent * top1)
    return _bits(dominated, Rule.DOMINANCE) | _bits(p_hit, Rule.P_PERCENT)


def _sensitivity_hits(cells: CellAggregates, policy: SDCPolicy) -> Bits:
    """nk dominance and p% on absolute contributions (sums, means, std)."""
    return _dominance_bits(cells.abs_total, cells.top, policy)


def _spread_hits(cells: CellAggregates, policy: SDCPolicy) -> Bits:
    """nk dominance and p% on the contributions to the sum of squares, the squared
    deviations from the cell's mean (per unit with units), as for within-group variance:
    one value far from many alike passes both rules on |x|, yet its squared deviation
    is nearly all of the std, and mean and std then give it."""
    return _dominance_bits(cells.ss, cells.ss_top, policy)


def magnitude_table(frame: pd.DataFrame, dims: Sequence[str], value: str,
                    statistics: Sequence[Statistic | str | Measure] = (Statistic.SUM,
                                                                       Statistic.MEAN),
                    policy: SDCPolicy = DEFAULT_POLICY, *,
                    quantiles: Sequence[float] = (), margins: bool = True,
                    unit: str | None = None,
                    categories: Mapping[str, Sequence[Hashable]] | None = None,
                    forced: np.ndarray[Any, Any] | None = None
                    ) -> dict[str, CheckedTable]:
    """Statistics of ``value`` by 0-4 dimensions, with all margins, one table per measure.

    Sum, mean and std share one suppression pattern (each is recoverable from the others
    and the counts), with secondary suppression, which also covers every cell the
    frequency table of the same dimensions hides (sum / mean is a count) and every cell
    whose value takes at most three values (any number for a discrete column:
    ``partition_bound``) one of which fewer than ``min_count`` contributors hold (the
    sums give each value's count: ``short_levels``); medians,
    quantiles, min and max are not additive and carry their primary suppressions only.
    Records with a missing value are left out. Returns ``{measure name: table}``
    (``sum``, ``mean``, ``std``, ``q0.5``...). ``forced``: as for
    :func:`~compute.sdc.frequency.frequency_table`, for every measure.
    """
    policy = check_policy(policy)
    dims_t = check_dims(frame, dims, 0)
    val = check_column(frame, value, "value")
    if val in dims_t:
        raise InvalidInput("value", "distinct", "value must not also be a dimension")
    measures = _measures(statistics, quantiles, policy)
    grid = encode(frame, dims_t, categories)
    check_size(grid, margins, policy)
    x = numeric_column(frame, val, "value")
    units = unit_codes(frame, unit, (*dims_t, val))
    rows = grid.present() & ~np.isnan(x) if dims_t else ~np.isnan(x)
    size = int(np.prod(grid.full_shape, dtype=np.int64))
    cells = CellAggregates(size)
    ns = {1, 2} | {r.n for r in policy.nk_rules}
    qs = [m.q for m in measures if m.q is not None]
    # With units, a value shared by many records may still belong to one contributor.
    common = float(policy.min_count) if units is None else np.inf
    u = None if units is None else units[rows]
    spread = any(m.statistic is Statistic.STD for m in measures)
    # A cell whose value takes few values, or any cell of a discrete column, is a
    # partition by value (a boolean's sum is the count of its holders; beside the
    # column's frequency table the sums solve for the counts it hides): each part is
    # held to the threshold, as a cell is. Judged on all the column's present values,
    # so that every table of the column agrees.
    most = partition_bound(x)
    short = np.zeros(size, dtype=bool)
    for subset in subsets(len(dims_t), True):
        codes = grid.cell_codes(subset, rows)
        accumulate(cells, codes, x[rows], u, ns, qs, common, spread)
        short |= short_levels(codes, x[rows], u, size, policy.min_count, cells.n_values,
                              most)

    if most is None:
        short |= value_lines(grid, x, units, policy)
    base = _base_hits(cells, policy)
    force(base, forced)
    additive = base | _sensitivity_hits(cells, policy) | _bits(short, Rule.THRESHOLD)
    suppress = action_bits(policy, Action.SUPPRESS)
    shape = grid.full_shape
    zeros_public = policy.zeros is not Action.SUPPRESS
    primary, held = withheld_cells(additive, policy)
    held = held.reshape(shape)
    empty = ((cells.n_contrib == 0) | (cells.abs_total == 0)).reshape(shape)
    # A cell flagged here keeps its flag even where the count table withholds its count.
    add_hidden = protect_held(primary.reshape(shape)
                              | (count_pattern(grid, units, policy, zeros_public) & ~held),
                              held, cells.n_rec.reshape(shape), empty, zeros_public)
    std_hits, std_hidden = additive, add_hidden
    if spread:
        # The std hides every cell the sum and mean hide (a std beside a hidden mean is
        # an equation in it), and the cells its own rules hit, closed by secondary
        # suppression: a margin's sum of squares is its cells' plus n (mean - margin
        # mean)^2 each, all released, so a lone hidden std would be the rest.
        std_hits = additive | _spread_hits(cells, policy)
        std_primary, _ = withheld_cells(std_hits, policy)
        std_primary = std_primary.reshape(shape)
        if (std_primary & ~add_hidden).any():
            std_hidden = protect_held(add_hidden | std_primary, held,
                                      cells.n_rec.reshape(shape), empty, zeros_public)

    out: dict[str, CheckedTable] = {}
    for m in measures:
        if m.statistic in _ADDITIVE:
            hits, hidden = ((std_hits, std_hidden.ravel()) if m.statistic is Statistic.STD
                            else (additive, add_hidden.ravel()))
            with np.errstate(divide="ignore", invalid="ignore"):
                if m.statistic is Statistic.SUM:
                    values = cells.total
                elif m.statistic is Statistic.MEAN:
                    values = np.where(cells.n_rec > 0, cells.total / cells.n_rec, np.nan)
                else:
                    values = np.where(cells.n_rec > 1,
                                      np.sqrt(cells.ss / (cells.n_rec - 1)), np.nan)
        else:
            hits = base
            if m.statistic is Statistic.QUANTILE:
                assert m.q is not None
                values = cells.quantile.get(m.q, np.full(size, np.nan))
                hits = hits | _bits(cells.remainder.get(m.q, np.zeros(size, dtype=bool)),
                                    Rule.QUANTILE_REMAINDER)
                if not policy.allow_extremes:
                    hits = hits | _bits(cells.extreme.get(m.q, np.zeros(size, dtype=bool)),
                                        Rule.QUANTILE_EXTREME)
            else:
                values = cells.vmin if m.statistic is Statistic.MIN else cells.vmax
            hidden = (hits & suppress) != 0
        v, h, hd = values.reshape(shape), hits.reshape(shape), hidden.reshape(shape)
        if not margins:
            v, h, hd = interior(v), interior(h), interior(hd)
        out[m.name] = build_table(dims_t, m, grid.index(margins), v.ravel(), h.ravel(),
                                  hd.ravel(), policy, margins)
    return out


def within_group_variance(frame: pd.DataFrame, groups: Sequence[str], value: str,
                          policy: SDCPolicy = DEFAULT_POLICY) -> CheckedStatistic:
    """Pooled within-group variance of ``value`` over 1-4 grouping columns (one-way ANOVA).

    Values: ``within_variance`` (SS_within / (N - G)), ``dof_within``; with two groups or
    more also ``between_variance``, ``dof_between``, ``f`` and ``p_value``. Withheld when a
    group has fewer than ``min_count`` records (or, its value taking at most three
    values or the column being discrete, fewer than ``min_count`` records hold one of
    them), when ``N - G < min_dof``, or when one record dominates the within sum of
    squares: nk and p% rules applied to the squared deviations, by analogy with
    magnitude cells (Hundepool et al. 2012, ch. 4), since the variance of a group
    dominated by one record reveals that record's deviation. Every record equal to its
    group mean is class disclosure.
    """
    policy = check_policy(policy)
    dims_t = check_dims(frame, groups, 1, "groups")
    val = check_column(frame, value, "value")
    if val in dims_t:
        raise InvalidInput("value", "distinct", "value must not also be a grouping column")
    grid = encode(frame, dims_t, None)
    x = numeric_column(frame, val, "value")
    rows = grid.present() & ~np.isnan(x)
    c = grid.cell_codes((True,) * len(dims_t), rows)
    v = x[rows]
    size = int(np.prod(grid.full_shape, dtype=np.int64))
    n = np.bincount(c, minlength=size)
    total = np.bincount(c, v, minlength=size)
    mean = np.divide(total, n, out=np.zeros(size), where=n > 0)
    dev2 = (v - mean[c]) ** 2
    ss_w = float(dev2.sum())
    n_all, g = int(n.sum()), int((n > 0).sum())
    hits: list[Rule] = []
    # A group whose value takes few values, one held by fewer than min_count records, is
    # a short cell too: a one-group variance of a boolean gives its holders' count.
    if (((n > 0) & (n < policy.min_count)).any()
            or short_levels(c, v, None, size, policy.min_count,
                            most=partition_bound(x)).any()):
        hits.append(Rule.THRESHOLD)
    if n_all - g < policy.min_dof:
        hits.append(Rule.RESIDUAL_DOF)
    top = -np.sort(-dev2)
    if ss_w > 0:
        if any(top[:r.n].sum() >= r.k * ss_w for r in policy.nk_rules):
            hits.append(Rule.DOMINANCE)
        first, second = (top[0], top[1] if len(top) > 1 else 0.0)
        if policy.p_percent > 0 and ss_w - first - second < policy.p_percent * first:
            hits.append(Rule.P_PERCENT)
    elif n_all and policy.class_disclosure is not Action.ALLOW:
        hits.append(Rule.CLASS_DISCLOSURE)
    if Rule.RESIDUAL_DOF in hits or n_all == 0:
        return scalar_result("within_group_variance", {}, tuple(hits), policy)
    dof_w = n_all - g
    values = {"within_variance": ss_w / dof_w, "dof_within": float(dof_w)}
    if g >= 2:
        grand = float(v.mean())
        ss_b = float((n[n > 0] * (mean[n > 0] - grand) ** 2).sum())
        within = ss_w / dof_w
        f = ss_b / (g - 1) / within if within > 0 else float("inf")
        values |= {"between_variance": ss_b / (g - 1), "dof_between": float(g - 1),
                   "f": f, "p_value": f_sf(f, g - 1, dof_w)}
    return scalar_result("within_group_variance", values, tuple(hits), policy)
