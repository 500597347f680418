"""A provider withdraws the records of a small cell from the whole joint job.

Per-statistic suppression left a column total beside a partition of it, so the total less
its groups was the suppressed cell (REDTEAM F4). These tests check the record-level rule of
``compute.local_aggregate.withdraw_small_cells``: every released set of records -- explicit
cells and the differences between the sets statistics are taken over -- is empty or holds
at least k, and every statistic stays exact on the records kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compute import local_aggregate as la
from compute.disclosure import check_disclosure
from compute.layout import build_layout
from compute.masking import local_sessions
from compute.spec import parse_spec
from tests.compute.conftest import DIAGNOSES, FULL_SPEC, SCHEMA, hospital_frame
from tests.compute.harness import cell_holder_rounds, run_joint

K = 10
# FULL_SPEC with a quantile grid sized to a few hundred records (a 50-wide grid would
# withdraw most of them: every sparse bin is a small cell).
SPEC = {**FULL_SPEC, "quantiles": {"cost": {"probs": [0.5],
                                            "edges": [-4000.0, 6000.0, 9000.0, 30000.0]}}}


def kept_mask(spec: dict[str, Any], frame: pd.DataFrame, k: int) -> Any:
    cache: dict[str, Any] = {}

    def col(c: str) -> Any:
        if c not in cache:
            cache[c] = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float)
        return cache[c]
    kept, _ = la.withdraw_small_cells(spec, frame, col, k)
    return kept


def safe(n: int) -> bool:
    return n == 0 or n >= K


def test_a_small_group_is_withdrawn_from_the_column_totals_too() -> None:
    spec = parse_spec({"statistics": ["count", "mean", "grouped"], "columns": ["cost"],
                       "groups": {"by": "diagnosis", "categories": ["J18", "I21"],
                                  "values": ["cost"]}}, SCHEMA)
    frame = pd.DataFrame({"cost": [100.0] * 12 + [5.0] * 3,
                          "diagnosis": ["J18"] * 12 + ["I21"] * 3})
    frame.loc[0, "cost"] = None  # one missing value: a cell of one record as well
    agg = la.local_aggregate(spec.to_json(), frame, K)
    c, r = agg["counts"], agg["reals"]
    assert c["rows"] == [11] and c["col.cost.n"] == [11] and c["col.cost.missing"] == [0]
    assert r["col.cost.s1"] == [1100.0] and c["grp.cost.n"] == [11, 0, 0]
    assert c["disclosure.suppressed"][0] >= 2
    checked, report = check_disclosure(agg, build_layout(spec), K)
    assert report.by_entry == {} and checked["counts"] == c  # nothing left to suppress
    assert report.suppressed_cells == c["disclosure.suppressed"][0]


def test_a_record_with_a_missing_key_is_a_cell_beside_the_groups() -> None:
    spec = parse_spec({"statistics": ["sum", "grouped"], "columns": ["cost"],
                       "groups": {"by": [{"column": "age", "edges": [0, 50, 200]}],
                                  "values": ["cost"]}}, SCHEMA)
    frame = pd.DataFrame({"age": [20.0] * 15 + [70.0] * 15 + [None],
                          "cost": [100.0] * 30 + [31337.25]})
    agg = la.local_aggregate(spec.to_json(), frame, K)
    c, r = agg["counts"], agg["reals"]
    assert c["col.cost.n"] == [sum(c["grp.cost.n"])] == [30]
    assert r["col.cost.s1"] == [sum(r["grp.cost.s1"])] == [3000.0]


def test_withdrawing_cascades_until_every_cell_is_empty_or_at_least_k() -> None:
    """The 3 I21 records go; the age band they shared with 9 J18 records drops to 9; those
    go; the J18 group keeps 1 and that goes too."""
    spec = parse_spec({"statistics": ["count", "histogram", "grouped"], "columns": ["age"],
                       "bins": {"age": [0, 50, 200]},
                       "groups": {"by": "diagnosis", "categories": ["J18", "I21"],
                                  "values": ["age"]}}, SCHEMA)
    frame = pd.DataFrame({"age": [20.0] * 9 + [70.0] + [20.0] * 3 + [80.0] * 20,
                          "diagnosis": ["J18"] * 10 + ["I21"] * 3 + ["E11"] * 20})
    agg = la.local_aggregate(spec.to_json(), frame, K)
    c = agg["counts"]
    assert c["rows"] == [20] and c["hist.age"] == [0, 0, 20, 0]
    assert c["grp.rows"] == [0, 0, 20]


def test_two_cuts_of_one_column_do_not_difference_to_a_small_band() -> None:
    """An age histogram cut at 98 beside age groups cut at 99: their difference is the
    98-year-olds, here one patient."""
    spec = parse_spec({"statistics": ["histogram", "grouped"], "bins": {"age": [0, 98, 200]},
                       "groups": {"by": [{"column": "age", "edges": [0, 99, 200]}],
                                  "values": ["cost"]}}, SCHEMA)
    frame = pd.DataFrame({"age": [20.0] * 15 + [98.0] + [99.0] * 15,
                          "cost": [100.0] * 15 + [31337.25] + [200.0] * 15})
    c = la.local_aggregate(spec.to_json(), frame, K)["counts"]
    assert c["hist.age"][1] == c["grp.rows"][0] == 15 and c["rows"] == [30]


@pytest.mark.parametrize("seed", range(4))
def test_every_released_difference_is_empty_or_at_least_k(seed: int) -> None:
    rng = np.random.default_rng(seed)
    frame = hospital_frame(100 + seed, int(rng.integers(150, 600)))
    frame.loc[rng.random(len(frame)) < 0.02, "los"] = np.nan
    frame.loc[rng.random(len(frame)) < 0.01, "age"] = np.nan
    spec = parse_spec(SPEC, SCHEMA).to_json()
    agg = la.local_aggregate(spec, frame, K)
    c, r = agg["counts"], agg["reals"]
    # Exact on the kept records: the same aggregates as the kept records alone, unchecked.
    kept = frame[kept_mask(spec, frame, K)].reset_index(drop=True)
    plain = la.local_aggregate(spec, kept)
    assert c["rows"] == [len(kept)] and {**plain["counts"], "disclosure.suppressed": None} \
        == {**c, "disclosure.suppressed": None} and plain["reals"] == r
    for name, cells in c.items():
        if name != "disclosure.suppressed":
            assert all(safe(v) for v in cells), name
    rows = c["rows"][0]
    for col in ("age", "cost", "los"):
        assert safe(rows - c[f"col.{col}.n"][0]) and safe(c[f"col.{col}.n"][0] - c["mom.n"][0])
    assert safe(rows - c["ols.n"][0]) and safe(c["ols.n"][0] - c["mom.n"][0])
    assert safe(c["col.cost.n"][0] - sum(c["grp.cost.n"]))
    assert all(safe(a - b) for a, b in zip(c["grp.rows"], c["grp.cost.n"], strict=True))
    assert safe(c["col.age.n"][0] - sum(c["hist.age"]))
    _, report = check_disclosure(agg, build_layout(parse_spec(SPEC, SCHEMA)), K)
    assert report.by_entry == {}


def test_under_dp_nothing_is_withdrawn_ahead_of_the_check() -> None:
    """DP's sensitivity (k per count entry) assumes one record moves one cell, not a
    cascade: a DP job keeps the per-statistic check and relies on the noise."""
    spec = parse_spec({"statistics": ["sum", "grouped"], "columns": ["cost"],
                       "groups": {"by": "diagnosis", "categories": DIAGNOSES,
                                  "values": ["cost"]},
                       "dp": {"epsilon": 1.0, "bounds": {"cost": [0, 50000]}}}, SCHEMA)
    frame = hospital_frame(3, 40)
    assert la.local_aggregate(spec.to_json(), frame, K) == la.local_aggregate(spec.to_json(),
                                                                              frame)


def test_joint_release_is_exact_on_the_kept_records() -> None:
    """Through CKKS over three providers, one of which holds a lone 99-year-old: every
    figure equals numpy on the pooled records the providers kept."""
    frames = {f"h{i}": hospital_frame(60 + i, 300) for i in range(3)}
    frames["h0"].loc[5, ["age", "cost"]] = [99, 31337.25]
    frames["h0"].loc[frames["h0"].age.between(65, 98), "age"] = 64
    spec = parse_spec({**SPEC, "bins": {"age": [0, 18, 40, 65, 99, 120]}}, SCHEMA)
    normalized = spec.to_json()
    res = run_joint(spec, frames, min_cell_count=K)
    # Kept: after the cells too few hospitals hold are withdrawn (a round of their own,
    # deterministic) and each hospital's own small cells.
    agents = {p: Ed25519PrivateKey.generate() for p in frames}
    withdrawn = cell_holder_rounds(normalized, frames, K, 3, local_sessions("j", agents)[0],
                                   agents)
    pooled = pd.concat([f[la.kept_records(normalized, f, K, withdrawn[p])]
                        for p, f in frames.items()])
    assert 31337.25 not in pooled.cost.to_numpy() and res.suppressed_cells > 0
    assert res.rows == len(pooled)
    for c in ("age", "cost", "los"):
        x = pooled[c].dropna().to_numpy(dtype=float)
        got = res.columns[c]
        assert got["n"] == len(x) and got["missing"] == pooled[c].isna().sum()
        assert abs(got["sum"] - x.sum()) <= 1e-9 * abs(x.sum())
        assert abs(got["variance"] - x.var(ddof=1)) <= 1e-8 * x.var(ddof=1)
    cc = pooled[["age", "cost", "los"]].dropna().to_numpy(dtype=float)
    assert res.covariance and res.covariance["n"] == len(cc)
    cov = np.cov(cc, rowvar=False)
    assert np.max(np.abs(np.array(res.covariance["matrix"]) - cov)) <= 1e-8 * np.max(cov)
    assert res.grouped is not None
    assert res.columns["cost"]["n"] - sum(g["cost"]["n"] for g in res.grouped["cells"]) \
        == pooled[pooled.cost.notna() & (pooled.age.isna() | pooled.diagnosis.isna())].shape[0]
