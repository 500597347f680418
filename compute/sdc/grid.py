"""Encoding a frame's dimension columns as integer codes on a grid with margin slots.

Cell arrays have shape ``(K_1 + 1, …, K_d + 1)``: index ``K_i`` along axis ``i`` is the
total over dimension ``i``. All work is on codes (one factorization per column, then
numpy), never a Python loop over records.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from compute.errors import InvalidInput
from compute.sdc.policy import SDCPolicy
from compute.sdc.result import MARGIN

IntArray = np.ndarray[Any, np.dtype[np.int64]]
MAX_DIMS = 4


@dataclass(frozen=True, eq=False)
class Grid:
    dims: tuple[str, ...]
    labels: tuple[tuple[Hashable, ...], ...]
    codes: tuple[IntArray, ...]  # per dim, one code per record, -1 where missing/unlisted

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(lab) for lab in self.labels)

    @property
    def full_shape(self) -> tuple[int, ...]:
        return tuple(k + 1 for k in self.shape)

    def present(self) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """Records whose every dimension has a listed category."""
        ok = np.ones(len(self.codes[0]) if self.codes else 0, dtype=bool)
        for c in self.codes:
            ok &= c >= 0
        return ok

    def cell_codes(self, subset: tuple[bool, ...], rows: np.ndarray[Any, Any]) -> IntArray:
        """Flat index into the full (margined) array of each record in ``rows``, for the
        marginal table over the dims flagged in ``subset`` (others at their margin slot)."""
        flat = np.zeros(int(rows.sum()) if rows.dtype == bool else len(rows), dtype=np.int64)
        for axis, keep in enumerate(subset):
            stride = int(np.prod(self.full_shape[axis + 1:], dtype=np.int64))
            part = self.codes[axis][rows] if keep else np.int64(self.shape[axis])
            flat += part * stride
        return flat

    def index(self, margins: bool) -> pd.Index:
        """Cell labels in C order of the full array (or of the interior if no margins)."""
        if not self.dims:
            return pd.Index([MARGIN], name="all")
        levels = [list(lab) + ([MARGIN] if margins else []) for lab in self.labels]
        if len(self.dims) == 1:
            return pd.Index(levels[0], name=self.dims[0], dtype=object)
        return pd.MultiIndex.from_product(levels, names=list(self.dims))


def subsets(ndim: int, margins: bool) -> list[tuple[bool, ...]]:
    """Which dims each marginal sub-table keeps: all 2^d of them, or the full table only."""
    if not margins:
        return [(True,) * ndim]
    return list(itertools.product((True, False), repeat=ndim))


def interior(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The cells that are not totals along any dimension."""
    return a[tuple(slice(0, n - 1) for n in a.shape)]


def with_margins(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Append, along each axis in turn, the sum over that axis (additive cells only).

    Summing axis i after axes < i were extended yields every marginal sub-table,
    down to the grand total in the last corner.
    """
    for axis in range(a.ndim):
        a = np.concatenate([a, a.sum(axis=axis, keepdims=True)], axis=axis)
    return a


def check_dims(frame: pd.DataFrame, dims: Sequence[str], low: int, field: str = "dims"
               ) -> tuple[str, ...]:
    if not isinstance(frame, pd.DataFrame):
        raise InvalidInput("frame", "type", "frame must be a pandas DataFrame")
    if isinstance(dims, str) or not isinstance(dims, Sequence):
        raise InvalidInput(field, "type", f"{field} must be a list of column names")
    out = tuple(dims)
    if not low <= len(out) <= MAX_DIMS:
        raise InvalidInput(field, "count", f"{field} must name from {low} to {MAX_DIMS} columns")
    if len(set(out)) != len(out):
        raise InvalidInput(field, "unique", f"{field} must not repeat a column")
    for d in out:
        check_column(frame, d, field)
    return out


def check_column(frame: pd.DataFrame, name: object, field: str) -> str:
    if not isinstance(name, str):
        raise InvalidInput(field, "type", f"{field} must name columns by string")
    if name not in frame.columns:
        raise InvalidInput(field, "column", f"column {name!r} is not among the permitted columns")
    return name


def _encode(series: pd.Series, listed: Sequence[Hashable] | None, dim: str
            ) -> tuple[IntArray, tuple[Hashable, ...]]:
    if listed is not None:
        cats = list(listed)
        if len(set(cats)) != len(cats) or any(pd.isna(c) for c in cats):
            raise InvalidInput("categories", "unique",
                               f"categories of {dim!r} must be distinct and not missing")
        codes = pd.Categorical(series, categories=cats).codes
        return codes.astype(np.int64), tuple(cats)
    if isinstance(series.dtype, pd.CategoricalDtype):
        # Declared categories are schema, not data: unobserved ones stay as empty cells.
        return (np.asarray(series.cat.codes, dtype=np.int64),
                tuple(series.cat.categories.tolist()))
    try:
        codes, uniques = pd.factorize(series, sort=True)
    except TypeError:  # mixed, unorderable labels: keep first-seen order
        codes, uniques = pd.factorize(series, sort=False)
    return np.asarray(codes, dtype=np.int64), tuple(uniques.tolist())


def encode(frame: pd.DataFrame, dims: tuple[str, ...],
           categories: Mapping[str, Sequence[Hashable]] | None) -> Grid:
    if categories is not None:
        if not isinstance(categories, Mapping):
            raise InvalidInput("categories", "type", "categories must map a column to a list")
        for k in categories:
            if k not in dims:
                raise InvalidInput("categories", "column",
                                   f"categories names {k!r}, which is not a dimension")
    codes, labels = [], []
    for d in dims:
        c, lab = _encode(frame[d], None if categories is None else categories.get(d), d)
        if any(isinstance(x, str) and x == MARGIN for x in lab):
            raise InvalidInput(d, "margin_label",
                               f"{d!r} holds the category {MARGIN!r}, which labels totals")
        codes.append(c)
        labels.append(lab)
    return Grid(dims, tuple(labels), tuple(codes))


def check_size(grid: Grid, margins: bool, policy: SDCPolicy) -> None:
    shape = grid.full_shape if margins else grid.shape
    # Python ints: no overflow on a product of many large category counts.
    cells = 1
    for k in shape:
        cells *= k
    if cells > policy.max_cells:
        raise InvalidInput("dims", "max_cells",
                           f"the table would have more than {policy.max_cells} cells (max_cells)")
