#!/usr/bin/env python3
"""Local aggregation for a joint-statistics job: runs INSIDE the provider's container.

Self-contained on purpose: the runner image has only Debian bookworm's python3 (3.11),
numpy 1.24 and pandas 1.5, and none of this project's code. It reads the normalized spec
(``JointSpec.to_json``) and the provider's projected table, and writes plaintext sufficient
statistics -- counts and real sums, never rows -- which the provider's agent then checks for
disclosure, encrypts and signs outside the container.

Usage: local_aggregate.py [SPEC [DATA [OUT]]]; defaults /job/spec.json, /in/data.csv,
/out/aggregates.json, overridable by JOINT_SPEC / JOINT_DATA / JOINT_OUT.

Output: {"version": 1, "counts": {entry: [int, ...]}, "reals": {entry: [float, ...]}} with
entry names exactly as ``compute/layout.py`` lays them out. Missing values: univariate
statistics use every non-missing value of the column (available case); covariance,
correlation and OLS use complete cases over their columns (listwise). Non-numeric text in a
numeric column counts as missing.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

AGGREGATES_VERSION = 1
NUMERIC_UNIVARIATE = {"sum", "mean", "variance", "std"}
FloatArray = Any  # numpy float64 vectors; numpy 1.24's typing differs from the host's


def _norm(v: object) -> str:
    """One spelling for a category whether it came from CSV, JSON or a DataFrame."""
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        f = float(v)
        return str(int(f)) if f.is_integer() else repr(f)
    return str(v)


def _bin_index(x: FloatArray, edges: list[float]) -> FloatArray:
    """0 = below the first edge, 1..B = bins [e_i, e_i+1) (last one closed), B+1 = above; -1 NaN."""
    e = np.asarray(edges, dtype=float)
    idx: FloatArray = np.searchsorted(e, x, side="right")
    idx[x == e[-1]] = len(e) - 1
    idx[np.isnan(x)] = -1
    return idx


def _codes(s: Any, cats: list[Any]) -> FloatArray:
    """Category index, len(cats) for values outside the public list, -1 for missing."""
    miss = s.isna().to_numpy()
    numeric_cats = all(isinstance(c, int | float) and not isinstance(c, bool) for c in cats)
    if numeric_cats and pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        codes = pd.Categorical(s.to_numpy(dtype=float, na_value=np.nan),
                               categories=[float(c) for c in cats]).codes
    elif all(isinstance(c, str) for c in cats) and s.dtype == object:
        codes = pd.Categorical(s.to_numpy(), categories=cats).codes
    else:
        codes = pd.Categorical(s.map(_norm, na_action="ignore").to_numpy(),
                               categories=[_norm(c) for c in cats]).codes
    out = np.asarray(codes, dtype=np.int64)
    out[out < 0] = len(cats)
    out[miss] = -1
    return out


def _counts(idx: FloatArray, length: int) -> list[int]:
    return [int(v) for v in np.bincount(idx[idx >= 0], minlength=length)]


def _floats(a: Any) -> list[float]:
    return [float(v) for v in np.asarray(a, dtype=float).ravel()]


def numeric_columns(df: Any, cache: dict[str, FloatArray]) -> Callable[[str], FloatArray]:
    """A column as floats (NaN for missing or non-numeric text), converted once."""
    def col(c: str) -> FloatArray:
        if c not in cache:
            s = df[c]
            if pd.api.types.is_bool_dtype(s):
                s = s.astype(float)
            cache[c] = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        return cache[c]
    return col


def local_aggregate(spec: dict[str, Any], df: Any, min_cell_count: int | None = None,
                    withdrawn: FloatArray | None = None, units: FloatArray | None = None,
                    small_cells: SmallCells | None = None) -> dict[str, Any]:
    """Sufficient statistics of one provider's table for a normalized spec.

    With ``min_cell_count`` k (the provider's permit; not under DP, whose sensitivity
    analysis assumes no cascade), records in any cell of fewer than k are first withdrawn
    from the whole job (``withdraw_small_cells``): every statistic is then computed, exactly,
    over the records kept, so no released figure less others isolates a withdrawn record.
    ``withdrawn`` (a boolean per record): records already withdrawn before that check, the
    cells too few providers hold (compute/cell_holders.py). ``units``: each record's person
    (compute/joint_units.py) where the dataset declares identifier fields: the rules then
    count and sum persons. ``small_cells``: the same withdrawal for this ``df``, ``units``
    and ``min_cell_count``, already computed (the cell-holders rounds' last round)."""
    stats = set(spec["statistics"])
    shift: dict[str, float] = spec.get("shift") or {}
    dp = spec.get("dp") or {}
    bounds: dict[str, list[float]] = dp.get("bounds") or {}
    cache: dict[str, FloatArray] = {}
    col = numeric_columns(df, cache)

    suppressed = 0
    if dp and units is not None:
        from compute import joint_units  # the agent's rules (never reached run as a script)
        # Contribution bounding: at most L records of a person (dp.max_records_per_person), so
        # the noise, scaled by L (compute/dp.py), protects persons, not records.
        bounded = joint_units.at_most_per_person(units, int(dp.get("max_records_per_person", 1)))
        if not bounded.all():
            df, units = df[bounded].reset_index(drop=True), units[bounded]
            # ``col`` reads the table it was made for: every figure below, sums included,
            # must come from the bounded records only.
            cache.clear()
            col = numeric_columns(df, cache)
    if min_cell_count is not None and not dp:
        kept, suppressed = small_cells(withdrawn) if small_cells is not None else \
            withdraw_small_cells(spec, df, col, min_cell_count, withdrawn, units)
        from compute import joint_sdc  # the agent's rules (never reached run as a script)
        # On the provider's whole columns (before the cache is cut to the records kept).
        joint_sdc.check_block_levels(spec, col, kept, min_cell_count, units)
        if not kept.all():
            df = df[kept].reset_index(drop=True)
            units = None if units is None else units[kept]
            for c in list(cache):  # the columns already converted, reduced to the kept records
                cache[c] = cache[c][kept]
            # Any column not converted yet is converted from the kept records (``col`` reads
            # the table it was made for).
            col = numeric_columns(df, cache)

    def clipped(c: str) -> FloatArray:
        """Values clipped to the public DP bounds (a DP model round: every column has them)."""
        x = col(c)
        return np.clip(x, bounds[c][0], bounds[c][1]) if c in bounds else x

    def summed(c: str) -> FloatArray:
        """Shifted values for sums; clipped to the public DP bounds when DP is on."""
        x = col(c)
        if c in bounds:
            x = np.clip(x, bounds[c][0], bounds[c][1])
        return x - shift.get(c, 0.0)

    counts: dict[str, list[int]] = {"rows": [len(df)], "disclosure.suppressed": [suppressed]}
    reals: dict[str, list[float]] = {}

    if stats & (NUMERIC_UNIVARIATE | {"count"}):
        for c in spec["columns"]:
            miss = df[c].isna().to_numpy() if not stats & NUMERIC_UNIVARIATE else np.isnan(col(c))
            n_miss = int(miss.sum())
            counts[f"col.{c}.n"], counts[f"col.{c}.missing"] = [len(df) - n_miss], [n_miss]
            if stats & NUMERIC_UNIVARIATE:
                z = np.where(miss, 0.0, summed(c))
                reals[f"col.{c}.s1"] = [float(z.sum())]
                if stats & {"variance", "std"}:
                    reals[f"col.{c}.s2"] = [float(z @ z)]

    def block(name: str, cols: list[str]) -> None:
        # One BLAS call for every cross-product: the single pass the benchmark relies on.
        x = np.column_stack([summed(c) for c in cols])
        ok = ~np.isnan(x).any(axis=1)
        if not ok.all():
            x = x[ok]
        counts[f"{name}.n"] = [int(x.shape[0])]
        reals[f"{name}.s1"] = _floats(x.sum(axis=0))
        reals[f"{name}.s2"] = _floats((x.T @ x)[np.triu_indices(len(cols))])

    if stats & {"covariance", "correlation"}:
        block("mom", list(spec["columns"]))
    if "ols" in stats:
        block("ols", [spec["ols"]["y"], *spec["ols"]["x"]])

    def histogram(prefix: str, c: str, edges: list[float]) -> None:
        idx = _bin_index(col(c), edges)
        counts[prefix] = _counts(idx, len(edges) + 1)
        counts[f"{prefix}.missing"] = [int((idx < 0).sum())]

    for c, edges in (spec.get("bins") or {}).items():
        histogram(f"hist.{c}", c, edges)
    for c, q in (spec.get("quantiles") or {}).items():
        histogram(f"q.{c}", c, q["edges"])

    if ct := spec.get("contingency"):
        r = _codes(df[ct["rows"]], ct["row_categories"])
        k = _codes(df[ct["cols"]], ct["col_categories"])
        width = len(ct["col_categories"]) + 1
        cell = np.where((r < 0) | (k < 0), -1, r * width + k)
        counts["ct"] = _counts(cell, (len(ct["row_categories"]) + 1) * width)
        counts["ct.missing"] = [int((cell < 0).sum())]

    if groups := spec.get("groups"):
        _grouped(groups, df, col, summed, counts, reals, second=not dp)
    if glm := spec.get("glm"):
        _glm_round(glm, clipped if bounds else col, counts, reals,
                   None if dp else min_cell_count, units)
    return {"version": AGGREGATES_VERSION, "counts": counts, "reals": reals}


def _group_cells(groups: dict[str, Any], df: Any, col: Callable[[str], FloatArray],
                 keys: dict[str, FloatArray] | None = None) -> tuple[FloatArray, int]:
    """Each record's group cell: 0..g-1 the Cartesian product of the keys, g 'other' (any key
    unlisted), -1 a key missing; and g. ``keys`` receives each key column's own code."""
    cell = np.zeros(len(df), dtype=np.int64)
    other = np.zeros(len(df), dtype=bool)
    missing = np.zeros(len(df), dtype=bool)
    g = 1
    for key in groups["by"]:
        if key.get("edges") is not None:
            size = len(key["edges"]) - 1
            code = _bin_index(col(key["column"]), key["edges"]) - 1
            missing |= code == -2
            other |= (code == -1) | (code == size)
        else:
            size = len(key["categories"])
            code = _codes(df[key["column"]], key["categories"])
            missing |= code == -1
            other |= code == size
        if keys is not None:
            keys[key["column"]] = code
        cell = cell * size + np.clip(code, 0, size - 1)
        g *= size
    cell[other] = g
    cell[missing] = -1
    return cell, g


def _grouped(groups: dict[str, Any], df: Any, col: Callable[[str], FloatArray],
             summed: Callable[[str], FloatArray], counts: dict[str, list[int]],
             reals: dict[str, list[float]], second: bool) -> None:
    """Cells are the Cartesian product of the keys, plus one 'other' cell (any key unlisted)."""
    cell, g = _group_cells(groups, df, col)
    counts["grp.rows"] = _counts(cell, g + 1)
    counts["grp.missing"] = [int((cell < 0).sum())]
    for v in groups["values"]:
        z = summed(v)
        ok = (cell >= 0) & ~np.isnan(z)
        counts[f"grp.{v}.n"] = _counts(cell[ok], g + 1)
        reals[f"grp.{v}.s1"] = _floats(np.bincount(cell[ok], weights=z[ok], minlength=g + 1))
        if second:
            reals[f"grp.{v}.s2"] = _floats(np.bincount(cell[ok], weights=z[ok] ** 2,
                                                       minlength=g + 1))


def _record_cells(spec: dict[str, Any], df: Any, col: Callable[[str], FloatArray],
                  min_count: int) -> tuple[list[FloatArray], list[FloatArray]]:
    """Every set of records the job releases a count (and maybe sums) over: partitions (an
    int array each, a record's cell or -1 outside it) and record sets (boolean masks).

    Explicit cells: histogram, quantile and contingency cells (missing included), group rows
    and each group value's cells (split by the value's presence: ``grp.rows[i] - grp.V.n[i]``
    is a count too). Implicit cells: for every two record sets a statistic is taken over
    (all rows, a column's present values, a block's complete cases, a histogram's or the
    groups' keyed records), the records of one outside the other -- ``col.X.n`` less the sum
    of the groups' ``n``, or ``rows`` less ``mom.n``, is such a difference; and for two
    partitions keyed on a common column, the cells of their common refinement there."""
    stats = set(spec["statistics"])
    n = len(df)
    parts: list[FloatArray] = []
    sets: list[FloatArray] = [np.ones(n, dtype=bool)]

    def present(cols: list[str]) -> FloatArray:
        return ~np.isnan(np.column_stack([col(c) for c in cols])).any(axis=1)

    keyed: list[dict[str, FloatArray]] = []  # per partition: its key columns' codes

    def partition(idx: FloatArray, missing: FloatArray, keys: dict[str, FloatArray]) -> None:
        cells = idx.astype(np.int64)
        cells[missing] = int(cells.max(initial=0)) + 1  # the missing records are a cell too
        parts.append(cells)
        sets.append(~missing)
        keyed.append(keys)

    if stats & (NUMERIC_UNIVARIATE | {"count"}):
        for c in spec["columns"]:
            sets.append(present([c]) if stats & NUMERIC_UNIVARIATE
                        else ~df[c].isna().to_numpy())
    if stats & {"covariance", "correlation"}:
        sets.append(present(list(spec["columns"])))
    if "ols" in stats:
        sets.append(present([spec["ols"]["y"], *spec["ols"]["x"]]))
    if glm := spec.get("glm"):
        sets.append(present([glm["y"], *glm["x"]]))
    hists = {**(spec.get("bins") or {}),
             **{f"q:{c}": q["edges"] for c, q in (spec.get("quantiles") or {}).items()}}
    for c, edges in hists.items():
        idx = _bin_index(col(c.removeprefix("q:")), edges)
        partition(idx, idx < 0, {c.removeprefix("q:"): idx})
    if ct := spec.get("contingency"):
        r = _codes(df[ct["rows"]], ct["row_categories"])
        k = _codes(df[ct["cols"]], ct["col_categories"])
        partition(r * (len(ct["col_categories"]) + 1) + k, (r < 0) | (k < 0),
                  {ct["rows"]: r, ct["cols"]: k})
    if groups := spec.get("groups"):
        codes: dict[str, FloatArray] = {}
        cell, g = _group_cells(groups, df, col, codes)
        partition(cell, cell < 0, codes)
        key_cell = np.where(cell < 0, g + 1, cell)
        for v in groups["values"]:
            absent = np.isnan(col(v))
            parts.append(key_cell * 2 + absent)
            sets.append((cell >= 0) & ~absent)
    from compute import joint_sdc  # the agent's rules (never reached run as a script)
    for levels, outside, level_keys in joint_sdc.level_cells(spec, df, col, min_count):
        partition(levels, outside, level_keys)
    # Two partitions keyed on a common column (an age histogram and age groups with other
    # edges) difference to the common refinement of their cuts of that column: its cells
    # are counts released implicitly.
    for i, a in enumerate(keyed):
        for b in keyed[i + 1:]:
            if shared := sorted(a.keys() & b.keys()):
                joint = np.zeros(len(df), dtype=np.int64)
                for code in [*(a[c] for c in shared), *(b[c] for c in shared)]:
                    if int(joint.max(initial=0)) > 1 << 40:  # renumber before int64 overflows
                        joint = np.unique(joint, return_inverse=True)[1].ravel()
                    joint = joint * (int(code.max(initial=0)) + 3) + code + 2  # codes >= -2
                parts.append(np.unique(joint, return_inverse=True)[1].ravel())
    return parts, list({s.tobytes(): s for s in sets}.values())


def withdraw_small_cells(spec: dict[str, Any], df: Any, col: Callable[[str], FloatArray],
                         min_cell_count: int, withdrawn: FloatArray | None = None,
                         units: FloatArray | None = None) -> tuple[FloatArray, int]:
    """The records the provider keeps, and how many cells it withdrew.

    Records in a cell of 1..k-1 (``_record_cells``) are withdrawn from the whole job, and the
    check repeats on the rest until every cell is empty or holds at least k: withdrawing
    records can leave another cell short. ``withdrawn`` records are out from the start.
    With ``units`` a cell's size is its distinct persons (compute/joint_units.py)."""
    parts, sets = _record_cells(spec, df, col, min_cell_count)
    kept = np.ones(len(df), dtype=bool) if withdrawn is None else ~np.asarray(withdrawn, bool)
    seen: set[tuple[int, ...]] = set()
    from compute import joint_sdc, joint_units  # the agent's rules (never reached as a script)
    # The column rule first, to its fixed point on the records not withdrawn beforehand:
    # which records it withdraws then depends on each column's values alone, not on the
    # job's other statistics (whose small cells could otherwise change the set it sees).
    while (dominant := joint_sdc.column_dominants(spec, col, kept, units))[0].any():
        seen |= dominant[1]
        kept &= ~dominant[0]

    def short(mask: FloatArray) -> bool:
        return 0 < joint_units.contributors(mask, units) < min_cell_count

    while True:
        out = np.zeros(len(df), dtype=bool)
        for p, cells in enumerate(parts):
            live = kept & (cells >= 0)
            sizes = joint_units.cell_sizes(cells, live, units)
            small = np.flatnonzero((sizes > 0) & (sizes < min_cell_count))
            if small.size:
                seen.update((p, int(i)) for i in small)
                out |= live & np.isin(cells, small)
        for i, a in enumerate(sets):  # each set, and each set less another (pairs are few)
            for j, b in enumerate(sets):
                cell = kept & a if i == j else kept & a & ~b
                if short(cell):
                    seen.add((-1, i, j))
                    out |= cell
        if not out.any():  # then dominance, on counts that hold
            out, dominated = joint_sdc.dominant_records(spec, df, col, kept, units)
            seen |= dominated
        if not out.any():
            return kept, len(seen)
        kept &= ~out


class SmallCells:
    """:func:`withdraw_small_cells` of one table for a given ``withdrawn`` set, remembered:
    a joint part's cell-holders rounds compute it for each round's vector and the
    aggregation needs the last round's again (the same arguments, the same outcome)."""

    def __init__(self, spec: dict[str, Any], df: Any, min_cell_count: int,
                 units: FloatArray | None = None) -> None:
        self.spec, self.df, self.k, self.units = spec, df, min_cell_count, units
        self._last: tuple[bytes, tuple[FloatArray, int]] | None = None

    def __call__(self, withdrawn: FloatArray | None) -> tuple[FloatArray, int]:
        key = b"" if withdrawn is None else np.asarray(withdrawn, dtype=bool).tobytes()
        if self._last is None or self._last[0] != key:
            col = numeric_columns(self.df, {})
            self._last = key, withdraw_small_cells(self.spec, self.df, col, self.k, withdrawn,
                                                   self.units)
        kept, suppressed = self._last[1]
        return kept.copy(), suppressed  # callers narrow their copy in place


def kept_records(spec: dict[str, Any], df: Any, min_cell_count: int | None,
                 withdrawn: FloatArray, units: FloatArray | None = None) -> FloatArray:
    """The records ``local_aggregate`` computes over, given those ``withdrawn`` first."""
    if min_cell_count is None or spec.get("dp"):
        return ~np.asarray(withdrawn, dtype=bool)
    col = numeric_columns(df, {})
    return withdraw_small_cells(spec, df, col, min_cell_count, withdrawn, units)[0]


def _lgamma(a: FloatArray) -> FloatArray:
    return np.array([math.lgamma(v) for v in np.asarray(a, dtype=float)], dtype=float)


def _xlogy(x: FloatArray, y: FloatArray) -> FloatArray:
    """x * log(y), 0 where x == 0 (the deviance's convention for y log(y / mu) at y = 0)."""
    nz = x != 0
    return np.where(nz, x, 0.0) * np.log(np.where(nz, y, 1.0))


def _glm_round(g: dict[str, Any], col: Callable[[str], FloatArray],
               counts: dict[str, list[int]], reals: dict[str, list[float]],
               min_cell_count: int | None = None, units: FloatArray | None = None) -> None:
    """One IRLS round on the complete cases: X'WX, X'Wz, deviance and log-likelihood at the
    round's coefficients (canonical links: log for count families, logit for binomial).
    With DP, ``col`` clips to the public bounds: the noise is scaled to clipped records.
    With ``min_cell_count``, a round whose weights concentrate on few records (persons,
    with ``units``) fails."""
    data = np.column_stack([col(c) for c in [g["y"], *g["x"]]])
    ok = ~np.isnan(data).any(axis=1)
    counts["glm.missing"] = [int((~ok).sum())]
    if not ok.all():
        data = data[ok]
    y = data[:, 0]
    x = np.column_stack([np.ones(len(y)), data[:, 1:]])
    family, alpha, beta = g["family"], float(g.get("alpha") or 1.0), g.get("beta")
    if beta is None:  # statsmodels' starting means
        mu = (y + 0.5) / 2 if family == "binomial" else (y + (y.mean() if len(y) else 0)) / 2
        eta = np.log(mu / (1 - mu)) if family == "binomial" else np.log(mu)
    else:
        eta = x @ np.asarray(beta, dtype=float)
        mu = 1 / (1 + np.exp(-eta)) if family == "binomial" else np.exp(eta)
    if family == "binomial":
        var = mu * (1 - mu)
        w, z = var, eta + (y - mu) / var
        dev = 2 * (_xlogy(y, y / mu) + _xlogy(1 - y, (1 - y) / (1 - mu)))
        ll = _xlogy(y, mu) + _xlogy(1 - y, 1 - mu)
    else:
        var = mu + alpha * mu * mu if family == "negative_binomial" else mu
        w, z = mu * mu / var, eta + (y - mu) / mu
        if family == "poisson":
            dev = 2 * (_xlogy(y, y / mu) - (y - mu))
            ll = y * np.log(mu) - mu - _lgamma(y + 1)
        else:
            ia = 1 / alpha
            dev = 2 * (_xlogy(y, y / mu) - (y + ia) * np.log((1 + alpha * y) / (1 + alpha * mu)))
            ll = (y * np.log(alpha * mu / (1 + alpha * mu)) - ia * np.log(1 + alpha * mu)
                  + _lgamma(y + ia) - _lgamma(y + 1) - math.lgamma(ia))
    if min_cell_count is not None:
        from compute import joint_sdc  # the agent's rules (never reached run as a script)
        # d(W z)/dy: 1 for the logit link, mu / var for the log link.
        joint_sdc.check_glm_round(x, y, w, z, np.ones(len(y)) if family == "binomial"
                                  else mu / var, min_cell_count,
                                  None if units is None else units[ok])
    xw = x * w[:, None]
    counts["glm.n"] = [len(y)]
    reals["glm.xwx"] = _floats((xw.T @ x)[np.triu_indices(x.shape[1])])
    reals["glm.xwz"] = _floats(xw.T @ z)
    reals["glm.deviance"] = [float(dev.sum())]
    reals["glm.loglik"] = [float(ll.sum())]


def main(argv: list[str]) -> int:
    paths = [os.environ.get("JOINT_SPEC", "/job/spec.json"),
             os.environ.get("JOINT_DATA", "/in/data.csv"),
             os.environ.get("JOINT_OUT", "/out/aggregates.json")]
    paths[: len(argv)] = argv[:3]
    with open(paths[0], encoding="utf-8") as fh:
        spec = json.load(fh)
    result = local_aggregate(spec, pd.read_csv(paths[1]))
    tmp = paths[2] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(result, fh, allow_nan=False)
    os.replace(tmp, paths[2])  # the agent never sees a half-written file
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
