"""Shared fixtures: one CKKS key pair per session (context creation is the slow part)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from compute.protocol import RequesterKeys, requester_keygen

SCHEMA = {"age": "integer", "cost": "number", "los": "number", "sex": "string",
          "diagnosis": "string", "insured": "boolean"}
DIAGNOSES = ["J18", "I21", "E11", "C34"]


def hospital_frame(seed: int, rows: int) -> pd.DataFrame:
    """Scenario 1: one hospital's treatment records, with some missing values."""
    rng = np.random.default_rng(seed)
    age = rng.integers(0, 100, rows)
    los = rng.gamma(2.0, 3.0, rows)
    cost = 4000.0 + 35.0 * age + 900.0 * los + rng.normal(0, 1500, rows)
    df = pd.DataFrame({
        "age": age, "cost": cost, "los": los,
        "sex": rng.choice(["F", "M"], rows),
        "diagnosis": rng.choice([*DIAGNOSES, "Z99"], rows, p=[0.3, 0.25, 0.2, 0.2, 0.05]),
        "insured": rng.random(rows) < 0.8,
    })
    df.loc[rng.random(rows) < 0.03, "cost"] = np.nan
    df.loc[rng.random(rows) < 0.02, "diagnosis"] = None
    return df


FULL_SPEC: dict[str, Any] = {
    "version": 1,
    "columns": ["age", "cost", "los"],
    "statistics": ["count", "sum", "mean", "variance", "std", "covariance", "correlation",
                   "ols", "histogram", "contingency", "grouped", "quantiles"],
    "shift": {"cost": 8000.0, "age": 50.0},
    "ols": {"y": "cost", "x": ["age", "los"]},
    "bins": {"age": [0, 18, 40, 65, 120]},
    "contingency": {"rows": "sex", "cols": "diagnosis", "row_categories": ["F", "M"],
                    "col_categories": DIAGNOSES},
    "groups": {"by": [{"column": "age", "edges": [0, 18, 40, 65, 120]},
                      {"column": "diagnosis", "categories": DIAGNOSES}], "values": ["cost"]},
    "quantiles": {"cost": {"probs": [0.1, 0.5, 0.9],
                           "edges": [float(x) for x in range(-4000, 30001, 50)]}},
}


@pytest.fixture(scope="session")
def keys() -> RequesterKeys:
    return requester_keygen()


@pytest.fixture(scope="session")
def other_keys() -> RequesterKeys:
    return requester_keygen()


@pytest.fixture(scope="session")
def hospitals() -> dict[str, pd.DataFrame]:
    return {f"hospital-{i}": hospital_frame(i, 3000 + 500 * i) for i in range(3)}
