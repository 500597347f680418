"""What a script table gives away beside its rows: left-out groups (``complement``), the
records holding a statistic's value (``threshold``), a std's contributions (squared
deviations), and the unions of its rows in the differencing audit."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from authz.wire import RunReport
from compute import statistics
from containers import runjob
from containers.rederive import Finding, rederive
from containers.rederive_margins import complement_findings, margin_labels
from containers.runspec import RunResult
from sandbox.demo_data import hospital_table
from tests.redteam.test_redteam_3 import MIN_CELL, PERMITTED, ScriptAgent

TYPES = {"ward": "string", "sex": "string", "cost": "number"}
POLICY = statistics.policy_for(10, None)


def _rules(found: list[Finding]) -> set[str]:
    return {f.rule for f in found}


def _wards(sizes: dict[tuple[str, str], int], costed: int | None = None) -> pd.DataFrame:
    """An input of (ward, sex) groups of the given sizes; every cost present, or only the
    first ``costed`` records' of the groups below the threshold."""
    rng = np.random.default_rng(4)
    parts = [pd.DataFrame({"ward": [w] * n, "sex": [s] * n,
                           "cost": np.round(rng.gamma(4.0, 900.0, n), 2)})
             for (w, s), n in sizes.items()]
    frame = pd.concat(parts, ignore_index=True)
    if costed is not None:
        small = frame.groupby(["ward", "sex"]).cost.transform("size") < POLICY.min_count
        frame.loc[frame.index[small][costed:], "cost"] = np.nan
    return frame.astype(str).replace("nan", "")


def _check(frame: pd.DataFrame, by: list[str], stats: tuple[str, ...] = ("mean",)
           ) -> list[Finding]:
    """Re-derive the honest table of ``frame`` by ``by`` that leaves out groups below k."""
    typed = frame.assign(cost=pd.to_numeric(frame.cost))
    t = typed.groupby(by).agg(n=("ward", "size"),
                              **{f"{s}_cost": ("cost", s) for s in stats}).reset_index()
    t = t[t.n >= POLICY.min_count]
    rows = [[f"{v:.6f}" if isinstance(v, float) else str(v) for v in r]
            for r in t.itertuples(index=False)]
    return rederive(list(t.columns), rows, frame, TYPES, POLICY)


def test_left_out_groups_of_one_to_k_minus_one_records_are_a_complement() -> None:
    big = {("A", "F"): 40, ("A", "M"): 35, ("B", "F"): 30, ("B", "M"): 25}
    assert _check(_wards(big), ["ward"]) == []  # nothing left out
    assert "complement" in _rules(_check(_wards(big | {("Z", "F"): 3}), ["ward"]))
    # Left-out groups of k records or more in all: their total is itself k records.
    assert _check(_wards(big | {("Y", "F"): 6, ("Z", "M"): 6}), ["ward"]) == []


def test_a_line_leaving_out_one_to_k_minus_one_records_is_a_complement() -> None:
    # Ward A's men (3) are left out: ward A's total (a table by ward gives it) less its
    # row of women gives them, although the table leaves out 15 records in all.
    sizes = {("A", "F"): 40, ("A", "M"): 3, ("B", "F"): 30, ("B", "M"): 25,
             ("Z", "F"): 6, ("Z", "M"): 6}
    found = _check(_wards(sizes), ["ward", "sex"])
    assert [f.message.startswith("a line") for f in found if f.rule == "complement"] == [True]


def test_left_out_values_of_one_to_k_minus_one_are_a_complement() -> None:
    """Twelve records left out, three of them with a cost: the total cost less the rows'
    is the sum of three costs."""
    big = {("A", "F"): 40, ("B", "M"): 25}
    frame = _wards(big | {("Y", "F"): 6, ("Z", "M"): 6}, costed=3)
    found = _check(frame, ["ward"], ("mean", "sum"))
    assert {(f.rule, f.column) for f in found} == {("complement", 3), ("complement", 4)}


