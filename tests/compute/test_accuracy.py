"""Joint statistics through real CKKS against numpy float64 on the pooled data."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes

from compute.derive import JointResult, format_result
from compute.spec import parse_spec
from tests.compute.conftest import DIAGNOSES, FULL_SPEC, SCHEMA
from tests.compute.harness import run_joint


def rel(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module")
def synthetic(hospitals: dict[str, pd.DataFrame]) -> tuple[JointResult, pd.DataFrame]:
    spec = parse_spec(FULL_SPEC, SCHEMA)
    # Arithmetic against numpy on every record: no withdrawal, not even of the fine grid's
    # cells one or two hospitals hold (compute/cell_holders.py).
    return run_joint(spec, hospitals, min_cell_count=1, min_providers=1), \
        pd.concat(hospitals.values())


def test_counts_and_univariate(synthetic: tuple[JointResult, pd.DataFrame]) -> None:
    res, pooled = synthetic
    assert res.n_providers == 3 and res.rows == len(pooled) and res.suppressed_cells == 0
    for c in ("age", "cost", "los"):
        x = pooled[c].dropna().to_numpy(dtype=float)
        got = res.columns[c]
        assert got["n"] == len(x) and got["missing"] == pooled[c].isna().sum()
        mu, sd = x.mean(), x.std(ddof=1)
        assert abs(got["mean"] - mu) <= 1e-9 * (abs(mu) + sd)
        assert abs(got["sum"] - x.sum()) <= 1e-9 * abs(x.sum())
        assert rel(got["variance"], x.var(ddof=1)) <= 1e-8
        assert rel(got["std"], sd) <= 1e-8


def test_covariance_correlation_ols(synthetic: tuple[JointResult, pd.DataFrame]) -> None:
    res, pooled = synthetic
    cc = pooled[["age", "cost", "los"]].dropna().to_numpy(dtype=float)
    assert res.covariance and res.correlation and res.ols
    assert res.covariance["n"] == len(cc)
    assert rel(res.covariance["matrix"], np.cov(cc, rowvar=False)) <= 1e-8
    assert rel(res.correlation["matrix"], np.corrcoef(cc, rowvar=False)) <= 1e-8
    design = np.column_stack([np.ones(len(cc)), cc[:, 0], cc[:, 2]])
    beta = np.linalg.lstsq(design, cc[:, 1], rcond=None)[0]
    got = res.ols["beta"]
    assert rel([got["intercept"], got["age"], got["los"]], beta) <= 1e-6
    resid = cc[:, 1] - design @ beta
    r2 = 1 - resid @ resid / ((cc[:, 1] - cc[:, 1].mean()) ** 2).sum()
    assert abs(res.ols["r2"] - r2) <= 1e-8


def test_histogram_contingency_grouped_exact(synthetic: tuple[JointResult, pd.DataFrame]) -> None:
    res, pooled = synthetic
    edges = [0, 18, 40, 65, 120]
    counts, _ = np.histogram(pooled["age"], bins=edges)
    assert res.histograms["age"]["counts"] == counts.tolist()
    known = pooled[pooled["diagnosis"].notna()]
    assert res.contingency is not None
    table = res.contingency["counts"]
    for i, s in enumerate(["F", "M"]):
        for j, d in enumerate(DIAGNOSES):
            assert table[i][j] == ((known["sex"] == s) & (known["diagnosis"] == d)).sum()
        assert table[i][4] == ((known["sex"] == s) & ~known["diagnosis"].isin(DIAGNOSES)).sum()
    assert res.contingency["missing"] == pooled["diagnosis"].isna().sum()
    assert res.grouped is not None
    band = pd.cut(known["age"], edges, right=False, labels=False)
    labels = [f"[{a:g}, {z:g})" for a, z in itertools.pairwise(edges)]
    for cell in res.grouped["cells"][:-1]:
        b = labels.index(cell["key"][0])
        sel = known[(band == b) & (known["diagnosis"] == cell["key"][1])]
        assert cell["rows"] == len(sel)
        assert cell["cost"]["n"] == sel["cost"].notna().sum()
        mu, sd = sel["cost"].mean(), sel["cost"].std()
        assert abs(cell["cost"]["mean"] - mu) <= 1e-9 * (abs(mu) + sd)
    other = res.grouped["cells"][-1]
    assert other["key"] == ["other"]
    assert other["rows"] == (~known["diagnosis"].isin(DIAGNOSES)).sum()


def test_quantiles_within_bin_width(synthetic: tuple[JointResult, pd.DataFrame]) -> None:
    res, pooled = synthetic
    q = res.quantiles["cost"]
    ref = np.quantile(pooled["cost"].dropna(), q["probs"])
    assert q["resolution"] == 50
    assert np.all(np.abs(np.array(q["values"]) - ref) <= q["resolution"])


def test_diabetes_split_across_four_providers() -> None:
    data = load_diabetes(as_frame=True).frame  # features ship centred and scaled
    cols = list(data.columns)
    feats = [c for c in cols if c != "target"]
    schema = {c: "number" for c in cols}
    spec = parse_spec({
        "columns": cols,
        "statistics": ["count", "mean", "variance", "covariance", "correlation", "ols",
                       "histogram"],
        "shift": {"target": 150.0},
        "ols": {"y": "target", "x": feats},
        "bins": {"target": [0, 50, 100, 150, 200, 250, 300, 400]},
    }, schema)
    shuffled = data.sample(frac=1.0, random_state=7)
    parts = [shuffled.iloc[i::4] for i in range(4)]
    res = run_joint(spec, {f"p{i}": p for i, p in enumerate(parts)}, min_cell_count=1)
    x = data.to_numpy(dtype=float)
    for i, c in enumerate(cols):
        mu, sd = x[:, i].mean(), x[:, i].std(ddof=1)
        assert abs(res.columns[c]["mean"] - mu) <= 1e-9 * (abs(mu) + sd)
        assert rel(res.columns[c]["variance"], sd**2) <= 1e-8
    assert res.covariance and res.correlation and res.ols
    assert rel(res.covariance["matrix"], np.cov(x, rowvar=False)) <= 1e-8
    assert rel(res.correlation["matrix"], np.corrcoef(x, rowvar=False)) <= 1e-8
    design = np.column_stack([np.ones(len(x)), data[feats].to_numpy()])
    beta = np.linalg.lstsq(design, data["target"].to_numpy(), rcond=None)[0]
    got = [res.ols["beta"]["intercept"], *(res.ols["beta"][f] for f in feats)]
    assert rel(got, beta) <= 1e-6
    hist, _ = np.histogram(data["target"], bins=[0, 50, 100, 150, 200, 250, 300, 400])
    assert res.histograms["target"]["counts"] == hist.tolist()
    assert "OLS target ~ age" in format_result(res)
