"""Red team, sixth pass, R6-1's family: a discrete column's sums beside its frequency table.

Same convention as ``test_redteam_6.py`` (an attack computes ``recovered`` and asserts
that it is not the secret). R6-1 and R6-1b take a four-valued stage code and one hidden
complement: two equations in two unknowns. The family, closed with them by the discrete
rule (``compute.sdc.partition_bound``: a column whose values repeat is a partition of
every cell by value, each value's holders 0 or at least k):

* more values, several rare: a five-level code with two rare levels, which the
  frequency table pools into one bucket; the count margin, the sum and the sum of
  squares (from the std) are three equations in the complement's count and the two
  rare levels' counts;
* an age-like integer column with rare extremes: the frequency table labels the common
  ages and pools one 99-year-old (or a 2-year-old and a 98-year-old) under
  ``Other (rare)``; the sum and the std give the pooled records' values and number,
  found by enumerating small buckets of the ages no label shows (integrality does the
  rest);
* the script route's twin: a script's overall ``n``, ``sum_age`` and ``std_age`` beside
  the statistics route's frequency table by age;
* R6-1d, across cells: a released cell whose every value is held by k or more can still
  have counts hidden in its line of the frequency table by the same dimensions and the
  column (complements of another line's small count); its sum solves for them.

* R6-1c, a model: a linear model's coefficients and fit give a discrete outcome's sum
  and sum of squares, and its standard errors a regressor's (X'X); every column a model
  reads now meets the rule its magnitude cell meets.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import combinations_with_replacement
from typing import Any

import numpy as np
import pandas as pd

from sandbox.demo_data import hospital_table
from tests.redteam.test_redteam_2 import Agent, agent, cells
from tests.redteam.test_redteam_3 import PERMITTED, ScriptAgent, script_agent

__all__ = ["agent", "script_agent"]  # the fixtures, imported for pytest

STAGE = ({"name": "stage", "type": "integer", "sensitivity": "sensitive",
          "description": "disease stage, 0 (none) to 5"},)
AGES = range(0, 121)


def _squares(n: float, total: float, std: float | None) -> float | None:
    """The sum of squares a cell's count, sum and sample std give."""
    return None if std is None else (n - 1) * std ** 2 + total ** 2 / n


def hidden_part(counts: dict[str, Any], total: float | None, squares: float | None,
                domain: Iterable[int], most: int = 3) -> tuple[int, ...] | None:
    """The rare records a frequency table hides, from its cells (``counts``: label text to
    count or None, with ``All``; rare values pooled under a label no value has) and the
    sum (and sum of squares) of the column over the same records: every bucket of up to
    ``most`` values of ``domain`` that no label shows, with the one hidden label's count
    the margin less the rest, that fits the sum and the squares. The smallest such bucket
    when it is the only one of its size (its values, sorted), else None."""
    if total is None or counts.get("All") is None:
        return None
    labels = {int(v) for v in counts if v.lstrip("-").isdigit()}
    shown = {v: counts[str(v)] for v in labels if counts[str(v)] is not None}
    hidden = sorted(labels - set(shown))
    if len(hidden) > 1:
        return None
    h = counts["All"] - sum(shown.values())
    s = total - sum(v * n for v, n in shown.items())
    q = None if squares is None else squares - sum(v * v * n for v, n in shown.items())
    free = [v for v in domain if v not in labels]
    for m in range(1, most + 1):
        fits = []
        for bucket in combinations_with_replacement(free, m):
            rest = h - m
            if rest < 0 or (rest and not hidden):
                continue
            c = hidden[0] if hidden else 0
            if abs(c * rest + sum(bucket) - s) > 0.5:
                continue
            if q is not None and abs(c * c * rest + sum(b * b for b in bucket) - q) > 0.5:
                continue
            fits.append(bucket)
        if len(fits) == 1:
            return tuple(fits[0])
        if fits:
            return None
    return None


def _frequency(doc: dict[str, Any], analysis: int, dim: str) -> dict[str, Any]:
    return {str(c["cell"][dim]): c["value"] for c in cells(doc, analysis)}


def _magnitude(doc: dict[str, Any], analysis: int) -> tuple[float | None, float | None]:
    """The ``All`` cell's sum and sum of squares (sum, mean, std tables in that order)."""
    total, mean, std = (cells(doc, analysis, t)[0]["value"] for t in range(3))
    if total is None or mean is None:
        return None, None
    return total, _squares(total / mean, total, std)


def _ages(seed: int, rows: int, extremes: list[int]) -> pd.DataFrame:
    """Ages spread over 20-80 (every age held by dozens), then a few rare extremes."""
    frame = hospital_table(seed, rows, "R")
    frame["age"] = 20 + np.arange(rows) % 61
    frame.loc[frame.index[:len(extremes)], "age"] = extremes
    return frame