def test_left_out_records_dominated_by_one_are_a_complement() -> None:
    """Twelve records left out (k or more: their count passes), one of them far above the
    rest: the total less the rows is mostly that record's cost. Without it the same
    table, a std included, is released."""
    big = {("A", "F"): 40, ("B", "M"): 25}
    frame = _wards(big | {("Y", "F"): 6, ("Z", "M"): 6})
    assert _check(frame, ["ward"], ("mean", "sum", "std")) == []
    left = frame.index[frame.ward == "Y"]
    frame.loc[left[0], "cost"] = "800000.00"
    found = _check(frame, ["ward"], ("mean", "sum"))
    assert {(f.rule, f.column) for f in found} == {("complement", 3), ("complement", 4)}
    # Far from the rest in squared deviations only: the std's complement is dominated.
    frame.loc[left[0], "cost"] = "40000.00"
    assert _check(frame, ["ward"], ("mean",)) == []
    found = _check(frame, ["ward"], ("mean", "std"))
    assert {(f.rule, f.column) for f in found} == {("complement", 4)}


def test_a_row_whose_column_holds_fewer_than_k_values_is_a_threshold() -> None:
    sizes = {("A", "F"): 40, ("B", "M"): 12}
    frame = _wards(sizes)
    frame.loc[frame.index[frame.ward == "B"][3:], "cost"] = ""  # three costs of twelve
    found = _check(frame, ["ward"], ("mean", "std"))
    assert {(f.rule, f.column, f.row) for f in found} == {("threshold", 3, 2),
                                                           ("threshold", 4, 2)}


def test_a_std_dominated_by_one_squared_deviation_is_found() -> None:
    """Twenty costs alike and one far out: small beside the sum (the mean passes nk and
    p%), but most of the spread; mean and std would give it."""
    rng = np.random.default_rng(2)
    frame = _wards({("A", "F"): 40, ("B", "M"): 20})
    b = frame.index[frame.ward == "B"]
    frame.loc[b, "cost"] = [f"{v:.2f}" for v in np.round(rng.normal(3000, 30, 20), 2)]
    frame.loc[b[7], "cost"] = "60000.00"
    assert _check(frame, ["ward"], ("mean",)) == []
    found = _check(frame, ["ward"], ("mean", "std"))
    assert {(f.column, f.row) for f in found} == {(4, 2)}
    assert _rules(found) <= {"dominance", "p_percent"} and found


def test_complement_findings_carry_no_data() -> None:
    frame = _wards({("A", "F"): 40, ("A", "M"): 3, ("B", "F"): 30, ("B", "M"): 7})
    found = complement_findings([frame.ward.to_numpy(), frame.sex.to_numpy()],
                                {2: frame.cost.to_numpy() != ""}, POLICY.min_count)
    assert found
    for f in found:
        assert set(re.findall(r"\d+", f.text())) <= {str(POLICY.min_count - 1), "3"}, f


def test_margin_labels_are_the_unions_of_rows_per_line() -> None:
    ward = np.array(list("AAAABBBBZ"))
    sex = np.array(list("FFMMFFMMF"))
    # Rows AF, AM and BF; BM and ZF left out.
    groups = [(ward == w) & (sex == s) for w, s in (("A", "F"), ("A", "M"), ("B", "F"))]
    labels = margin_labels([ward, sex], groups)
    unions = {tuple(int(i) for i in np.flatnonzero(lab == c))
              for lab in labels for c in range(lab.max() + 1)}
    # The total (3 rows), ward A's line (2 rows), sex F's line (2 rows); ward B, sex M
    # hold one row each: their union is that row, audited already.
    assert len(labels) == 3 and unions == {(0, 1, 2, 3, 4, 5), (0, 1, 2, 3), (0, 1, 4, 5)}
    assert margin_labels([ward], groups[:1]) == []


