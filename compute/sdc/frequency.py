"""Frequency tables (counts) and the chi-square test of independence, computed and checked.

Rules: threshold on the true number of contributors of every cell, margins included
(ACRO ``safe_threshold``; Hundepool et al. 2012, ch. 5); zeros (ACRO
``zeros_are_disclosive``); class (group) disclosure, a line of the table with a single
non-empty cell (Hundepool et al. 2012, ch. 5 on group disclosure; ONS/UK TRE practice);
then secondary suppression (:mod:`compute.sdc.secondary`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from compute.errors import InvalidInput
from compute.sdc.grid import (
    Grid,
    IntArray,
    check_column,
    check_dims,
    check_size,
    encode,
    interior,
    subsets,
    with_margins,
)
from compute.sdc.policy import DEFAULT_POLICY, Action, SDCPolicy
from compute.sdc.result import (
    Bits,
    CheckedStatistic,
    CheckedTable,
    Mask,
    action_bits,
    build_table,
    rules_of_bits,
    scalar_result,
)
from compute.sdc.rules import Measure, Rule, Statistic
from compute.sdc.secondary import protect_held
from compute.sdc.special import chi2_sf

# Cochran (1954): the chi-square approximation wants expected counts of at least five.
_MIN_EXPECTED = 5.0


def check_policy(policy: object) -> SDCPolicy:
    if not isinstance(policy, SDCPolicy):
        raise InvalidInput("policy", "type", "policy must be an SDCPolicy")
    return policy


def unit_codes(frame: pd.DataFrame, unit: str | None, taken: tuple[str, ...]
               ) -> IntArray | None:
    """Codes of the contributor (statistical unit) column, when records are not units."""
    if unit is None:
        return None
    check_column(frame, unit, "unit")
    if unit in taken:
        raise InvalidInput("unit", "distinct", "unit must not also be a dimension or value")
    codes, _ = pd.factorize(frame[unit])
    if (codes < 0).any():
        raise InvalidInput("unit", "missing", "the unit column must not have missing values")
    return np.asarray(codes, dtype=np.int64)


def distinct_per_cell(grid: Grid, rows: np.ndarray[Any, Any], units: IntArray,
                      size: int) -> IntArray:
    """Distinct units in every cell of the full (margined) array: one sort per sub-table."""
    out = np.zeros(size, dtype=np.int64)
    u = units[rows]
    for subset in subsets(len(grid.dims), True):
        c = grid.cell_codes(subset, rows)
        order = np.lexsort((u, c))
        cs, us = c[order], u[order]
        first = np.ones(len(cs), dtype=bool)
        first[1:] = (cs[1:] != cs[:-1]) | (us[1:] != us[:-1])
        out += np.bincount(cs[first], minlength=size)
    return out


def count_cells(grid: Grid, rows: np.ndarray[Any, Any]) -> IntArray:
    """Counts with every margin: one bincount on the interior, then sums along axes."""
    shape = grid.shape
    flat = np.zeros(int(rows.sum()), dtype=np.int64)
    for axis, codes in enumerate(grid.codes):
        flat += codes[rows] * int(np.prod(shape[axis + 1:], dtype=np.int64))
    counts = np.bincount(flat, minlength=int(np.prod(shape, dtype=np.int64)))
    return with_margins(counts.reshape(shape).astype(np.int64))


def frequency_hits(counts: IntArray, contributors: IntArray, policy: SDCPolicy) -> Bits:
    """Primary rule bits per cell of the full (margined) count array."""
    hits = np.zeros(counts.shape, dtype=np.uint16)
    small = (contributors > 0) & (contributors < policy.min_count)
    hits[small] |= np.uint16(Rule.THRESHOLD.bit)
    if policy.zeros is not Action.ALLOW:
        hits[counts == 0] |= np.uint16(Rule.ZEROS.bit)
    if policy.class_disclosure is not Action.ALLOW:
        cls = np.uint16(Rule.CLASS_DISCLOSURE.bit)
        for axis in range(counts.ndim):
            if counts.shape[axis] < 3:  # a single category: its line is trivially whole
                continue
            inner = [slice(None)] * counts.ndim
            inner[axis] = slice(0, -1)
            sel = tuple(inner)
            nonzero = counts[sel] > 0
            whole = np.expand_dims(nonzero.sum(axis=axis) == 1, axis)
            view = hits[sel]  # a view: updates land in ``hits``
            view[nonzero & whole] |= cls
            if policy.class_disclosure is Action.SUPPRESS:
                # Hiding only the cell would leave the zeros beside it, which still say
                # that every record of the category shares the attribute.
                view[~nonzero & whole] |= cls
    return hits


def withheld_cells(hits: Bits, policy: SDCPolicy) -> tuple[Mask, Mask]:
    """Cells a rule suppresses, and cells held back for review (flagged, not suppressed).

    Both are protected by secondary suppression (:func:`protect_held`): a flagged value
    is not released until a person has looked, and it must not come back meanwhile as
    its margin less its released siblings."""
    primary = (hits & action_bits(policy, Action.SUPPRESS)) != 0
    held = ((hits & action_bits(policy, Action.FLAG)) != 0) & ~primary
    return primary, held


def force(hits: Bits, forced: np.ndarray[Any, Any] | None) -> None:
    """Mark the audit's cells (flat, full margined order) with the differencing rule."""
    if forced is None:
        return
    mask = np.asarray(forced, dtype=bool)
    if mask.size != hits.size:
        raise InvalidInput("forced", "shape", "forced must cover every cell of the table")
    hits.reshape(-1)[mask.ravel()] |= np.uint16(Rule.DIFFERENCING.bit)


