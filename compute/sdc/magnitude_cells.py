"""Per-cell aggregates of a magnitude table, computed once over the full margined grid.

Counts of records and contributors, totals, sums of squares, the largest contributions
(for the nk and p% rules), minima, maxima and checked quantiles (never one record's
exact value), all vectorised over the cells. Kept apart from the rules and the table
(:mod:`compute.sdc.magnitude`): this is the numerical kernel the rules read from, and the
one part whose correctness is about sorting and ranks rather than disclosure policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from compute.sdc.grid import IntArray
from compute.sdc.result import Mask

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
# Quantile positions (n - 1) q within this of an integer are taken as that integer: a
# probability like 0.1 is not exact in binary and must not tip a rank to its neighbour.
_RANK_SNAP = 1e-9


@dataclass
class CellAggregates:
    """Per-cell aggregates over the full (margined) grid, filled one sub-table at a time
    (sub-tables own disjoint cells). Internal scratch, hence mutable."""

    size: int
    n_rec: IntArray = field(init=False)
    n_contrib: IntArray = field(init=False)
    total: FloatArray = field(init=False)
    abs_total: FloatArray = field(init=False)
    ss: FloatArray = field(init=False)
    vmin: FloatArray = field(init=False)
    vmax: FloatArray = field(init=False)
    top: dict[int, FloatArray] = field(default_factory=dict)
    # The same per contributor's squared deviations from its cell's mean (what a std or
    # variance is made of), filled only when a std is asked for.
    ss_top: dict[int, FloatArray] = field(default_factory=dict)
    # Distinct values per cell (from the sort the order statistics make anyway).
    n_values: IntArray = field(init=False)
    quantile: dict[float, FloatArray] = field(default_factory=dict)
    extreme: dict[float, Mask] = field(default_factory=dict)
    remainder: dict[float, Mask] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.n_rec = np.zeros(self.size, dtype=np.int64)
        self.n_contrib = np.zeros(self.size, dtype=np.int64)
        self.n_values = np.zeros(self.size, dtype=np.int64)
        for name in ("total", "abs_total", "ss"):
            setattr(self, name, np.zeros(self.size))
        self.vmin = np.full(self.size, np.nan)
        self.vmax = np.full(self.size, np.nan)


def _unit_groups(c: IntArray, u: IntArray) -> tuple[IntArray, IntArray, IntArray]:
    """Records ordered by (cell, unit), where each (cell, unit) group starts in that
    order, and each group's cell: one sort shared by every per-unit sum of a cell."""
    order = np.lexsort((u, c))
    cs, us = c[order], u[order]
    first = np.ones(len(cs), dtype=bool)
    first[1:] = (cs[1:] != cs[:-1]) | (us[1:] != us[:-1])
    starts = np.flatnonzero(first)
    return order, starts, cs[starts]


def _per_unit(values: FloatArray, order: IntArray, starts: IntArray) -> FloatArray:
    """Each (cell, unit) group's sum of ``values``."""
    if not len(starts):
        return np.zeros(0)
    return np.asarray(np.add.reduceat(values[order], starts), dtype=np.float64)


def _top_sums(cc: IntArray, a: FloatArray, size: int, ns: set[int]
              ) -> tuple[IntArray, dict[int, FloatArray]]:
    """Contributors per cell, and the sum of the n largest contributions per cell."""
    order = np.lexsort((-a, cc))
    sc, sa = cc[order], a[order]
    n_per = np.bincount(cc, minlength=size)
    rank = np.arange(len(sc)) - (np.cumsum(n_per) - n_per)[sc]
    return n_per, {n: np.asarray(np.bincount(sc[rank < n], sa[rank < n], minlength=size),
                                 dtype=np.float64) for n in ns}


