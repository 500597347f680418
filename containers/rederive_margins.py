"""What a script table gives away beside its rows: its lines and the totals they add up to.

Rows add up. The sum of a line's rows (all keys fixed but some; with none fixed, the
whole table) is that line's total over the records in its rows, and the line's total
over all its records is obtainable too: from a table of overall figures, a table over
fewer keys, or another route. Where the two differ by 1 to k-1 records, the difference
is those left-out records' count and sums (Hundepool et al. 2012, ch. 4.2: the reason
for secondary suppression). The re-derivation lets a table leave out groups below the
threshold, as the checks would suppress them, so such a table is flagged (rule
``complement``) for a person, not released automatically; and the union of the rows of
each line is a population the requester holds, so the differencing audit records it
beside the rows (:mod:`containers.script_audit`). A line whose records all fall in one
category of the free key is class disclosure, as on the statistics route.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from compute.sdc import SDCPolicy, partition_bound
from containers.findings import Finding
from containers.rederive_units import Bools, Units, distinct, dominated, short_level

#: Key columns beyond which a table's margins (2^keys of them) are not enumerated: such
#: a table is left to a person.
MAX_KEYS = 6

Labels = np.ndarray[Any, np.dtype[np.int64]]
#: Per 0-based header position of a value column: its input values (NaN: none) and
#: whether the statistic is a spread (a std: squared deviations dominate, not |x|).
Magnitudes = Mapping[int, tuple[np.ndarray[Any, np.dtype[np.float64]], bool]]


def complement_findings(keys: Sequence[np.ndarray[Any, Any]], valued: Mapping[int, Bools],
                        k: int, units: Units = None, magnitudes: Magnitudes | None = None,
                        policy: SDCPolicy | None = None) -> list[Finding]:
    """``complement`` findings of a table whose rows are exactly the input's groups (over
    the key arrays ``keys``, one value per record) of ``k`` contributors or more. For
    every margin of the table (the total, and each combination of fixed keys short of
    all) whose total holds ``k`` or more contributors, the contributors in no row must
    number 0 or ``k`` or more; likewise those holding a value of a statistic's column
    (``valued``: per 0-based header position, which records hold a value). Contributors
    are records, or with ``units`` the distinct persons (:mod:`containers.rederive_units`).
    With ``magnitudes`` and ``policy``, the left-out records of every margin cell must
    also pass nk and p% on each value column, as a row does (``_dominated_left_out``)."""
    found: dict[tuple[bool, int | None], Finding] = {}
    short = _short_by_records if units is None else _short_by_persons
    for fixed, weight in short(keys, valued, k, units):
        column = None if weight == "records" else int(weight[1:]) + 1
        found.setdefault((bool(fixed), column), _finding(bool(fixed), column, k))
    if magnitudes and policy is not None:
        for fixed, pos in _dominated_left_out(keys, magnitudes, policy, units):
            found.setdefault((bool(fixed), pos + 1), _dominance_finding(bool(fixed), pos + 1))
    # A value column's finding says nothing more where the records' own finding applies.
    return [f for (line, column), f in found.items()
            if column is None or (line, None) not in found]


def _dominated_left_out(keys: Sequence[np.ndarray[Any, Any]], magnitudes: Magnitudes,
                        policy: SDCPolicy, units: Units
                        ) -> Iterator[tuple[tuple[int, ...], int]]:
    """(margin, value position) pairs where the records a margin cell leaves out (those in
    groups of fewer than k contributors) have a value sum the nk or p% rule finds
    dominated, as a row's would be, or whose values take two or three values (any number in
    a discrete column) one of which fewer than k hold (``short_level``), or who all hold
    one value (class disclosure): its total less
    its rows is that sum, a cell released implicitly, and counting its records
    (``_short_by_records``) says nothing of one record's share nor of how many hold each
    value. Persons' records are summed first where ``units`` are known."""
    codes = pd.DataFrame({j: pd.factorize(a)[0] for j, a in enumerate(keys)})
    cell = codes.groupby(list(codes.columns), sort=False).ngroup().to_numpy(np.int64)
    everyone = np.ones(len(cell), dtype=bool)
    left = (distinct(cell, units, everyone, int(cell.max(initial=0)) + 1)
            < policy.min_count)[cell]
    if not left.any():
        return
    bounds = {pos: partition_bound(values) for pos, (values, _) in magnitudes.items()}
    for fixed in _margins(len(keys)):
        margin = (codes.groupby(list(fixed), sort=False).ngroup().to_numpy(np.int64)
                  if fixed else np.zeros(len(cell), dtype=np.int64))
        # A margin cell without rows is no total less rows: its own table is checked.
        has_rows = np.zeros(int(margin.max(initial=0)) + 1, dtype=bool)
        has_rows[margin[~left]] = True
        for pos, (values, spread) in magnitudes.items():
            held = np.flatnonzero(left & ~np.isnan(values) & has_rows[margin])
            by_cell = pd.Series(held).groupby(margin[held], sort=False).indices
            for where in by_cell.values():
                records = held[where]
                persons = None if units is None else units[records]
                got = values[records]
                if (dominated(got, spread, policy, persons) is not None
                        or short_level(got, policy.min_count, persons, bounds[pos])
                        # All of them hold one value: the total less the rows says it of
                        # each (class disclosure, as of a row: R10-5).
                        or (len(got) >= 2 and got.min() == got.max())):
                    yield fixed, pos
                    break


