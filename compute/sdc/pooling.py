"""Rare categories of a dimension pooled under one fixed label before tabulation.

A table publishes its dimensions' category labels whatever its cells say: a category
held by one record is that record's value, even when every cell of its line is
suppressed. So a category held by fewer than ``min_count`` records of the analysis's
population (records with every dimension present) is recoded, before the table is
computed, into a single bucket per dimension labelled :data:`POOLED`. The bucket is then
an ordinary category: threshold, dominance and secondary suppression apply to its cells
like any other, and no label comes from fewer than ``min_count`` records.

The recoded columns are categoricals (kept labels in sorted order, then the bucket), so
the grid encoder (:func:`compute.sdc.grid.encode`) reads their codes without a second
factorization: one sort per dimension, linear otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from compute.errors import InvalidInput

#: The label of a dimension's pooled rare categories. Data holding it is refused, as
#: data holding the margin label is: a bucket must not be mistaken for a data value.
POOLED = "Other (rare)"


def _factorize(series: pd.Series) -> tuple[np.ndarray[Any, np.dtype[np.int64]], list[Any]]:
    try:
        codes, uniques = pd.factorize(series, sort=True)
    except TypeError:  # mixed, unorderable labels: keep first-seen order
        codes, uniques = pd.factorize(series, sort=False)
    return np.asarray(codes, dtype=np.int64), list(uniques.tolist())


def _holders(codes: np.ndarray[Any, np.dtype[np.int64]], present: np.ndarray[Any, Any],
             units: np.ndarray[Any, np.dtype[np.int64]] | None, size: int
             ) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Per category, the records (or distinct units) of the population holding it."""
    if units is None:
        return np.bincount(codes[present], minlength=size)
    pairs = np.unique(np.stack([codes[present], units[present]]), axis=1)
    return np.bincount(pairs[0], minlength=size)


def pool_rare_categories(frame: pd.DataFrame, dims: Sequence[str], min_count: int, *,
                         unit: str | None = None) -> pd.DataFrame:
    """``frame`` with each of ``dims`` recoded: categories held by fewer than
    ``min_count`` records that have every dimension present become :data:`POOLED`.
    With ``unit`` (the contributor column), by fewer than ``min_count`` distinct units:
    twelve records of one patient are one holder of their category.

    Categories seen only on records outside that population (another dimension missing)
    are set missing: those records are left out of the table anyway, and an empty bucket
    would still say that such a value exists. Raises InvalidInput if a dimension already
    holds the label :data:`POOLED`.
    """
    if not dims:
        return frame
    present = np.ones(len(frame), dtype=bool)
    for d in dims:
        present &= frame[d].notna().to_numpy()
    out = frame.copy(deep=False)
    units = None if unit is None else np.asarray(pd.factorize(frame[unit])[0], dtype=np.int64)
    for d in dims:
        series = frame[d]
        if not pd.api.types.is_numeric_dtype(series) and bool((series == POOLED).any()):
            raise InvalidInput(d, "pooled_label",
                               f"{d!r} holds the category {POOLED!r}, which labels pooled "
                               "rare categories")
        codes, uniques = _factorize(series)
        held = _holders(codes, present, units, len(uniques))
        kept = held >= min_count
        pooled = (held > 0) & ~kept
        remap = np.full(len(uniques) + 1, -1, dtype=np.int64)  # last slot: missing (-1)
        remap[np.flatnonzero(kept)] = np.arange(int(kept.sum()), dtype=np.int64)
        labels = [u for u, k in zip(uniques, kept, strict=True) if k]
        if pooled.any():
            remap[np.flatnonzero(pooled)] = len(labels)
            labels.append(POOLED)
        out[d] = pd.Categorical.from_codes(remap[codes],
                                           categories=pd.Index(labels, dtype=object))
    return out