def _order_statistics(cells: CellAggregates, c: IntArray, v: FloatArray, qs: Sequence[float],
                      common: float) -> None:
    """Min, max and checked quantiles per cell (one sort per sub-table).

    A quantile is released as a value no record holds: the type-7 position (Hyndman &
    Fan 1996) is bracketed by two adjacent distinct values and their midpoint released.
    If the position lands on a value held by ``common`` records or more, that value is
    released (it describes a group, not a record); if it lands on a rarer value, the pair
    is that value and its nearer distinct neighbour. ``extreme``: the pair includes the
    cell's minimum or maximum held by fewer than ``common`` records.

    ``remainder``: the value released, or either value of the pair, is a common value whose
    records leave between 1 and ``common`` - 1 others in the cell. A released common value
    says that at least ``common`` records hold it; when fewer than ``common`` remain, the
    cell's count pins how many hold it, and its mean (and std) give the sum (and squares)
    of the few others: one record's value when one is left. The midpoint of that value and
    a neighbour is one more equation in the same unknowns, so it is held too.
    """
    size = cells.size
    order = np.lexsort((v, c))
    sc, sv = c[order], v[order]
    m = len(sv)
    n = np.bincount(c, minlength=size)
    start = np.cumsum(n) - n
    at = np.flatnonzero(n > 0)
    if not len(at):
        return
    nc, st = n[at], start[at]
    end = st + nc
    cells.vmin[at], cells.vmax[at] = sv[st], sv[end - 1]
    new_run = np.ones(m, dtype=bool)
    new_run[1:] = (sc[1:] != sc[:-1]) | (sv[1:] != sv[:-1])
    run_id = np.cumsum(new_run) - 1
    run_start = np.flatnonzero(new_run)
    run_end = np.append(run_start[1:], m)
    run_len = run_end - run_start
    cells.n_values += np.bincount(sc[run_start], minlength=size)
    # Per run: a common value whose records leave 1..common-1 others in their cell.
    run_n = n[sc[run_start]]
    few_left = (run_len >= common) & (run_n - run_len > 0) & (run_n - run_len < common)
    min_rare = run_len[run_id[st]] < common
    max_rare = run_len[run_id[end - 1]] < common
    for q in qs:
        h = (nc - 1) * q
        j = np.floor(h).astype(np.int64)
        g = h - j
        j = np.where(g > 1 - _RANK_SNAP, j + 1, j)
        g = np.where((g < _RANK_SNAP) | (g > 1 - _RANK_SNAP), 0.0, g)
        j = np.minimum(j, nc - 1)
        lo, hi = sv[st + j], sv[st + np.minimum(j + 1, nc - 1)]
        between = (g > 0) & (lo < hi)
        rid = run_id[st + j]
        rs, re = run_start[rid], run_end[rid]
        below_ok, above_ok = rs > st, re < end
        below, above = sv[np.maximum(rs - 1, 0)], sv[np.minimum(re, m - 1)]
        use_below = below_ok & (~above_ok | (lo - below <= above - lo))
        exact = ~between & ((run_len[rid] >= common) | (~below_ok & ~above_ok))
        pair_lo = np.where(between, lo, np.where(use_below, below, lo))
        pair_hi = np.where(between, hi, np.where(use_below, lo, above))
        value = np.where(exact, lo, pair_lo + (pair_hi - pair_lo) / 2)
        # The runs of the pair's two values (``rid`` is one of them unless ``between``).
        rid_lo = np.where(~between & use_below, run_id[np.maximum(rs - 1, 0)], rid)
        rid_hi = np.where(between, run_id[st + np.minimum(j + 1, nc - 1)],
                          np.where(use_below, rid, run_id[np.minimum(re, m - 1)]))
        remainder = np.where(exact, few_left[rid], few_left[rid_lo] | few_left[rid_hi])
        extreme = ~exact & (((pair_lo == sv[st]) & min_rare)
                            | ((pair_hi == sv[end - 1]) & max_rare))
        cells.quantile.setdefault(q, np.full(size, np.nan))[at] = value
        cells.extreme.setdefault(q, np.zeros(size, dtype=bool))[at] = extreme
        cells.remainder.setdefault(q, np.zeros(size, dtype=bool))[at] = remainder


def accumulate(cells: CellAggregates, c: IntArray, v: FloatArray, u: IntArray | None,
               ns: set[int], qs: Sequence[float], common: float, spread: bool = False
               ) -> None:
    """Add one sub-table's records (cells ``c``, values ``v``, units ``u``) to ``cells``:
    counts, totals, sums of squares, the ``ns`` largest contributions, the quantiles
    ``qs`` (values held by ``common`` records or more are released as such). ``spread``:
    also the ``ns`` largest contributions to the sums of squares (a unit's records'
    squared deviations summed), for the std's own nk and p% rules."""
    size = cells.size
    n_rec = np.bincount(c, minlength=size)
    total = np.bincount(c, v, minlength=size)
    mean = np.divide(total, n_rec, out=np.zeros(size), where=n_rec > 0)
    cells.n_rec += n_rec
    cells.total += total
    dev2 = (v - mean[c]) ** 2
    cells.ss += np.bincount(c, dev2, minlength=size)
    # Each contributor's cell and absolute total (a unit's records summed first), and
    # with ``spread`` its squared deviations summed the same way.
    if u is None:
        cc, a, d = c, np.abs(v), dev2
    else:
        order, starts, cc = _unit_groups(c, u)
        a = np.abs(_per_unit(v, order, starts))
        d = _per_unit(dev2, order, starts) if spread else dev2
    if spread:
        _, dtop = _top_sums(cc, d, size, ns)
        for k, arr in dtop.items():
            cells.ss_top[k] = cells.ss_top.get(k, np.zeros(size)) + arr
    n_contrib, top = _top_sums(cc, a, size, ns)
    cells.n_contrib += n_contrib
    cells.abs_total += np.bincount(cc, a, minlength=size)
    for k, arr in top.items():
        cells.top[k] = cells.top.get(k, np.zeros(size)) + arr
    _order_statistics(cells, c, v, qs, common)