def _dominance_finding(line: bool, column: int) -> Finding:
    where = "a line of the table (some keys fixed)" if line else "the table"
    return Finding("complement", f"the records {where} leaves out, in no row, are dominated "
                   "by a few of them in this column, or a few of them hold one of the few "
                   "values it takes there, or all hold one value: its total less its rows "
                   "gives a value close to theirs, or how many hold it", column=column)


def _margins(width: int) -> Iterator[tuple[int, ...]]:
    for size in range(width):
        yield from combinations(range(width), size)


def _short_by_records(keys: Sequence[np.ndarray[Any, Any]], valued: Mapping[int, Bools],
                      k: int, units: Units) -> Iterator[tuple[tuple[int, ...], str]]:
    """(margin, weight) pairs leaving out 1..k-1 records: from the cells' sums."""
    names = [f"k{j}" for j in range(len(keys))]
    weights = {"records": np.ones(len(keys[0]), dtype=np.int64)} | {
        f"v{pos}": held.astype(np.int64) for pos, held in valued.items()}
    frame = pd.DataFrame(dict(zip(names, keys, strict=True)) | weights)
    cells = frame.groupby(names, sort=False)[list(weights)].sum()
    left = cells.mul((cells["records"] < k).astype(np.int64), axis=0)
    for fixed in _margins(len(keys)):
        if fixed:
            total = cells.groupby(level=list(fixed)).sum()
            out = left.groupby(level=list(fixed)).sum()
        else:
            total, out = cells.sum().to_frame().T, left.sum().to_frame().T
        short = ((total >= k) & (out >= 1) & (out < k)).any()
        for weight in short.index[short.to_numpy()]:
            yield fixed, str(weight)


def _short_by_persons(keys: Sequence[np.ndarray[Any, Any]], valued: Mapping[int, Bools],
                      k: int, units: Units) -> Iterator[tuple[tuple[int, ...], str]]:
    """The same counting distinct persons: a person's records in several cells of a
    margin are one contributor of it, so counts are taken per margin from the records."""
    codes = pd.DataFrame({j: pd.factorize(a)[0] for j, a in enumerate(keys)})
    cell = codes.groupby(list(codes.columns), sort=False).ngroup().to_numpy(np.int64)
    everyone = np.ones(len(cell), dtype=bool)
    left = (distinct(cell, units, everyone, int(cell.max()) + 1) < k)[cell]
    weights = {"records": everyone} | {f"v{pos}": held for pos, held in valued.items()}
    for fixed in _margins(len(keys)):
        margin = (codes.groupby(list(fixed), sort=False).ngroup().to_numpy(np.int64)
                  if fixed else np.zeros(len(cell), dtype=np.int64))
        size = int(margin.max()) + 1
        for weight, held in weights.items():
            total = distinct(margin, units, held, size)
            out = distinct(margin, units, held & left, size)
            if ((total >= k) & (out >= 1) & (out < k)).any():
                yield fixed, weight


def _finding(line: bool, column: int | None, k: int) -> Finding:
    where = "a line of the table (some keys fixed)" if line else "the table"
    which = "records holding this column's value" if column else "records"
    return Finding("complement", f"{where} leaves out between one and {k - 1} {which}, in "
                   "no row: its total less its rows gives them", column=column)


def class_disclosure(sizes: pd.Series, keys: list[str], canon: Mapping[str, pd.Series]
                     ) -> list[Finding]:
    """A line of the table (all keys fixed but one) whose records all share one value of
    the free key, where the input has others: everyone in that group has the attribute
    (Hundepool et al. 2012, ch. 5). Flagged for a person, as on the statistics route."""
    if len(keys) < 2:
        return []
    for j, free in enumerate(keys):
        if canon[free].nunique() < 2:
            continue
        others = [lvl for lvl in range(len(keys)) if lvl != j]
        per_line = sizes[sizes > 0].groupby(level=others).size()
        if (per_line == 1).any():
            return [Finding("class_disclosure", "every record of a group falls in one "
                                                "category of a key column")]
    return []


def margin_labels(keys: Sequence[np.ndarray[Any, Any]], groups: Sequence[Bools]
                  ) -> list[Labels]:
    """Per margin of the table (its total; with two keys or more, each line: all keys
    fixed but one), each record's margin cell (-1: in no row, or in a cell of fewer than
    two rows, whose union is a row already). The populations a requester holds by adding
    rows up, for the differencing audit."""
    if not groups or not keys:
        return []
    row = np.full(len(groups[0]), -1, dtype=np.int64)
    for r, mask in enumerate(groups):
        row[mask] = r
    inside = row >= 0
    codes = [pd.factorize(a)[0] for a in keys]
    margins: list[tuple[int, ...]] = [()]
    if len(keys) >= 2:
        margins += [tuple(j for j in range(len(keys)) if j != free)
                    for free in range(len(keys))]
    out = []
    for fixed in margins:
        if fixed:
            cell = pd.DataFrame({j: codes[j] for j in fixed}).groupby(
                list(fixed), sort=False).ngroup().to_numpy(np.int64)
        else:
            cell = np.zeros(len(row), dtype=np.int64)
        # Every record of a row shares its keys, so a row lies in one cell of a margin.
        row_cell = np.full(len(groups), -1, dtype=np.int64)
        row_cell[row[inside]] = cell[inside]
        rows_per_cell = np.bincount(row_cell[row_cell >= 0],
                                    minlength=int(cell.max(initial=0)) + 1)
        kept = rows_per_cell >= 2
        if not kept.any():
            continue
        number = np.cumsum(kept) - 1
        out.append(np.where(inside & kept[cell], number[cell], -1).astype(np.int64))
    return out
