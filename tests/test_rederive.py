"""Re-deriving a script's table from the permitted input: what verifies, what is flagged."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from compute import statistics
from containers.rederive import Finding, output_findings, rederive, rederive_outputs

TYPES = {"ward": "string", "sex": "string", "cost": "number", "age": "integer"}
POLICY = statistics.policy_for(10, None)


def _input() -> pd.DataFrame:
    rng = np.random.default_rng(9)
    n = 600
    frame = pd.DataFrame({"ward": rng.choice(list("ABC"), n), "sex": rng.choice(["F", "M"], n),
                          "cost": np.round(rng.gamma(4.0, 900.0, n), 2),
                          "age": rng.integers(18, 90, n)})
    frame.loc[0, "ward"] = "Z"  # one record alone in its ward
    frame.loc[1, ["ward", "cost"]] = ["C", 50_000_000.0]  # dominates ward C
    return frame.astype(str)


def _table(frame: pd.DataFrame, by: list[str], decimals: int = 2) -> pd.DataFrame:
    typed = frame.assign(cost=frame.cost.astype(float))
    t = typed.groupby(by)["cost"].agg(n="count", mean_cost="mean").reset_index()
    t["mean_cost"] = t["mean_cost"].round(decimals)
    return t


def _rules(found: list[Finding]) -> set[str]:
    return {f.rule for f in found}


def _check(table: pd.DataFrame, frame: pd.DataFrame) -> list[Finding]:
    rows = [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in r]
            for r in table.itertuples(index=False)]
    return rederive(list(table.columns), rows, frame, TYPES, POLICY)


def test_an_honest_table_of_large_groups_verifies() -> None:
    frame = _input()
    frame = frame[frame.ward.isin(["A", "B"])]  # no small or dominated cell
    assert _check(_table(frame, ["ward", "sex"]), frame) == []
    overall = pd.DataFrame({"n": [len(frame)], "mean_cost": [frame.cost.astype(float).mean()]})
    assert _check(overall, frame) == []


def test_a_false_count_and_a_small_true_count_are_found() -> None:
    frame = _input()
    table = _table(frame, ["ward"])
    table.loc[table.ward == "Z", "n"] = 10  # the script claims ten records
    assert {"count_mismatch", "threshold"} <= _rules(_check(table, frame))


def test_a_dominated_sum_is_found() -> None:
    frame = _input()
    t = frame.assign(cost=frame.cost.astype(float)).groupby("ward")["cost"].agg(
        n="count", sum_cost="sum").reset_index()
    t = t[t.ward != "Z"]
    assert "dominance" in _rules(_check(t, frame))


@pytest.mark.parametrize(("column", "cell", "rule"), [
    ("mean_cost", "1234.5678901", "not_plain_number"),  # too many decimals
    ("mean_cost", "1.2e3", "not_plain_number"),
    ("mean_cost", "Alice", "not_plain_number"),
    ("mean_cost", None, "value_mismatch"),  # a tiny offset of the true mean
    ("secret_42", "1", "unexplained_column"),  # a header carrying a value
    ("median_cost", "1", "order_statistic"),
])
def test_smuggling_in_cells_and_headers_is_found(column: str, cell: str | None,
                                                 rule: str) -> None:
    frame = _input()
    frame = frame[frame.ward.isin(["A", "B"])]
    table = _table(frame, ["ward"])
    rows = [[str(r.ward), str(r.n), f"{r.mean_cost:.2f}"] for r in table.itertuples()]
    header = ["ward", "n", column]
    if cell is None:
        rows[0][2] = f"{float(rows[0][2]) + 0.01:.2f}"
    else:
        rows[0][2] = cell
    assert rule in _rules(rederive(header, rows, frame, TYPES, POLICY))


def test_precision_is_the_columns_finest_and_carries_nothing() -> None:
    frame = _input()
    frame = frame[frame.ward.isin(["A", "B"])]
    table = _table(frame, ["ward"], decimals=3)
    # Written with fewer decimals than the column's finest: a mismatch unless the dropped
    # digits were zeros (pandas writes 12.5 for 12.50).
    rows = [[str(r.ward), str(r.n), f"{r.mean_cost:.{3 if i else 1}f}"]
            for i, r in enumerate(table.itertuples())]
    assert "value_mismatch" in _rules(rederive(["ward", "n", "mean_cost"], rows, frame,
                                               TYPES, POLICY))
    rows = [[str(r.ward), str(r.n), repr(float(r.mean_cost))] for r in table.itertuples()]
    assert rederive(["ward", "n", "mean_cost"], rows, frame, TYPES, POLICY) == []


def test_keys_not_in_the_input_and_shapes_are_found() -> None:
    frame = _input()
    found = rederive(["band", "n"], [["0-17", "30"], ["18-39", "40"]], frame, TYPES, POLICY)
    assert "unexplained_column" in _rules(found)
    found = rederive(["ward", "n"], [["Q", "30"]], frame, TYPES, POLICY)
    assert "key_values" in _rules(found)
    many = output_findings([(f"t{i}.csv", b"n\n600\n") for i in range(11)], frame, TYPES,
                           POLICY)
    assert all("too_many_outputs" in _rules(f) for f in many)


def test_a_mean_rounded_to_units_and_written_as_float_verifies() -> None:
    frame = _input()
    frame = frame[frame.ward.isin(["A", "B"])]
    table = _table(frame, ["ward"], decimals=0)
    rows = [[str(r.ward), str(r.n), f"{r.mean_cost:.1f}"] for r in table.itertuples()]
    assert rederive(["ward", "n", "mean_cost"], rows, frame, TYPES, POLICY) == []


def test_leaving_rows_out_is_a_shape_finding() -> None:
    frame = _input()
    frame = frame[frame.ward.isin(["A", "B"])]
    table = _table(frame, ["ward", "sex"])
    assert "shape" in _rules(_check(table.iloc[:2], frame))


def test_a_group_all_in_one_category_is_class_disclosure() -> None:
    frame = _input()
    frame = frame[frame.ward.isin(["A", "B"])].copy()
    frame.loc[frame.ward == "B", "sex"] = "F"
    assert "class_disclosure" in _rules(_check(_table(frame, ["ward", "sex"]), frame))


def test_findings_carry_no_value_only_rules_and_positions() -> None:
    frame = _input()
    table = _table(frame, ["ward", "sex"])
    table.loc[0, "n"] = 999
    texts = [f.text() for f in _check(table, frame)]
    assert texts
    for t in texts:
        numbers = set(re.findall(r"\d+(?:\.\d+)?", t))
        assert numbers <= {"10", "6"} | {str(i) for i in range(1, 20)}, t
        assert "999" not in t and "Z" not in t.split(":")[1]


def test_a_verified_table_is_released_as_the_platform_writes_it() -> None:
    frame = _input()
    frame = frame[frame.ward.isin(["A", "B"])]
    table = _table(frame, ["sex", "ward"], decimals=1).iloc[::-1]
    rows = [[str(r.sex), str(r.ward), str(r.n), f"{r.mean_cost:.1f}"]
            for r in table.itertuples()]
    header = ["sex", "ward", "n", "avg_cost"]
    content = b"\n".join([",".join(header).encode(), *(",".join(r).encode() for r in rows)])
    done = rederive_outputs([("x.csv", content)], frame, TYPES, POLICY)[0]
    assert done.findings == [] and done.rendered is not None
    lines = done.rendered.decode().splitlines()
    # Input column order, the normalised statistic, rows sorted, 7 significant digits.
    assert lines[0] == "ward,sex,n,mean_cost"
    assert lines[1].startswith("A,F,")
    truth = frame[(frame.ward == "A") & (frame.sex == "F")].cost.astype(float).mean()
    figure = lines[1].split(",")[3]
    unit = 10.0 ** (np.floor(np.log10(abs(truth))) - 6)  # the 7th significant digit
    assert abs(float(figure) - truth) <= 0.5 * unit + 1e-9  # not the script's .1f
    assert len(figure.replace(".", "").lstrip("0")) <= 7


def test_a_table_without_rows_is_a_finding_not_a_crash() -> None:
    """An empty table (e.g. the script's groups all empty on mock data) is checked like any
    other; it once stopped the agent's mock run with an exception."""
    frame = _input()
    empty = _table(frame, ["ward"]).iloc[0:0]
    found = _check(empty, frame)
    assert isinstance(found, list)
