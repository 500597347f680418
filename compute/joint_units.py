"""Persons, not records, as the unit of a joint part's disclosure rules.

A dataset of episodes holds several records per patient. The statistics route counts a
cell's contributors as the distinct persons behind its records and sums a person's records
before the dominance rules (:mod:`compute.sdc.units`); a joint part did neither, so a
cell of k episodes of one patient passed the threshold, and a patient whose many moderate
episodes together dominated a sum passed nk and p%. Where the provider's dataset declares
identifier fields its agent numbers the records' persons
(:func:`compute.sdc.units.contributor_codes`, hashed under a key drawn for the part and
dropped with it) and the joint rules take them here; without identifier fields every
record is a person of its own and the rules are unchanged.

Per provider, like every joint rule: a person with records at two providers is two
persons to the rules, one at each, and each provider's cell of that person is short on
its own, so the rule stays conservative.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = Any  # numpy arrays (the aggregation's own alias)


def cell_sizes(cells: Array, live: Array, units: Array | None) -> Array:
    """Per cell index, the number of its contributors among the ``live`` records: records
    without ``units``, distinct persons with them."""
    if units is None:
        return np.bincount(cells[live], minlength=1)
    width = int(units.max(initial=0)) + 1
    pairs = np.unique(cells[live].astype(np.int64) * width + units[live])
    return np.bincount(pairs // width, minlength=1)


def contributors(mask: Array, units: Array | None) -> int:
    """How many contributors the records of ``mask`` are."""
    if units is None:
        return int(np.count_nonzero(mask))
    return int(np.unique(units[mask]).size)


def value_holders(x: Array, inside: Array, units: Array | None) -> Array:
    """Per distinct value of ``x`` inside the set, how many contributors hold it."""
    if units is None:
        return np.unique(x[inside], return_counts=True)[1]
    _, code = np.unique(x[inside], return_inverse=True)
    code = code.ravel().astype(np.int64)
    width = int(units.max(initial=0)) + 1
    pairs = np.unique(code * width + units[inside])
    return np.bincount(pairs // width)


def per_person(contrib: Array, cells: Array, units: Array
               ) -> tuple[Array, Array, Array]:
    """Contributions summed per (cell, person): the summed contributions, each sum's cell,
    and each record's index into them (-1 outside every cell)."""
    inside = cells >= 0
    width = int(units.max(initial=0)) + 1
    key = cells[inside].astype(np.int64) * width + units[inside]
    keys, inverse = np.unique(key, return_inverse=True)
    inverse = inverse.ravel()
    summed = np.bincount(inverse, contrib[inside], minlength=len(keys))
    index = np.full(len(cells), -1, dtype=np.int64)
    index[inside] = inverse
    return summed, keys // width, index


def at_most_per_person(units: Array, per_person: int, rng: Any = None) -> Array:
    """A mask keeping at most ``per_person`` records of each person, chosen uniformly at
    random (contribution bounding: a DP aggregate's sensitivity is then per person; the
    choice is independent of the values, so it costs no privacy of its own)."""
    rng = np.random.default_rng() if rng is None else rng
    n = len(units)
    order = np.lexsort((rng.random(n), units))
    grouped = units[order]
    first = np.r_[0, np.flatnonzero(grouped[1:] != grouped[:-1]) + 1]
    starts = np.repeat(first, np.diff(np.r_[first, n]))
    keep = np.zeros(n, dtype=bool)
    keep[order[np.arange(n) - starts < per_person]] = True
    return keep


def person_totals(contrib: Array, units: Array | None) -> Array:
    """Contributions summed per person (one cell); records as they are without units."""
    if units is None:
        return contrib
    return np.bincount(units, contrib)
