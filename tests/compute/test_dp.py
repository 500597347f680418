"""Privacy budget accounting and controller-side Laplace noise under encryption."""

from __future__ import annotations

import pandas as pd
import pytest

from compute.dp import PrivacyBudget
from compute.errors import BudgetExceeded
from compute.spec import parse_spec
from tests.compute.conftest import SCHEMA
from tests.compute.harness import run_joint

DP_SPEC = {"statistics": ["count", "mean", "histogram"], "columns": ["cost"],
           "bins": {"age": [0, 40, 120]}, "dp": {"epsilon": 1.0, "bounds": {"cost": [0, 30000]}},
           "shift": {"cost": 10000.0}}


def test_budget_charges_and_refuses() -> None:
    b = PrivacyBudget("permit-1", 1.0)
    rec = b.charge("j1", 0.6)
    assert rec["spent_after"] == 0.6 and b.remaining == pytest.approx(0.4)
    with pytest.raises(BudgetExceeded):
        b.charge("j2", 0.5)
    assert b.spent == 0.6
    assert BudgetExceeded.http_status == 409


def test_noise_is_added_before_release(hospitals: dict[str, pd.DataFrame]) -> None:
    spec = parse_spec(DP_SPEC, SCHEMA)
    budgets = [PrivacyBudget(f"permit-{p}", 2.5) for p in hospitals]
    exact = run_joint(spec.__class__(**{**spec.__dict__, "dp_epsilon": None}), hospitals)
    noisy = run_joint(spec, hospitals, budgets=budgets)
    assert noisy.dp is not None and noisy.dp["epsilon"] == 1.0
    # OpenDP's samplers, named with their scales on the record.
    assert "OpenDP" in noisy.dp["mechanism"]
    assert {s["mechanism"] for s in noisy.dp["scales"].values()} == {
        "discrete_laplace", "laplace"}
    assert noisy.ledger["epsilon_spent"] == 1.0 and noisy.ledger["pre_noise_sha256"]
    assert all(b.spent == 1.0 for b in budgets)
    ex, nz = exact.histograms["age"]["counts"], noisy.histograms["age"]["counts"]
    assert ex != nz and all(isinstance(v, int) for v in nz)
    assert abs(noisy.columns["cost"]["mean"] - exact.columns["cost"]["mean"]) < 2000  # type: ignore[operator]
    run_joint(spec, hospitals, budgets=budgets)
    with pytest.raises(BudgetExceeded):
        run_joint(spec, hospitals, budgets=budgets)
    assert all(b.spent == 2.0 for b in budgets)  # a refused release charged nobody
