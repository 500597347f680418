"""ACRO (AI-SDC/ACRO, the SACRO project's output checker) as an oracle for the rules.

On a handful of tables the engine must find unsafe exactly the cells ACRO finds unsafe,
for the same reason: threshold, zeros, nk-dominance, p%, residual degrees of freedom.
Skipped where the optional extra ``acro`` is not installed (it is never a runtime
dependency). Known differences, by design (docs/disclosure-control.md): ACRO fails every
cell with a negative value, the engine applies the rules to magnitudes; ACRO reports
zeros as below the threshold too; class disclosure is the engine's own flag.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

from compute import sdc
from compute.sdc import Rule

acro_module = pytest.importorskip("acro")
# Importing ACRO (matplotlib, rdflib, statsmodels) takes seconds; its own pandas calls
# warn about pandas' future behaviour.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]

#: ACRO's check names -> the engine's rules.
ACRO_RULES = {"MinimumThresholdCheck": Rule.THRESHOLD, "PresenceOfZeroCheck": Rule.ZEROS,
              "NKCheck": Rule.DOMINANCE, "PPercentCheck": Rule.P_PERCENT}
RULES = frozenset(ACRO_RULES.values())


@pytest.fixture(scope="module")
def acro(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    logging.getLogger("acro").setLevel(logging.WARNING)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("acro"))  # it may write beside the process
        yield acro_module.ACRO(suppress=False)


def _acro_cells(acro: Any) -> dict[tuple[str, str], frozenset[Rule]]:
    outcome = acro.results.get_index(-1).outcome
    got = {}
    for row in outcome.index:
        for col in outcome.columns:
            labels = {t.strip() for t in str(outcome.loc[row, col]).split(";")} - {"", "ok"}
            got[(str(row), str(col))] = frozenset(ACRO_RULES[t] for t in labels)
    return got


def _engine_cells(table: sdc.CheckedTable) -> dict[tuple[str, str], frozenset[Rule]]:
    got = {}
    for (a, b), row in table.cells.iterrows():
        if sdc.MARGIN in (a, b):
            continue
        primary = row["status"] == sdc.CellStatus.SUPPRESSED_PRIMARY
        got[(str(a), str(b))] = frozenset(row["rules"]) & RULES if primary else frozenset()
    return got


def _agree(ours: dict[tuple[str, str], frozenset[Rule]],
           theirs: dict[tuple[str, str], frozenset[Rule]]) -> None:
    assert ours.keys() == theirs.keys()
    for cell, rules in ours.items():
        assert bool(rules) == bool(theirs[cell]), cell
        if Rule.ZEROS in theirs[cell]:
            assert Rule.ZEROS in rules, cell  # ACRO adds the threshold to a zero
        else:
            assert rules == theirs[cell], cell


def _frame(seed: int = 0, rows: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.choice(list("xyz"), rows), "b": rng.choice(list("pq"), rows),
                         "v": np.round(rng.gamma(4.0, 100.0, rows), 2)})


def _categorical(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(a=pd.Categorical(frame.a), b=pd.Categorical(frame.b))


def test_a_safe_table_is_safe_for_both(acro: Any) -> None:
    frame = _frame()
    acro.crosstab(frame.a, frame.b)
    theirs = _acro_cells(acro)
    assert not any(theirs.values())
    _agree(_engine_cells(sdc.frequency_table(frame, ["a", "b"])), theirs)


def test_threshold_and_zeros(acro: Any) -> None:
    frame = pd.concat([_frame(1), pd.DataFrame({"a": ["w"] * 3, "b": ["p"] * 3, "v": 1.0})],
                      ignore_index=True)
    frame = _categorical(frame)
    acro.crosstab(frame.a, frame.b)
    theirs = _acro_cells(acro)
    assert theirs[("w", "p")] == {Rule.THRESHOLD} and Rule.ZEROS in theirs[("w", "q")]
    ours = sdc.frequency_table(frame.astype({"a": str, "b": str}), ["a", "b"],
                               categories={"a": list("wxyz"), "b": list("pq")})
    _agree(_engine_cells(ours), theirs)


@pytest.mark.parametrize("dominant", [
    [1e6],  # one contributor holds over 90 % (and the p% rule fires too)
    [5e5, 4.9e5],  # two together hold over 90 %
    [2500.0],  # a large value, but far from dominating: safe for both
])
def test_dominance_and_p_percent_on_sums(acro: Any, dominant: list[float]) -> None:
    frame = _frame(2)
    rows = frame.index[(frame.a == "z") & (frame.b == "p")][:len(dominant)]
    frame.loc[rows, "v"] = dominant
    acro.crosstab(frame.a, frame.b, values=frame.v, aggfunc="sum")
    theirs = _acro_cells(acro)
    ours = sdc.magnitude_table(frame, ["a", "b"], "v", statistics=["sum"])["sum"]
    _agree(_engine_cells(ours), theirs)
    if dominant[0] > 10000:
        assert Rule.DOMINANCE in theirs[("z", "p")]


@pytest.mark.parametrize(("rows", "safe"), [(16, False), (40, True)])
def test_residual_degrees_of_freedom(acro: Any, rows: int, safe: bool) -> None:
    rng = np.random.default_rng(3)
    x = pd.DataFrame(rng.normal(size=(rows, 6)), columns=[f"x{i}" for i in range(6)])
    y = x.sum(axis=1) + rng.normal(size=rows)
    acro.ols(y, x.assign(const=1.0))
    theirs = acro.results.get_index(-1).status == "pass"
    # ACRO has no leverage rule, and seven coefficients over forty records leave some
    # record above 1/10: a threshold of one compares the dof rule alone.
    ours = sdc.ols(x.assign(y=y), "y", list(x.columns), sdc.SDCPolicy(min_count=1))
    assert theirs == safe
    assert (ours.outcome == sdc.Outcome.RELEASED) == safe
    if not safe:
        assert Rule.RESIDUAL_DOF in ours.rules
