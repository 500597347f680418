"""The script route audits a statistic over the records it covers, not its keys' records."""

from __future__ import annotations

import numpy as np
import pandas as pd

from compute import statistics
from compute.sdc.audit import row_identities, slots_for, table_sketches
from compute.sdc.combinations import differenced
from containers import rederive, script_audit
from sandbox.demo_data import hospital_table

KEY = "k3y-f0r-th3-t3st"
POLICY = statistics.policy_for(10, None)
TYPES = {"sex": "string", "diagnosis": "string", "cost": "number"}


def _table(frame: pd.DataFrame) -> rederive.Rederived:
    by_sex = frame.groupby("sex").agg(n=("cost", "size"), sum_cost=("cost", "sum"),
                                      mean_cost=("cost", "mean")).reset_index().round(2)
    text = frame.astype(str).replace("nan", "")
    done = rederive.rederive_outputs([("t.csv", by_sex.to_csv(index=False).encode())],
                                     text, TYPES, POLICY)[0]
    assert not done.findings, done.findings
    return done


def test_a_statistics_population_is_the_records_holding_its_value() -> None:
    frame = hospital_table(7, 600, "R")[["sex", "diagnosis", "cost"]]
    frame.loc[20:31, "cost"] = np.nan  # not costed yet
    frame.loc[5, "diagnosis"] = np.nan  # costed, not coded yet
    done = _table(frame)
    ids = row_identities(frame, KEY)
    pops, row_of, _ = script_audit._populations(done, ids, slots_for(10), False)
    # Rows and total by keys, then the same over the costed records (sum and mean
    # share one: the column's).
    assert len(pops) == 2 * (len(done.groups) + 1)
    assert sorted(row_of.tolist()) == [-1, -1, 0, 0, 1, 1]
    costed = int(frame.cost.notna().sum())
    assert sorted(pops.n.tolist())[-2:] == [costed, len(frame)]
    # The statistics route's sum by diagnosis: its total lacks one costed record.
    coded = table_sketches(frame, ["diagnosis"], ids, slots_for(10), value="cost")
    assert differenced(coded.take(np.array([len(coded) - 1])), pops, 10)[0]


def test_a_column_every_row_holds_adds_no_population() -> None:
    frame = hospital_table(7, 600, "R")[["sex", "diagnosis", "cost"]]
    done = _table(frame)
    pops, *_ = script_audit._populations(done, row_identities(frame, KEY), slots_for(10),
                                        False)
    assert len(pops) == len(done.groups) + 1
