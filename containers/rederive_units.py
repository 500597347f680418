"""Contributors are persons on the script route, where the dataset says whose records are.

A dataset of episodes holds several records per person: twelve dialysis episodes of one
patient are a group of twelve records but one contributor, and the group's sum is that
patient's total. Where the provider declared identifier fields, the agent numbers each
record's person (``unitids.npy``, :mod:`containers.jobdir`; never in a container) and
the re-derivation (:mod:`containers.rederive`) counts distinct persons for every
threshold (a row, a statistic's values and each of its few values, the groups a table
must hold and those its margins leave out), and sums each person's records before nk and
p%. ``units`` None: each record is its own contributor, as on a dataset without an
identifier.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from compute.sdc import FEW_LEVELS, SDCPolicy, short_levels

Units = np.ndarray[Any, np.dtype[np.int64]] | None
Bools = np.ndarray[Any, np.dtype[np.bool_]]


def distinct(cell: np.ndarray[Any, np.dtype[np.int64]], units: Units, chosen: Bools,
             size: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Per cell (``cell``: each record's, 0..size-1), the contributors among the
    ``chosen`` records: records, or with ``units`` distinct persons."""
    if units is None:
        return np.bincount(cell[chosen], minlength=size)
    # One int64 per (cell, person) (both below the record count: no overflow short of
    # three billion records), deduplicated by hashing, not by sorting.
    span = int(units.max(initial=0)) + 1
    pairs = pd.unique(cell[chosen] * span + units[chosen])
    return np.bincount(pairs // span, minlength=size)


def holders(units: Units, mask: Bools) -> int:
    """The contributors among the records of ``mask``."""
    return int(mask.sum()) if units is None else int(pd.unique(units[mask]).size)


def contributions(values: np.ndarray[Any, np.dtype[np.float64]], units: Units,
                  spread: bool) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Each contributor's share of a cell, for nk and p%: |x| of a person's records
    summed (a sum, a mean); with ``spread`` (a standard deviation) the squared
    deviations from the cell's mean of the records, summed per person the same way, as
    the statistics route does."""
    share = (values - values.mean()) ** 2 if spread else values
    if units is not None:
        _, person = np.unique(units, return_inverse=True)
        share = np.bincount(person.ravel(), share)
    return np.asarray(share if spread else np.abs(share), dtype=np.float64)


def group_holders(keys: list[pd.Series], units: Units, sizes: pd.Series) -> pd.Series:
    """Per group of the input (``sizes``: its records per key combination), its
    contributors."""
    if units is None:
        return sizes
    persons = pd.Series(units, index=keys[0].index).groupby(keys).nunique()
    return persons.reindex(sizes.index, fill_value=0)


def short_level(values: np.ndarray[Any, np.dtype[np.float64]], k: int, units: Units,
                most: int | None = FEW_LEVELS) -> bool:
    """Whether a cell's values take two to ``most`` distinct values (any number from two
    with ``most`` None: a discrete column, :func:`compute.sdc.partition_bound` of the
    input's whole column), one held by 1..k-1 contributors: a partition of the cell whose
    part is a short cell (the sum of a 0/1 column is its holders' count; beside the
    column's frequency table the sums solve for the counts it hides). The statistics
    route's rule (:func:`compute.sdc.short_levels`), whatever statistic the script
    released."""
    cell = np.zeros(len(values), dtype=np.int64)
    return bool(short_levels(cell, values, units, 1, k, most=most)[0])


def dominated(values: np.ndarray[Any, np.dtype[np.float64]], spread: bool,
              policy: SDCPolicy, units: Units) -> str | None:
    """The nk or p% rule a cell's :func:`contributions` hit, if any. For a standard
    deviation (``spread``) the squared deviations from the cell mean count, as the
    statistics route's within-group variance: one record far from many alike dominates
    the spread, and the mean and std then give its value, though it is small beside the
    sum."""
    a = np.sort(contributions(values, units, spread))[::-1]
    total = float(a.sum())
    if total <= 0:
        return None
    for r in policy.nk_rules:
        if float(a[:r.n].sum()) >= r.k * total:
            return "dominance"
    if policy.p_percent > 0 and len(a) >= 1:
        second = float(a[1]) if len(a) > 1 else 0.0
        if total - float(a[0]) - second < policy.p_percent * float(a[0]):
            return "p_percent"
    return None