def test_five_levels_two_rare_with_the_std(agent: Agent) -> None:
    """A stage coded 0-5: four patients at stage 4 and two at stage 5 (pooled together),
    the rest common. The count margin, sum and sum of squares solve the complement's
    count and the bucket (4, 4, 4, 4, 5, 5) is the one fit of its size."""
    frame = hospital_table(23, 2000, "R").assign(stage=0)
    for lo, hi, v in ((100, 160, 1), (200, 250, 2), (300, 330, 3)):
        frame.loc[frame.index[lo:hi], "stage"] = v
    frame.loc[frame.index[[400, 401, 402, 403]], "stage"] = 4
    frame.loc[frame.index[[500, 501]], "stage"] = 5
    agent.publish(frame)
    doc = agent.run({"analyses": [
        {"kind": "frequency", "dims": ["stage"]},
        {"kind": "magnitude", "value": "stage", "statistics": ["sum", "mean", "std"]}]},
        extra_fields=STAGE)
    total, squares = _magnitude(doc, 1)
    recovered = hidden_part(_frequency(doc, 0, "stage"), total, squares, range(6), most=6)
    assert recovered != (4, 4, 4, 4, 5, 5), "disclosed: four at stage 4 and two at stage 5"


def test_an_age_with_one_rare_extreme(agent: Agent) -> None:
    """Ages 20-80, thirty-odd patients each, and one patient of 99. The frequency table
    by age pools the 99 under ``Other (rare)`` and hides one age as its complement; the
    mean and std of age over everyone give the pooled record's age and that it is one."""
    agent.publish(_ages(24, 2000, [99]))
    doc = agent.run({"analyses": [
        {"kind": "frequency", "dims": ["age"]},
        {"kind": "magnitude", "value": "age", "statistics": ["sum", "mean", "std"]}]})
    total, squares = _magnitude(doc, 1)
    recovered = hidden_part(_frequency(doc, 0, "age"), total, squares, AGES)
    assert recovered != (99,), "disclosed: one patient aged 99"


def test_an_age_with_two_rare_extremes(agent: Agent) -> None:
    """The same with a 2-year-old and a 98-year-old: two pooled records whose ages sum to
    100 and whose squares sum to 9,608 are 2 and 98, the only such pair of unlabelled
    ages."""
    agent.publish(_ages(25, 2000, [2, 98]))
    doc = agent.run({"analyses": [
        {"kind": "frequency", "dims": ["age"]},
        {"kind": "magnitude", "value": "age", "statistics": ["sum", "mean", "std"]}]})
    total, squares = _magnitude(doc, 1)
    recovered = hidden_part(_frequency(doc, 0, "age"), total, squares, AGES, most=2)
    assert recovered != (2, 98), "disclosed: a patient aged 2 and one aged 98"


def test_script_sum_and_std_of_an_age_beside_its_frequency_table(
        script_agent: ScriptAgent) -> None:
    """The script route's twin: an overall table of ``n``, ``sum_age`` and ``std_age``
    re-derives exactly; the statistics route's frequency table by age supplies the
    labelled ages' counts."""
    frame = _ages(26, 1200, [99])
    script_agent.publish(frame)
    df = frame[PERMITTED]
    overall = pd.DataFrame({"n": [len(df)], "sum_age": [int(df.age.sum())],
                            "std_age": [round(float(df.age.std()), 6)]})
    got = script_agent.run({"overall.csv": overall})
    doc = script_agent.statistics({"analyses": [{"kind": "frequency", "dims": ["age"]}]})
    total = squares = None
    if "table-1.csv" in got:
        row = got["table-1.csv"].iloc[0]
        total = float(row.sum_age)
        squares = _squares(float(row.n), total, float(row.std_age))
    recovered = hidden_part(_frequency(doc, 0, "age"), total, squares, AGES)
    assert recovered != (99,), "disclosed: one patient aged 99"


# ---- R6-1c: a linear model's fit gives the outcome's sum and sum of squares ------------

