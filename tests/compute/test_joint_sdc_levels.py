"""R6-1e: a joint block (moments, OLS, GLM) reading a discrete column with a rare value
fails the provider's part (compute/joint_sdc.py ``check_block_levels``); a block whose
discrete columns' values are each held by k or more runs, exactly; a few-valued flag keeps
its withdrawal (``level_cells``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from compute.errors import InvalidInput
from compute.joint_sdc import RARE_VALUE_RULE
from compute.sdc.magnitude_cells import partition_bound
from compute.spec import parse_spec
from tests.compute.conftest import SCHEMA, hospital_frame
from tests.compute.harness import joint_sums
from tests.compute.test_joint_sdc import K, aggregate


def ages(seed: int, rows: int = 1000) -> pd.DataFrame:
    """Episodes whose ages repeat (20-59, each held by rows/40 records: a discrete column),
    no missing cost."""
    frame = hospital_frame(seed, rows).assign(age=np.tile(np.arange(20, 60), rows // 40))
    return frame.dropna(subset=["cost"]).reset_index(drop=True)


BLOCKS: list[tuple[str, dict[str, Any]]] = [
    ("ols.age", {"statistics": ["ols"], "ols": {"y": "cost", "x": ["age", "los"]}}),
    ("ols.age", {"statistics": ["ols"], "ols": {"y": "age", "x": ["cost"]}}),
    ("mom.age", {"statistics": ["correlation"], "columns": ["cost", "age"]}),
    ("glm.age", {"statistics": ["glm"], "glm": {"family": "poisson", "y": "age",
                                                 "x": ["los"]}}),
    ("glm.age", {"statistics": ["glm"], "glm": {"family": "binomial", "y": "insured",
                                                 "x": ["age"]}}),
]


@pytest.mark.parametrize(("field", "spec"), BLOCKS)
def test_a_rare_value_of_a_discrete_block_column_fails_the_part(
        field: str, spec: dict[str, Any]) -> None:
    frame = ages(90)
    frame.loc[7, "age"] = 99  # one 99-year-old; every other age held by about 25
    with pytest.raises(InvalidInput) as refused:
        aggregate(spec, frame)
    assert (refused.value.field, refused.value.rule) == (field, RARE_VALUE_RULE)
    message = str(refused.value)
    assert "'age'" in message and "top-code" in message
    assert not any(ch.isdigit() for ch in message)  # no figure of the data


@pytest.mark.parametrize(("field", "spec"), BLOCKS)
def test_every_value_held_by_k_or_more_runs(field: str, spec: dict[str, Any]) -> None:
    frame = ages(91)
    assert partition_bound(frame.age.to_numpy(dtype=float)) is None
    agg = aggregate(spec, frame)
    assert agg["counts"]["rows"] == [len(frame)]  # nothing withdrawn, nothing refused


def test_a_rare_value_outside_the_blocks_records_does_not_count() -> None:
    """The rule is on the block's complete cases among the records kept: the 99-year-old
    whose cost is missing is in no OLS of cost."""
    frame = ages(92)
    frame.loc[7, ["age", "cost"]] = [99, np.nan]
    agg = aggregate({"statistics": ["ols"], "ols": {"y": "cost", "x": ["age"]}}, frame)
    assert agg["counts"]["ols.n"] == [len(frame) - 1]


def test_a_continuous_column_is_not_held_to_it() -> None:
    """Costs are mostly distinct (``partition_bound`` not None): every value is rare."""
    frame = hospital_frame(93, 400).dropna(subset=["cost"]).reset_index(drop=True)
    agg = aggregate({"statistics": ["ols"], "ols": {"y": "cost", "x": ["los"]}}, frame)
    assert agg["counts"]["ols.n"] == [len(frame)]


def test_a_few_valued_flag_keeps_its_withdrawal() -> None:
    """A three-valued stage (discrete) with a rare stage, or a flag one record holds: the
    records of the rare level leave the job (``level_cells``), as before; no refusal."""
    frame = hospital_frame(94, 400).dropna(subset=["cost"]).reset_index(drop=True)
    stage = np.zeros(len(frame))
    stage[100:200], stage[[300, 301]] = 1.0, 2.0
    frame["los"] = stage
    agg = aggregate({"statistics": ["ols"], "ols": {"y": "cost", "x": ["los"]}}, frame)
    assert agg["counts"]["ols.n"] == [len(frame) - 2]
    frame = frame.assign(insured=True)
    frame.loc[4, "insured"] = False
    agg = aggregate({"statistics": ["ols"], "ols": {"y": "cost", "x": ["insured"]}}, frame)
    assert agg["counts"]["ols.n"] == [len(frame) - 1]


def test_provider_local_a_value_rare_here_fails_though_common_pooled() -> None:
    """Conservative: no party sees the pooled counts, so a value one provider holds for
    fewer than k records fails that provider's part even where the others hold many."""
    common = ages(95)
    here = ages(96)
    here.loc[:5, "age"] = 99  # six 99-year-olds here (fewer than k)
    common.loc[:39, "age"] = 99  # forty there: pooled, forty-six
    spec = {"statistics": ["ols"], "ols": {"y": "cost", "x": ["age"]}}
    assert aggregate(spec, common)["counts"]["ols.n"] == [len(common)]
    with pytest.raises(InvalidInput) as refused:
        aggregate(spec, here)
    assert refused.value.rule == RARE_VALUE_RULE


def test_a_joint_ols_on_a_discrete_regressor_stays_exact() -> None:
    """Three providers, every age held by k or more at each: the pooled sums are the
    pooled records' own (CKKS and masks aside: to the encoding's rounding)."""
    frames = {f"h{i}": ages(97 + i, 800) for i in range(3)}
    for frame in frames.values():  # discrete, each age held by k or more
        assert partition_bound(frame.age.to_numpy(dtype=float)) is None
        assert frame.age.value_counts().min() >= K
    spec = parse_spec({"statistics": ["ols"], "ols": {"y": "cost", "x": ["age"]}}, SCHEMA)
    sums, _ = joint_sums(spec, frames, min_cell_count=K)
    pooled = pd.concat(frames.values())
    x = pooled[["cost", "age"]].to_numpy(dtype=float)
    assert sums.counts["ols.n"] == [len(pooled)]
    assert sums.counts["disclosure.suppressed"] == [0]
    s1, s2 = ([float(v) for v in sums.reals[e]] for e in ("ols.s1", "ols.s2"))
    assert np.allclose(s1, x.sum(axis=0), rtol=1e-9, atol=1e-3)
    assert np.allclose(s2, (x.T @ x)[np.triu_indices(2)], rtol=1e-9, atol=1e-3)