def frequency_table(frame: pd.DataFrame, dims: Sequence[str],
                    policy: SDCPolicy = DEFAULT_POLICY, margins: bool = True, *,
                    unit: str | None = None,
                    categories: Mapping[str, Sequence[Hashable]] | None = None,
                    forced: np.ndarray[Any, Any] | None = None) -> CheckedTable:
    """Counts of records by 1-4 dimensions, with all marginal sub-tables, checked.

    Records with a missing (or, with ``categories``, unlisted) dimension value are left out,
    as ``pandas.crosstab`` does. ``unit`` names a column identifying the contributor when
    one contributor may have several records: the threshold then counts distinct units.
    Secondary suppression always treats the margins as published (they are one request
    away), even when ``margins`` is False and they are not returned.
    ``forced``: cells of the full (margined) table, flat in C order, that the
    differencing audit (:mod:`compute.sdc.audit`) found disclosive across releases:
    suppressed as primary, with secondary suppression around them.
    """
    policy = check_policy(policy)
    dims_t = check_dims(frame, dims, 1)
    grid = encode(frame, dims_t, categories)
    check_size(grid, margins, policy)
    units = unit_codes(frame, unit, dims_t)
    rows = grid.present()
    counts = count_cells(grid, rows)
    contributors = counts if units is None else distinct_per_cell(
        grid, rows, units, counts.size).reshape(counts.shape)
    hits = frequency_hits(counts, contributors, policy)
    force(hits, forced)
    primary, held = withheld_cells(hits, policy)
    hidden = protect_held(primary, held, counts, counts == 0,
                          policy.zeros is not Action.SUPPRESS)
    if not margins:
        counts, hits, hidden = interior(counts), interior(hits), interior(hidden)
    return build_table(dims_t, Measure(Statistic.COUNT), grid.index(margins),
                       counts.ravel(), hits.ravel(), hidden.ravel(), policy, margins,
                       integer=True)


def chi_square_test(frame: pd.DataFrame, dims: Sequence[str],
                    policy: SDCPolicy = DEFAULT_POLICY, *,
                    categories: Mapping[str, Sequence[Hashable]] | None = None,
                    unit: str | None = None) -> CheckedStatistic:
    """Pearson's chi-square test of independence of two dimensions.

    Released only when the frequency table of the same two dimensions would be released
    without suppression: the statistic is a function of every cell, so computing it over
    cells the table hides would add an equation about them. Expected counts below five
    (Cochran 1954) flag the result for review; empty rows and columns are left out.
    Values: ``statistic``, ``dof``, ``p_value``. ``unit``: as for
    :func:`frequency_table` (the table's threshold counts distinct units).
    """
    policy = check_policy(policy)
    dims_t = check_dims(frame, dims, 2)
    if len(dims_t) != 2:
        raise InvalidInput("dims", "count", "the chi-square test takes exactly two dimensions")
    grid = encode(frame, dims_t, categories)
    check_size(grid, True, policy)
    units = unit_codes(frame, unit, dims_t)
    rows = grid.present()
    counts = count_cells(grid, rows)
    contributors = counts if units is None else distinct_per_cell(
        grid, rows, units, counts.size).reshape(counts.shape)
    hits = frequency_hits(counts, contributors, policy)
    applied = rules_of_bits(int(np.bitwise_or.reduce(hits.ravel())))
    if (hits & action_bits(policy, Action.SUPPRESS)).any():
        return scalar_result("chi_square", {}, (*applied, Rule.SUPPRESSED_INPUT), policy)
    observed = interior(counts).astype(np.float64)
    observed = observed[observed.sum(axis=1) > 0][:, observed.sum(axis=0) > 0]
    if min(observed.shape) < 2:
        raise InvalidInput("dims", "categories",
                           "the test needs two non-empty categories in each dimension")
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    statistic = float(((observed - expected) ** 2 / expected).sum())
    dof = (observed.shape[0] - 1) * (observed.shape[1] - 1)
    if (expected < _MIN_EXPECTED).any():
        applied = (*applied, Rule.SPARSE_EXPECTED)
    return scalar_result("chi_square",
                         {"statistic": statistic, "dof": float(dof),
                          "p_value": chi2_sf(statistic, dof)}, applied, policy)
