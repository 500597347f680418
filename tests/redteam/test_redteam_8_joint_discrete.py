"""Red team, R6-1e: the joint route's twin of R6-1c (a model beside a histogram).

Same convention as ``test_redteam_6_discrete.py``: an attack computes ``recovered`` and
asserts that it is not the secret. Every party plays in this process
(``tests.compute.harness.joint_sums``: the providers' local aggregation and checks, CKKS,
masks, the controller's combine, the requester's decryption).

* R6-1e (high, joint statistics; fixed): a joint block (moments, OLS, GLM) reads its
  columns' sums and sums of squares, and ``compute.joint_sdc.level_cells`` held a block's
  column to the partition rule only where it takes up to three values (a flag). A
  discrete column with many values (an age) was not held to it. Three hospitals, ages
  that repeat (each held by many patients at each hospital) and one 99-year-old at
  hospital 0. Job 1, a joint histogram of age by year: hospital 0 withdraws the
  99-year-old's one-record bin, so every other age's pooled count is released exact.
  Job 2, a joint OLS of the length of stay on age: nothing is withdrawn (no flag, no
  dominance), and the block's ``n`` and sum of ages less the histogram's counts and
  ages are one record and its age, 99. Fixed: a provider whose block column is
  discrete (``partition_bound``) and has a value held by 1..k-1 of its records kept
  fails its part (rule ``discrete_rare_value``, naming the column), so the joint job
  fails and releases nothing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from compute.errors import InvalidInput
from compute.spec import parse_spec
from tests.compute.conftest import SCHEMA, hospital_frame
from tests.compute.harness import joint_sums

MIN_CELL = 10
SECRET_AGE = 99


def _hospitals() -> dict[str, pd.DataFrame]:
    """Three hospitals of 1,000 episodes, ages 20-59 each held by 25 patients; hospital 0's
    first patient is 99 instead (the only one above 59 anywhere)."""
    frames = {}
    for i in range(3):
        frame = hospital_frame(80 + i, 1000)
        frame["age"] = np.tile(np.arange(20, 60), 25)
        frames[f"h{i}"] = frame
    frames["h0"].loc[0, "age"] = SECRET_AGE
    return frames


def test_joint_ols_beside_a_joint_histogram_gives_the_rare_age() -> None:
    frames = _hospitals()
    edges = [float(a) for a in range(0, 122)]  # one bin per year of age
    hist = parse_spec({"statistics": ["histogram"], "bins": {"age": edges}}, SCHEMA)
    counts, _ = joint_sums(hist, frames, min_cell_count=MIN_CELL)
    per_year = counts.counts["hist.age"]  # [below the first edge, each year, above the last]
    known_n = sum(per_year[1:-1])
    known_sum = sum(age * n for age, n in zip(range(0, 121), per_year[1:-1], strict=True))

    ols = parse_spec({"statistics": ["ols"], "ols": {"y": "los", "x": ["age"]}}, SCHEMA)
    try:
        sums, _ = joint_sums(ols, frames, min_cell_count=MIN_CELL)
    except InvalidInput as refused:  # hospital 0 withholds its part: the job fails
        assert refused.rule == "discrete_rare_value"
        assert "'age'" in str(refused)
        assert not any(ch.isdigit() for ch in str(refused))  # no figure of the data
        recovered = None
    else:
        hidden_n = sums.counts["ols.n"][0] - known_n
        hidden_sum = round(float(sums.reals["ols.s1"][1]) - known_sum)
        recovered = hidden_sum if hidden_n == 1 else None
    assert recovered != SECRET_AGE, "disclosed: the 99-year-old's age"
