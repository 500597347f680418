"""A discrete value column's magnitude cell beside the frequency table of its values.

A magnitude cell of a discrete column (:func:`compute.sdc.magnitude_cells.partition_bound`)
is a partition by value, and each value's holders are held to the threshold
(``short_levels``). That alone leaves the frequency table's complements: a cell whose
every value is held by ``min_count`` or more may still have counts hidden in its line of
the frequency table by the same dimensions and the column, to protect another line's
small count, and the cell's sums solve for them (R6-1d). :func:`value_lines` finds those
cells, for the magnitude table to suppress as it suppresses a short one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from compute.errors import InvalidInput
from compute.sdc.frequency import count_cells, distinct_per_cell, frequency_hits, withheld_cells
from compute.sdc.grid import MAX_DIMS, Grid, IntArray, check_size
from compute.sdc.magnitude_cells import FloatArray
from compute.sdc.policy import Action, SDCPolicy
from compute.sdc.pooling import POOLED
from compute.sdc.result import Mask
from compute.sdc.secondary import protect_held


def value_lines(grid: Grid, x: FloatArray, units: IntArray | None, policy: SDCPolicy
                ) -> Mask:
    """Cells (flat, full margined grid) whose line of the frequency table by the same
    dimensions and the value ``x`` hides a count above zero: for a discrete value column,
    where the cell's sums may not be released.

    A cell's count, sum and sum of squares are equations in its line's counts. Where every
    count of the line is released the sums follow from them and add nothing; where the
    line hides some (the complements of another line's small count), the sums solve for
    them, and the small count is a released margin less them (R6-1d). The table is the
    route's: the grid's (pooled) dimensions, and the value's categories held by fewer than
    ``min_count`` contributors pooled into one. Where it cannot be formed (a fifth
    dimension, too many cells) every cell is taken as hidden: its margins could still be
    asked. A hidden empty cell (the ``zeros`` rule) adds nothing to a sum and does not
    count by itself; the complements hidden around it do."""
    size = int(np.prod(grid.full_shape, dtype=np.int64))
    if len(grid.dims) >= MAX_DIMS:
        return np.ones(size, dtype=bool)
    ok = (grid.present() if grid.dims else np.ones(len(x), dtype=bool)) & ~np.isnan(x)
    values, level = np.unique(x[ok], return_inverse=True)
    level = level.ravel()
    if units is None:
        holders = np.bincount(level, minlength=len(values))
    else:
        pairs = pd.unique(level.astype(np.int64) * (int(units.max()) + 1) + units[ok])
        holders = np.bincount(pairs // (int(units.max()) + 1), minlength=len(values))
    kept = holders >= policy.min_count
    remap = np.where(kept, np.cumsum(kept) - 1, int(kept.sum()))
    labels: tuple[Any, ...] = tuple(values[kept].tolist())
    if not kept.all():
        labels += (POOLED,)
    codes = np.full(len(x), -1, dtype=np.int64)
    codes[ok] = remap[level]
    full = Grid((*grid.dims, "value"), (*grid.labels, labels), (*grid.codes, codes))
    try:
        check_size(full, True, policy)
    except InvalidInput:
        return np.ones(size, dtype=bool)
    rows = full.present()
    counts = count_cells(full, rows)
    contributors = counts if units is None else distinct_per_cell(
        full, rows, units, counts.size).reshape(counts.shape)
    primary, held = withheld_cells(frequency_hits(counts, contributors, policy), policy)
    hidden = protect_held(primary, held, counts, counts == 0,
                          policy.zeros is not Action.SUPPRESS) | held
    return np.asarray((hidden & (counts > 0)).any(axis=-1).ravel(), dtype=bool)