def test_a_model_of_an_age_gives_its_sum_and_squares(agent: Agent) -> None:
    """Not a magnitude table: ``ols`` of age on cost. The intercept and slope at the mean
    cost (a released magnitude cell of a continuous column) give the mean age, so the
    sum; sigma, the residual dof and R^2 give the total sum of squares, so the sum of
    squares of age. Beside the frequency table by age, the pooled 99-year-old comes out
    as in the magnitude table's attack. Closed: every column a model reads meets its
    magnitude cell's rule (``compute.sdc.models._discrete_hits``), so the model of age is
    withheld under ``threshold``; the regressor's twin (``ols`` of cost on age, whose
    standard errors give age's X'X) likewise."""
    agent.publish(_ages(27, 2000, [99]))
    doc = agent.run({"analyses": [
        {"kind": "frequency", "dims": ["age"]},
        {"kind": "magnitude", "value": "cost", "statistics": ["mean"]},
        {"kind": "ols", "y": "age", "x": ["cost"]}]})
    counts = _frequency(doc, 0, "age")
    mean_cost = cells(doc, 1)[0]["value"]
    model = doc["analyses"][2]
    total = squares = None
    if model.get("coefficients") and model.get("fit") and mean_cost is not None:
        coef = {c["term"]: c["coef"] for c in model["coefficients"]}
        fit = model["fit"]
        n = fit["n"]
        mean_age = coef["const"] + coef["cost"] * mean_cost
        total = n * mean_age
        tss = fit["sigma"] ** 2 * fit["df_resid"] / (1 - fit["r2"])
        squares = tss + n * mean_age ** 2
    recovered = hidden_part(counts, total, squares, AGES)
    assert recovered != (99,), "disclosed: one patient aged 99"
    assert model["outcome"] == "withheld" and model["rules"] == ["threshold"]
    regressor = agent.run({"analyses": [{"kind": "ols", "y": "cost", "x": ["age"]}]})
    assert regressor["analyses"][0]["coefficients"] is None, "age's X'X released"


def test_script_model_fit_of_an_age_is_not_released(script_agent: ScriptAgent) -> None:
    """The script route's twin of the model: a script fits age on cost and writes the
    coefficients and fit. Re-derivation explains only key columns, counts and
    ``<statistic>_<column>`` of sums, means and stds, so a fit's columns are unexplained
    and the table waits for a person: nothing is released automatically."""
    frame = _ages(29, 1200, [99])
    script_agent.publish(frame)
    df = frame[PERMITTED]
    slope, const = np.polyfit(df.cost, df.age, 1)
    resid = df.age - (const + slope * df.cost)
    fit = pd.DataFrame({"n": [len(df)], "coef_const": [round(float(const), 6)],
                        "coef_cost": [round(float(slope), 9)],
                        "sigma": [round(float(np.sqrt((resid ** 2).sum() / (len(df) - 2))),
                                        6)],
                        "r2": [round(float(1 - resid.var() / df.age.var()), 9)]})
    assert script_agent.run({"fit.csv": fit}) == {}, "a model fit released unchecked"


# ---- R6-1d: a released cell's sum solves its line's complements -------------------------

def test_a_released_cells_sum_undoes_the_frequency_tables_complements(agent: Agent) -> None:
    """Each released cell of a discrete column has every value held by k or more, yet
    its line of the frequency table by the same dimensions and the column may hide some
    of them as complements of another line's small cell. Three groups: F holds three
    stage-3 patients (primary); the frequency table protects them with M's stage 1 and
    3 and X's stage 1 and 2. The magnitude table by group hides F and, as its complement,
    X (the smaller sum): M's sum was released, M's two hidden counts came out of its sum
    and its line, and the stage-3 margin less M and X was F's three. Closed on the
    statistics route: a discrete column's cell is released only where its line of that
    frequency table hides nothing (``value_lines``). The script route's table by group
    must hold F's row (every group of k or more is a row), whose rare stage holds it."""
    parts = {"F": {0: 900, 1: 40, 2: 30, 3: 3}, "M": {0: 900, 1: 200, 2: 200, 3: 12},
             "X": {0: 900, 1: 10, 2: 10, 3: 15}}
    size = sum(sum(p.values()) for p in parts.values())
    frame = hospital_table(28, size, "R")
    frame["sex"] = [g for g, p in parts.items() for v, c in p.items() for _ in range(c)]
    frame["stage"] = [v for p in parts.values() for v, c in p.items() for _ in range(c)]
    agent.publish(frame)
    doc = agent.run({"analyses": [
        {"kind": "frequency", "dims": ["sex", "stage"]},
        {"kind": "magnitude", "dims": ["sex"], "value": "stage", "statistics": ["sum"]}]},
        extra_fields=STAGE)
    count = {(str(c["cell"]["sex"]), str(c["cell"]["stage"])): c["value"]
             for c in cells(doc, 0)}
    sums = {str(c["cell"]["sex"]): c["value"] for c in cells(doc, 1)}
    recovered = None
    for g in ("M", "X"):
        hidden = [v for v in range(4) if count.get((g, str(v))) is None]
        if sums.get(g) is None or len(hidden) != 2 or count.get((g, "All")) is None:
            continue
        a, b = hidden
        h = count[(g, "All")] - sum(count[(g, str(v))] for v in range(4) if v not in hidden)
        s = sums[g] - sum(v * count[(g, str(v))] for v in range(4) if v not in hidden)
        n_b = round((s - a * h) / (b - a))
        solved = {a: h - n_b, b: n_b}
        other = "X" if g == "M" else "M"
        if 3 in solved and count.get(("All", "3")) is not None and count.get((other, "3")):
            recovered = count[("All", "3")] - solved[3] - count[(other, "3")]
    assert recovered != 3, "disclosed: three stage-3 patients in group F"
