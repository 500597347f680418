"""Statistics from exact pooled sums (requester side, after decryption and rounding).

Sums arrive as exact rationals on the 2^-40 grid, so cancellation-prone quantities
(n*S2 - S1^2, n*Sxy - Sx*Sy) are formed exactly with Fractions and only the final ratio is
rounded to float64: the only error left is each provider's float64 summation and 2^-41
quantization, not the HE path. Shifts are public constants, so sums and means are unshifted
exactly; variances and slopes do not depend on them.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from compute.glm import irls_round
from compute.layout import Sums
from compute.sdc.special import t_ppf, t_sf_two_sided
from compute.spec import GroupKey, JointSpec


@dataclass
class JointResult:
    n_providers: int
    rows: int
    suppressed_cells: int
    columns: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    covariance: dict[str, Any] | None = None
    correlation: dict[str, Any] | None = None
    ols: dict[str, Any] | None = None
    histograms: dict[str, dict[str, Any]] = field(default_factory=dict)
    contingency: dict[str, Any] | None = None
    grouped: dict[str, Any] | None = None
    quantiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    glm: dict[str, Any] | None = None  # one IRLS round (compute/glm.py)
    dp: dict[str, Any] | None = None
    ledger: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(num: Fraction, den: Fraction | int) -> float | None:
    return float(num / den) if den > 0 else None


def _var(n: int, s1: Fraction, s2: Fraction) -> float | None:
    # Clamp at 0: with DP noise n*S2 - S1^2 can go slightly negative.
    return max(float((n * s2 - s1 * s1) / (n * (n - 1))), 0.0) if n > 1 else None


def _tri(k: int, s2: list[Fraction]) -> list[list[Fraction]]:
    m = [[Fraction(0)] * k for _ in range(k)]
    pos = 0
    for i in range(k):
        for j in range(i, k):
            m[i][j] = m[j][i] = s2[pos]
            pos += 1
    return m


def _centered(sums: Sums, name: str, k: int) -> tuple[int, list[Fraction], list[list[Fraction]]]:
    """n, S_i and the exact centered cross-product matrix M_ij = S_ij - S_i S_j / n."""
    n = sums.counts[f"{name}.n"][0]
    s1 = sums.reals[f"{name}.s1"]
    s2 = _tri(k, sums.reals[f"{name}.s2"])
    if n < 1:
        return n, s1, s2
    return n, s1, [[s2[i][j] - s1[i] * s1[j] / n for j in range(k)] for i in range(k)]


def _label(key: GroupKey, i: int) -> str:
    if key.categories:
        return str(key.categories[i])
    return f"[{key.edges[i]:g}, {key.edges[i + 1]:g})"


def _quantile(counts: list[int], edges: tuple[float, ...], p: float) -> float | None:
    """Linear interpolation inside the fine bin holding the p-th quantile (error <= bin width)."""
    total = sum(max(c, 0) for c in counts)
    if total == 0:
        return None
    target = p * total
    cum = counts[0]
    if target < cum or (p == 0 and cum > 0):
        return -math.inf  # below the public grid: the grid did not cover the data
    for j in range(1, len(edges)):
        c = max(counts[j], 0)
        if c > 0 and cum + c >= target:
            return edges[j - 1] + (target - cum) / c * (edges[j] - edges[j - 1])
        cum += c
    return math.inf


def derive(spec: JointSpec, sums: Sums) -> JointResult:
    st, cnt, rl = spec.statistics, sums.counts, sums.reals
    res = JointResult(sums.n_providers, cnt["rows"][0], cnt["disclosure.suppressed"][0])
    has_cols = bool(spec.columns) and f"col.{spec.columns[0]}.n" in cnt
    for c in spec.columns if has_cols else ():
        n = cnt[f"col.{c}.n"][0]
        out: dict[str, float | int | None] = {"n": n, "missing": cnt[f"col.{c}.missing"][0]}
        if f"col.{c}.s1" in rl:
            shift = Fraction(spec.shift.get(c, 0.0))
            s1 = rl[f"col.{c}.s1"][0]
            if "sum" in st:
                out["sum"] = float(s1 + n * shift)
            if "mean" in st:
                out["mean"] = _ratio(s1 + n * shift, n)
            if st & {"variance", "std"}:
                var = _var(n, s1, rl[f"col.{c}.s2"][0])
                if "variance" in st:
                    out["variance"] = var
                if "std" in st:
                    out["std"] = None if var is None else math.sqrt(var)
        res.columns[c] = out
    if st & {"covariance", "correlation"}:
        k = len(spec.columns)
        n, _, m = _centered(sums, "mom", k)
        cov = [[float(m[i][j] / (n - 1)) if n > 1 else math.nan for j in range(k)]
               for i in range(k)]
        if "covariance" in st:
            res.covariance = {"columns": list(spec.columns), "n": n, "matrix": cov}
        if "correlation" in st:
            corr = [[cov[i][j] / math.sqrt(cov[i][i] * cov[j][j])
                     if cov[i][i] > 0 and cov[j][j] > 0 else math.nan for j in range(k)]
                    for i in range(k)]
            res.correlation = {"columns": list(spec.columns), "n": n, "matrix": corr}
    if "ols" in st:
        res.ols = _ols(spec, sums)
    for c, edges in spec.bins.items():
        h = cnt[f"hist.{c}"]
        res.histograms[c] = {"edges": list(edges), "counts": h[1:-1], "underflow": h[0],
                             "overflow": h[-1], "missing": cnt[f"hist.{c}.missing"][0]}
    if spec.contingency is not None:
        r, k_, rc, cc = spec.contingency
        w = len(cc) + 1
        table = [cnt["ct"][i * w:(i + 1) * w] for i in range(len(rc) + 1)]
        res.contingency = {"rows": r, "cols": k_, "row_categories": [*map(str, rc), "other"],
                           "col_categories": [*map(str, cc), "other"], "counts": table,
                           "missing": cnt["ct.missing"][0]}
    if spec.group_keys:
        res.grouped = _grouped(spec, sums)
    if spec.glm is not None:
        res.glm = irls_round(spec, sums).to_json()
    for c, (probs, edges) in spec.quantiles.items():
        h = cnt[f"q.{c}"]
        res.quantiles[c] = {"probs": list(probs), "values": [_quantile(h, edges, p) for p in probs],
                            "n": sum(h), "missing": cnt[f"q.{c}.missing"][0],
                            "resolution": max(b - a for a, b in itertools.pairwise(edges))}
    return res


def _ols(spec: JointSpec, sums: Sums) -> dict[str, Any]:
    """Coefficients from the exact centred sums, with the classical (homoskedastic) standard
    errors, t, two-sided p and 95 % intervals on n - k - 1 degrees of freedom, as statsmodels'
    OLS reports them; R^2 and adjusted R^2."""
    assert spec.ols_y is not None
    xs = list(spec.ols_x)
    k = 1 + len(xs)
    n, s1, m = _centered(sums, "ols", k)
    out: dict[str, Any] = {"y": spec.ols_y, "x": xs, "n": n, "beta": None, "r2": None,
                           "adj_r2": None, "coefficients": None}
    if n <= k:
        return out
    mf = np.array([[float(v) for v in row] for row in m])
    try:
        beta = np.linalg.solve(mf[1:, 1:], mf[1:, 0])
        inv = np.linalg.inv(mf[1:, 1:])
    except np.linalg.LinAlgError:
        return out  # collinear regressors: no unique solution to release
    means = [float(s1[i] / n) + spec.shift.get(c, 0.0) for i, c in enumerate([spec.ols_y, *xs])]
    intercept = means[0] - float(np.dot(beta, means[1:]))
    out["beta"] = {"intercept": intercept, **{c: float(b) for c, b in zip(xs, beta, strict=True)}}
    if mf[0, 0] > 0:
        r2 = float(np.dot(beta, mf[1:, 0]) / mf[0, 0])
        out["r2"], out["adj_r2"] = r2, 1 - (1 - r2) * (n - 1) / (n - k)
    dof = n - k
    sigma2 = max(float(mf[0, 0] - np.dot(beta, mf[1:, 0])), 0.0) / dof
    xbar = np.array(means[1:])
    var = [sigma2 / n + sigma2 * float(xbar @ inv @ xbar), *(sigma2 * np.diag(inv))]
    tq = t_ppf(0.975, dof)
    coefs = {}
    for name, b, v in zip(["intercept", *xs], [intercept, *beta], var, strict=True):
        se = math.sqrt(v) if v > 0 else math.nan
        t = float(b) / se if se > 0 else math.nan
        coefs[name] = {"coef": float(b), "std_err": se, "t": t,
                       "p_value": t_sf_two_sided(t, dof) if math.isfinite(t) else math.nan,
                       "ci_low": float(b) - tq * se, "ci_high": float(b) + tq * se}
    out["coefficients"] = coefs
    return out


def _grouped(spec: JointSpec, sums: Sums) -> dict[str, Any]:
    cnt, rl = sums.counts, sums.reals
    keys = spec.group_keys
    g = spec.group_cells
    cells = []
    for idx in range(g + 1):
        if idx == g:
            label: list[str] = ["other"]
        else:
            label, rest = [], idx
            for key in reversed(keys):
                label.insert(0, _label(key, rest % key.size))
                rest //= key.size
        cell: dict[str, Any] = {"key": label, "rows": cnt["grp.rows"][idx]}
        for v in spec.group_values:
            n = cnt[f"grp.{v}.n"][idx]
            s = rl[f"grp.{v}.s1"][idx] + n * Fraction(spec.shift.get(v, 0.0))
            cell[v] = {"n": n, "sum": float(s), "mean": _ratio(s, n)}
            if f"grp.{v}.s2" in rl:  # within-group variance (shift-free: centred exactly)
                cell[v]["variance"] = _var(n, rl[f"grp.{v}.s1"][idx], rl[f"grp.{v}.s2"][idx])
        cells.append(cell)
    return {"by": [k.column for k in keys], "values": list(spec.group_values), "cells": cells,
            "missing": cnt["grp.missing"][0]}


def _f(x: object) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:,.6g}"
    return str(x)


def format_result(res: JointResult) -> str:
    out = [f"joint statistics over {res.n_providers} providers, {res.rows:,} rows "
           f"({res.suppressed_cells} cell(s) suppressed below the minimum count)"]
    if res.columns:
        stats = sorted({k for v in res.columns.values() for k in v}, key=["n", "missing", "sum",
                       "mean", "variance", "std"].index)
        out.append("  " + "column".ljust(14) + "".join(s.rjust(14) for s in stats))
        for c, v in res.columns.items():
            out.append("  " + c.ljust(14) + "".join(_f(v.get(s)).rjust(14) for s in stats))
    for title, m in (("covariance", res.covariance), ("correlation", res.correlation)):
        if m:
            out.append(f"{title} (n={m['n']}, complete cases)")
            out.append("  " + "".ljust(10) + "".join(c[:10].rjust(12) for c in m["columns"]))
            for c, row in zip(m["columns"], m["matrix"], strict=True):
                out.append("  " + c[:10].ljust(10) + "".join(_f(x).rjust(12) for x in row))
    if res.ols:
        o = res.ols
        out.append(f"OLS {o['y']} ~ {' + '.join(o['x'])}: n={o['n']} R2={_f(o['r2'])} "
                   f"adj R2={_f(o.get('adj_r2'))}")
        if o.get("coefficients"):
            out.append(f"  {'term':<14}{'coef':>14} {'std err':>12} {'t':>9} {'p':>12}")
        for k, b in (o["beta"] or {}).items():
            inf = (o.get("coefficients") or {}).get(k)
            out.append(f"  {k:<14}{_f(b):>14}" + (
                # A space between columns: a p-value such as 9.57275e-292 fills its width.
                f" {_f(inf['std_err']):>12} {inf['t']:>9.2f} {_f(inf['p_value']):>12}"
                if inf else ""))
    for c, h in res.histograms.items():
        out.append(f"histogram {c}: below={h['underflow']} above={h['overflow']} "
                   f"missing={h['missing']}")
        for i, n in enumerate(h["counts"]):
            out.append(f"  [{h['edges'][i]:g}, {h['edges'][i + 1]:g})".ljust(22) + f"{n:>10}")
    if res.contingency:
        t = res.contingency
        out.append(f"contingency {t['rows']} x {t['cols']} (missing={t['missing']})")
        out.append("  " + "".ljust(10) + "".join(str(c)[:9].rjust(10)
                                                  for c in t["col_categories"]))
        for r, row in zip(t["row_categories"], t["counts"], strict=True):
            out.append("  " + str(r)[:10].ljust(10) + "".join(f"{n:>10}" for n in row))
    if res.grouped:
        g = res.grouped
        out.append(f"grouped by {', '.join(g['by'])} (missing key: {g['missing']})")
        for cell in g["cells"]:
            vals = "".join(f"  {v}: n={cell[v]['n']} mean={_f(cell[v]['mean'])}"
                           for v in g["values"])
            out.append(f"  {' / '.join(cell['key']):<24} rows={cell['rows']:<8}{vals}")
    for c, q in res.quantiles.items():
        vals = ", ".join(f"p{p:g}={_f(v)}" for p, v in zip(q["probs"], q["values"], strict=True))
        out.append(f"quantiles {c} (+/- {q['resolution']:g}): {vals}")
    if res.dp:
        out.append(f"differential privacy: epsilon={res.dp['epsilon']} (OpenDP discrete Laplace "
                   "for counts, Laplace for sums, added by the "
                   "controller before release)")
    out.append(f"aggregate sha256 {res.ledger.get('aggregate_sha256', '-')}")
    return "\n".join(out)