#: A cell whose value takes at most this many distinct values is a partition of the cell
#: by value, and its released figures solve for the size of each part: the count and the
#: sum give two levels' counts, the sum of squares a third's. The bound is the same
#: whatever statistics are asked, so that a table with the std and one without never
#: suppress differently on the same data (the difference would say how many values a
#: cell takes and that one is rare). A discrete column (:func:`partition_bound`) has no
#: bound.
FEW_LEVELS = 3


#: A column with at most one distinct value per this many present values is discrete. A
#: fixed number, not the policy's ``min_count``: a stricter policy must never judge fewer
#: columns discrete (and so suppress less) than a weaker one.
DISCRETE_RECORDS = 10


def partition_bound(values: FloatArray) -> int | None:
    """The most distinct values a cell of this value column may take and still be judged
    a partition by value: None (any number) for a discrete column, else
    :data:`FEW_LEVELS`.

    A column is discrete when its values (all of its present values, not a cell's: every
    table of the column is judged alike) repeat: at most one distinct value per
    :data:`DISCRETE_RECORDS` records, so that on average each value is held by that many
    records and a frequency table of the column labels most of them. Its released count margin, sum
    and sum of squares are then up to three equations in the few counts the frequency
    table hides (the rare values and their complements), and integrality and
    non-negativity pin more (R6-1): four stage codes, an age with one 99-year-old. A
    continuous column (a cost in cents, a measurement) has mostly distinct values: a
    frequency table pools them (or cannot take the column at all), so no count of a
    value is released for the sums to complete, and only a cell taking two or three
    values is judged a partition (a cell's count and sum alone then solve for them)."""
    present = values[~np.isnan(values)]
    distinct = len(pd.unique(present))
    return None if distinct * DISCRETE_RECORDS <= len(present) else FEW_LEVELS


def short_levels(c: IntArray, v: FloatArray, u: IntArray | None, size: int, k: int,
                 n_values: IntArray | None = None, most: int | None = FEW_LEVELS) -> Mask:
    """Per cell (``c``: each record's, ``v`` its value, ``u`` its person or None), whether
    its value takes 2..``most`` distinct values (any number from 2 with ``most`` None: a
    discrete column, :func:`partition_bound`) and one of them is held by 1..k-1
    contributors (records, or distinct persons with ``u``): a short cell of the partition,
    as the joint route's ``level_cells`` (a boolean's sum is the count of its holders).
    ``n_values``: each cell's distinct values if known (:class:`CellAggregates`), to look
    only at the few-valued cells' records (a continuous column has almost none)."""
    out = np.zeros(size, dtype=bool)
    top = np.iinfo(np.int64).max if most is None else most
    if n_values is not None:
        few = (n_values[c] >= 2) & (n_values[c] <= top)
        c, v, u = c[few], v[few], (None if u is None else u[few])
    if not len(c):
        return out
    _, level = np.unique(v, return_inverse=True)
    n_levels = int(level.max()) + 1
    # (cell, level) in one int64: the grid's cells times the record count stays far
    # below 2^63 for any table check_size admits.
    pair, pairs = pd.factorize(c.astype(np.int64) * n_levels + level.ravel())
    pair_cell = np.asarray(pairs, dtype=np.int64) // n_levels
    if u is None:
        holders = np.bincount(pair, minlength=len(pairs))
    else:
        span = int(u.max()) + 1
        held = pd.unique(pair.astype(np.int64) * span + u)
        holders = np.bincount(held // span, minlength=len(pairs))
    levels = np.bincount(pair_cell, minlength=size)
    short = np.bincount(pair_cell, holders < k, minlength=size) > 0
    return short & (levels >= 2) & (levels <= top)
