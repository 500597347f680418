"""Differentially private statistics on the trusted route: noise instead of suppression.

A spec with ``dp`` is computed here rather than by the disclosure rules of
:mod:`compute.sdc`. Privacy unit (add/remove neighbours): a person where the frame has
contributor numbers (the dataset declares identifier fields:
:func:`compute.statistics.with_units`), else a record. A person's records beyond the
spec's ``max_records_per_person`` (L) are dropped first, chosen at random whatever their
values (contribution bounding, Wilson et al., "Differentially private SQL with bounded
user contribution", PoPETs 2020); with records as the unit L is 1. ``epsilon`` is split
evenly over the spec's analyses (sequential composition); a magnitude analysis splits its
share again between its counts and its sums. Only the interior cells of a table are
noised, each record lying in exactly one of them, so one unit changes them by at most L
in all (L1 sensitivity L for counts, ``L * max(|lo|, |hi|)`` for sums of values clipped to
the spec's bounds); margins are sums of the noised interior and means are noised sums
over noised counts, both post-processing, which costs no privacy. A cell whose noised
count is below the minimum cell count is not shown (post-processing too). Samplers:
:mod:`compute.noise` (OpenDP), whose privacy maps give the recorded epsilons.

The dropping biases the figures: counts and sums leave out the records of persons beyond
L, so they are low by those records (with L = 1 a frequency table counts persons, each in
the cell of one of their records), and a mean weighs a person with many records as one
with L. A larger L keeps more records at the price of L times the noise.

What it does not do: noised figures are released without the differencing audit or the
SDC rules (the guarantee covers differencing and dominance up to ``epsilon``). The
category labels are not noised: as on the rule-based route, a dimension's categories held
by fewer than the minimum cell count are pooled under one fixed label
(:mod:`compute.sdc.pooling`), and number columns are never dimensions
(:mod:`compute.statspec`). Which categories are pooled depends on exact counts, so the
label set is outside the ``epsilon`` guarantee; it is a k-threshold release, as on the
rule-based route.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from compute import noise, sdc, statistics
from compute.sdc.grid import encode, with_margins
from compute.statspec import FrequencyTable, MagnitudeTable, StatisticsSpec, privacy_unit

NOISED = "noised"


def _labels(grid: Any) -> list[dict[str, Any]]:
    index = grid.index(True)
    out = []
    for key in index:
        labels = key if isinstance(key, tuple) else (key,)
        out.append({d: (v.item() if isinstance(v, np.generic) else v)
                    for d, v in zip(grid.dims, labels, strict=False)})
    return out or [{}]


def _interior_codes(grid: Any, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    shape = grid.shape
    flat = np.zeros(int(rows.sum()), dtype=np.int64)
    for axis, codes in enumerate(grid.codes):
        flat += codes[rows] * int(np.prod(shape[axis + 1:], dtype=np.int64))
    return flat


def _cells(labels: list[dict[str, Any]], values: list[Any], shown: list[bool]
           ) -> list[dict[str, Any]]:
    # A hidden cell looks like the checked route's (statistics.HIDDEN): no per-cell rules.
    return [{"cell": lab, "value": v if ok else None,
             "status": NOISED if ok else statistics.HIDDEN, "rules": []}
            for lab, v, ok in zip(labels, values, shown, strict=True)]


def _outcome(shown: list[bool]) -> str:
    if all(shown):
        return sdc.Outcome.RELEASED.value
    return sdc.Outcome.PARTIAL.value if any(shown) else sdc.Outcome.WITHHELD.value


def bounded_contributions(units: np.ndarray[Any, Any], limit: int,
                          rng: np.random.Generator) -> np.ndarray[Any, Any]:
    """Which records are kept: at most ``limit`` of each person's (``units``: one person
    number per record), a uniform random choice among them. The choice depends on
    nothing but the person numbers and ``rng``, never on a record's values or on another
    person's records, so adding or removing one person changes at most ``limit`` kept
    records and nothing else (the truncation is ``limit``-stable)."""
    n = len(units)
    keep = np.zeros(n, dtype=bool)
    if n == 0:
        return keep
    # By person, then by a random priority: the first ``limit`` of each run are kept.
    order = np.lexsort((rng.permutation(n), units))
    ordered = units[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    keep[order[np.arange(n) - run_start < limit]] = True
    return keep


def _noised_counts(grid: Any, rows: np.ndarray[Any, Any], epsilon: float, per_unit: int
                   ) -> tuple[np.ndarray[Any, Any], noise.Noised]:
    shape = grid.shape
    size = int(np.prod(shape, dtype=np.int64))
    counts = np.bincount(_interior_codes(grid, rows), minlength=size)
    drawn = noise.integer_noise(counts.tolist(), per_unit / epsilon, per_unit)
    full = with_margins(np.asarray(drawn.values, dtype=np.int64).reshape(shape))
    return full.ravel(), drawn


def _frequency(frame: pd.DataFrame, a: FrequencyTable, epsilon: float,
               policy: sdc.SDCPolicy, per_unit: int) -> dict[str, Any]:
    grid = encode(frame, a.dims, None)
    counts, drawn = _noised_counts(grid, grid.present(), epsilon, per_unit)
    shown = [bool(c >= policy.min_count) for c in counts]
    reasons = [] if all(shown) else [sdc.describe(sdc.Rule.THRESHOLD, policy)
                                     + " (noised count)"]
    return {"kind": "frequency", "dims": list(a.dims), "outcome": _outcome(shown),
            "rules": [] if all(shown) else [sdc.Rule.THRESHOLD.value], "reasons": reasons,
            "dp": {**drawn.describe(), "sensitivity": per_unit},
            "cells": _cells(_labels(grid), [int(c) for c in counts], shown)}


def _magnitude(frame: pd.DataFrame, a: MagnitudeTable, epsilon: float, bounds: tuple[
        float, float], policy: sdc.SDCPolicy, per_unit: int) -> dict[str, Any]:
    grid = encode(frame, a.dims, None)
    x = pd.to_numeric(frame[a.value], errors="coerce").to_numpy(np.float64)
    rows = (grid.present() if a.dims else np.ones(len(frame), dtype=bool)) & ~np.isnan(x)
    counts, count_noise = _noised_counts(grid, rows, epsilon / 2, per_unit)
    lo, hi = bounds
    clipped = np.clip(x[rows], lo, hi)
    shape = grid.shape
    size = int(np.prod(shape, dtype=np.int64))
    sums = np.bincount(_interior_codes(grid, rows), weights=clipped, minlength=size)
    bound = per_unit * max(abs(lo), abs(hi))
    sum_noise = noise.real_noise(sums.tolist(), bound / (epsilon / 2), bound)
    noised_sums = with_margins(np.asarray(sum_noise.values).reshape(shape)).ravel()
    shown = [bool(c >= policy.min_count) for c in counts]
    labels = _labels(grid)
    tables = []
    for stat in a.statistics:
        values: list[float | None]
        if stat.value == "sum":
            values = [float(v) for v in noised_sums]
        else:
            values = [float(s / c) if c > 0 else None for s, c in zip(noised_sums, counts,
                                                                     strict=True)]
        tables.append({"statistic": stat.value, "kind": stat.value, "outcome": _outcome(shown),
                       "rules": [] if all(shown) else [sdc.Rule.THRESHOLD.value],
                       "reasons": [] if all(shown) else [
                           sdc.describe(sdc.Rule.THRESHOLD, policy) + " (noised count)"],
                       "cells": _cells(labels, values, shown)})
    return {"kind": "magnitude", "dims": list(a.dims), "value": a.value,
            "dp": {"counts": {**count_noise.describe(), "sensitivity": per_unit},
                   "sums": {**sum_noise.describe(), "sensitivity": bound,
                            "bounds": [lo, hi]}},
            "tables": tables}


def compute_dp(frame: pd.DataFrame, spec: StatisticsSpec, policy: sdc.SDCPolicy,
               rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Every analysis of a ``dp`` spec, noised; the document says so at every level.
    ``rng`` chooses the records kept of persons with more than the spec's limit (fresh
    from the operating system's entropy unless given)."""
    assert spec.dp is not None
    share = spec.dp.epsilon / len(spec.analyses)
    persons = statistics.UNIT in frame.columns
    per_unit = spec.dp.max_records_per_person if persons else 1
    if persons:
        # Bounded once for the whole job: every analysis reads the same L records of a
        # person, so the job as a whole is L-stable and its epsilon composes as stated.
        units = frame[statistics.UNIT].to_numpy(np.int64)
        kept = bounded_contributions(units, per_unit, rng or np.random.default_rng())
        frame = frame[kept].reset_index(drop=True)
    analyses = []
    for a in spec.analyses:
        # Labels are published unnoised: categories held by fewer than the minimum cell
        # count are pooled first, as on the rule-based route.
        source = statistics.tabulated(frame, a, policy)
        if isinstance(a, FrequencyTable):
            analyses.append(_frequency(source, a, share, policy, per_unit))
        else:
            assert isinstance(a, MagnitudeTable)
            analyses.append(_magnitude(source, a, share, spec.dp.bounds[a.value], policy,
                                       per_unit))
    return {"version": 1, "engine": statistics.ENGINE,
            "dp": {"epsilon": spec.dp.epsilon, "delta": 0.0,
                   **privacy_unit(spec.dp, persons),
                   "composition": "sequential: epsilon split evenly over the analyses",
                   "samplers": "OpenDP: discrete Laplace (counts), Laplace (sums)"},
            "analyses": analyses}