def _report(agent: ScriptAgent, outputs: dict[str, pd.DataFrame]) -> RunReport:
    """One script run of ``agent`` whose script wrote ``outputs``: the agent's report."""
    task, job_dir = agent._prepare("script", "episodes.csv")
    (job_dir / "out").mkdir()
    for name, table in outputs.items():
        table.to_csv(job_dir / "out" / name, index=False)
    result = RunResult(task.job_id, 0, False, False, b"", b"", False, False, job_dir / "out",
                       None, None, None)
    return runjob.report(task, job_dir, result, "img", None, audit=agent.store)


def test_a_complete_table_is_still_released_automatically(tmp_path: Path) -> None:
    """Every group of k records or more, none left out: released as before, and again in
    a later run (its unions of rows are the same populations, not near ones)."""
    agent = ScriptAgent(tmp_path)
    frame = hospital_table(7, 600, "R")
    agent.publish(frame)
    df = frame[PERMITTED]
    # Sums of a continuous column: a length of stay is discrete, and a cell of 600
    # episodes where a rare stay is held by 1..k-1 is a short cell (R6-1b).
    by = df.groupby(["diagnosis", "sex"]).agg(n=("los", "size"), sum_cost=("cost", "sum"),
                                              mean_cost=("cost", "mean")).reset_index()
    assert by.n.min() >= MIN_CELL
    overall = pd.DataFrame({"n": [len(df)], "sum_cost": [round(df.cost.sum(), 2)]})
    for _ in range(2):
        got = agent.run({"a.csv": by.round(6), "b.csv": overall})
        assert set(got) == {"table-1.csv", "table-2.csv"}
        assert int(got["table-1.csv"].n.sum()) == len(df)


def test_a_total_is_audited_against_the_union_of_a_tables_rows(tmp_path: Path) -> None:
    """A statistics job released the total; a script table then leaves out one record:
    besides ``complement``, the union of its rows is a population within k-1 records of
    the released total (the shared audit store), on the reviewer's list."""
    agent = ScriptAgent(tmp_path)
    frame = hospital_table(7, 600, "R")
    frame.loc[5, "diagnosis"] = "C91"
    agent.publish(frame)
    agent.statistics({"analyses": [{"kind": "frequency", "dims": ["sex"]}]})
    df = frame[PERMITTED]
    by = df.groupby("diagnosis").agg(n=("los", "size")).reset_index()
    report = _report(agent, {"by.csv": by[by.n >= MIN_CELL]})
    assert report.state == "awaiting_review"
    findings = report.outputs[0].findings
    assert any(f.startswith("complement: the table leaves out") for f in findings)
    assert any(f.startswith("differencing: the records of a total") for f in findings)


def test_a_later_total_is_compared_with_an_approved_tables_rows(tmp_path: Path) -> None:
    """A person released a table leaving out one record despite its ``complement``
    finding; a later run's overall table is that record's difference from the table's
    rows: held (``differencing``), across jobs."""
    agent = ScriptAgent(tmp_path)
    frame = hospital_table(7, 600, "R")
    frame.loc[5, "diagnosis"] = "C91"
    agent.publish(frame)
    df = frame[PERMITTED]
    by = df.groupby("diagnosis").agg(n=("los", "size")).reset_index()
    first = _report(agent, {"by.csv": by[by.n >= MIN_CELL]})
    assert first.state == "awaiting_review"
    with agent.store.session() as store:
        store.settle(f"job_{agent.jobs}", {"by.csv"})  # approved by the output checkers
    later = _report(agent, {"total.csv": pd.DataFrame({"n": [len(df)]})})
    assert later.state == "awaiting_review"
    assert any(f.startswith("differencing: the records of this row")
               for f in later.outputs[0].findings)


def test_a_table_of_many_keys_is_left_to_a_person() -> None:
    frame = pd.DataFrame({f"k{i}": ["a"] * 20 for i in range(7)})
    header = [*frame.columns, "n"]
    found = rederive(header, [["a"] * 7 + ["20"]], frame, {}, POLICY)
    assert _rules(found) == {"too_many_keys"}
