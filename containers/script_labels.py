"""The scopes of a re-derived script table's populations, and their labels.

A table's populations (:mod:`containers.script_audit`) are its rows and the totals adding
rows up gives, once per *scope*: the records in its rows (its count), then for each
statistic's column some of those records lack, those holding a value. Each population
also has labels (:func:`compute.sdc.identity.label_digest`): the key values all its
records share and the columns they must hold, spelled as the statistics route spells a
cell's, so a script's overall sum and a statistics total over the same records are one
label. The label check compares them by count across editions whose identities overlap
little (:mod:`compute.release_audit`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from compute.sdc.identity import label_digest
from containers import rederive
from containers.datasets import canonical

Bools = np.ndarray[Any, np.dtype[np.bool_]]
Labelled = tuple[str, str | None]  # a label, and the statistic column it is of (or None)


def scopes(out: rederive.Rederived) -> list[tuple[Bools, list[str]]]:
    """The records an output's populations are of: those in its rows (its count), then
    for each statistic's column whose values some of them lack, those holding one; each
    with the columns its records all hold beyond the keys (a column none of them lacks
    adds no scope but is held by the first)."""
    inside = np.logical_or.reduce(out.groups)
    found: list[tuple[Bools, list[str]]] = [(inside, [])]
    names = out.valued_columns if len(out.valued_columns) == len(out.valued) else [
        "" for _ in out.valued]
    for held, name in zip(out.valued, names, strict=True):
        covered = inside & held
        for mask, columns in found:
            if np.array_equal(covered, mask):
                columns.append(name)
                break
        else:
            found.append((covered, [name]))
    return found


def _fixed(cell: np.ndarray[Any, Any], size: int, canon: dict[str, np.ndarray[Any, Any]]
           ) -> list[list[tuple[str, str]]]:
    """Per population ``0..size-1`` of ``cell``: the key values all its records share."""
    out: list[list[tuple[str, str]]] = [[] for _ in range(size)]
    inside = cell >= 0
    for name, values in canon.items():
        by = pd.DataFrame({"c": cell[inside], "v": values[inside]}).groupby("c")["v"]
        for c, (distinct, first) in by.agg(["nunique", "first"]).iterrows():
            if distinct == 1:
                out[int(c)].append((name, str(first)))
    return out


def labels(out: rederive.Rederived, frame: pd.DataFrame, key: str, scope: Bools,
           columns: list[str], counted: bool, cell: np.ndarray[Any, Any], size: int
           ) -> list[list[Labelled]]:
    """Per population ``0..size-1`` of ``cell`` (records outside ``scope`` in none): its
    labels, one per set of columns its records hold: the keys alone where ``scope`` is
    the count's (``counted``), the keys and each statistic column of ``columns``; each
    with its statistic column (None: the count's)."""
    canon = {k: frame[k].astype(str).map(canonical).to_numpy()
             for k in out.keys if k in frame.columns}
    fixed = _fixed(np.where(scope, cell, -1), size, canon)
    presents: list[tuple[list[str], str | None]] = (
        [(list(out.keys), None)] if counted else []) + [
        ([*out.keys, c], c) for c in columns if c]
    return [[(label_digest(key, f, p), c) for p, c in presents] for f in fixed]
