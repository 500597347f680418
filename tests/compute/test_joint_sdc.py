"""Provider-side magnitude rules of a joint part (compute/joint_sdc.py): level cells of
few-valued columns, nk/p% dominance withdrawal, and the model round's weight check."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from compute import local_aggregate as la
from compute.errors import InvalidInput
from compute.joint_sdc import GLM_RULE
from compute.spec import parse_spec
from tests.compute.conftest import SCHEMA, hospital_frame

K = 10


def aggregate(spec: dict[str, Any], frame: pd.DataFrame) -> dict[str, Any]:
    return la.local_aggregate(parse_spec(spec, SCHEMA).to_json(), frame, K)


def test_a_flag_one_record_holds_leaves_every_block() -> None:
    frame = hospital_frame(80, 400).assign(insured=True).dropna(subset=["cost"])
    frame.loc[frame.index[4], "insured"] = False
    for spec in ({"statistics": ["ols"], "ols": {"y": "cost", "x": ["insured"]}},
                 {"statistics": ["mean", "covariance"], "columns": ["cost", "insured"]}):
        agg = aggregate(spec, frame)
        assert agg["counts"]["rows"] == [len(frame) - 1]  # withdrawn from the whole job
        assert agg["counts"]["disclosure.suppressed"][0] >= 1
    # k uninsured records are a released cell's worth: nothing is withdrawn.
    frame.loc[frame.index[:K], "insured"] = False
    agg = aggregate({"statistics": ["ols"], "ols": {"y": "cost", "x": ["insured"]}}, frame)
    assert agg["counts"]["rows"] == [len(frame)]


def test_a_third_level_counts_only_where_squares_are_released() -> None:
    # 29 records of three values are not a discrete column (more than one value per ten
    # records): the bound of two or three levels applies.
    frame = hospital_frame(81, 300).dropna(subset=["cost"]).iloc[:29].copy()
    frame["los"] = np.where(np.arange(len(frame)) % 2 == 0, 1.0, 2.0)
    frame.loc[frame.index[7], "los"] = 3.0  # n, sum and sum of squares solve three counts
    mean_only = aggregate({"statistics": ["mean"], "columns": ["los"]}, frame)
    assert mean_only["counts"]["rows"] == [len(frame)]
    with_std = aggregate({"statistics": ["mean", "std"], "columns": ["los"]}, frame)
    assert with_std["counts"]["rows"] == [len(frame) - 1]


def test_a_discrete_columns_rare_values_leave_its_sums_whatever_their_number() -> None:
    """R6-1 on the joint route: a stage coded 0-3 (four values, three patients at 3).
    Beside a histogram of it, the column's n and sum solve for the counts the histogram
    lacks, so the rare stage's records leave the job even with the mean alone."""
    frame = hospital_frame(84, 400).dropna(subset=["cost"]).reset_index(drop=True)
    stage = np.zeros(len(frame))
    stage[100:140], stage[200:225], stage[[300, 301, 302]] = 1.0, 2.0, 3.0
    frame["los"] = stage
    agg = aggregate({"statistics": ["mean"], "columns": ["los"]}, frame)
    assert agg["counts"]["rows"] == [len(frame) - 3]
    # A model does not withdraw its discrete regressor's rare values (that would bias the
    # fit): the provider's part fails (R6-1e, tests/compute/test_joint_sdc_levels.py).
    with pytest.raises(InvalidInput) as refused:
        aggregate({"statistics": ["ols"], "ols": {"y": "cost", "x": ["los"]}}, frame)
    assert refused.value.rule == "discrete_rare_value"


def test_a_dominating_outlier_is_withdrawn_from_every_statistic() -> None:
    frame = hospital_frame(82, 400).dropna(subset=["cost"]).reset_index(drop=True)
    honest = {"statistics": ["count", "mean", "std", "grouped"], "columns": ["cost"],
              "groups": {"by": "sex", "categories": ["F", "M"], "values": ["cost"]}}
    assert aggregate(honest, frame)["counts"]["rows"] == [len(frame)]
    frame.loc[9, ["cost", "sex"]] = [2_345_678.9, "F"]
    agg = aggregate(honest, frame)
    c, r = agg["counts"], agg["reals"]
    assert c["rows"] == [len(frame) - 1] and c["disclosure.suppressed"][0] >= 1
    kept = frame.drop(index=9)
    assert r["col.cost.s1"][0] == pytest.approx(kept.cost.sum(), rel=1e-12)
    assert sum(c["grp.rows"]) == len(kept)  # the groups lost it too: totals agree
    # In a group cell only: an outlier that dominates its cell's squared deviations.
    frame = hospital_frame(83, 400).dropna(subset=["cost", "diagnosis"])
    grouped = {"statistics": ["grouped"],
               "groups": {"by": "diagnosis", "categories": ["J18", "I21", "E11", "C34"],
                          "values": ["cost"]}}
    assert aggregate(grouped, frame)["counts"]["rows"] == [len(frame)]
    c34 = frame.index[frame.diagnosis == "C34"][0]
    frame.loc[c34, "cost"] = 400_000.0
    rows = aggregate(grouped, frame)["counts"]["grp.rows"]
    assert rows[3] == int((frame.diagnosis == "C34").sum()) - 1


def glm_round(frame: pd.DataFrame, beta: list[float] | None, **model: Any) -> dict[str, Any]:
    return aggregate({"statistics": ["glm"], "glm": {
        "family": "poisson", "y": "age", "x": ["cost", "los"], "beta": beta, **model}},
        frame)


@pytest.mark.parametrize(("beta", "model"), [
    ([-10.0, 0.0005, 0.0], {}),  # steep on cost: the costliest record holds X'WX
    ([-0.01 * 61234.56, 0.01, 0.0], {}),
    # Centred on the costliest: every other record's W z is a known function of its cost.
    ([0.0045 * 61234.56, -0.0045, 0.0], {"family": "negative_binomial", "alpha": 1.0}),
    ([0.0, 0.0, 1.0], {}),  # steep on the length of stay
])
def test_a_round_at_crafted_coefficients_fails(beta: list[float], model: dict[str, Any]
                                               ) -> None:
    frame = hospital_frame(61, 400)
    frame.loc[11, ["cost", "los", "age"]] = [61234.56, 2.75, 47]
    with pytest.raises(InvalidInput) as refused:
        glm_round(frame, beta, **model)
    assert (refused.value.field, refused.value.rule) == ("glm.beta", GLM_RULE)
    assert not any(ch.isdigit() for ch in str(refused.value))


def test_honest_rounds_pass() -> None:
    frame = hospital_frame(62, 400)
    for beta in (None, [3.0, 0.0, 0.0], [3.2, 1e-5, 0.01]):
        assert glm_round(frame, beta)["counts"]["glm.n"][0] > 0
    frame["visited"] = (frame.los > 5).astype(float)
    spec = {"statistics": ["glm"], "glm": {"family": "binomial", "y": "insured",
                                           "x": ["age", "los"], "beta": [1.0, 0.001, 0.0]}}
    assert aggregate(spec, frame)["counts"]["glm.n"][0] > 0
