"""Red team, fourth pass: attacks on the fixes of the third pass (F8-F17).

Same convention as ``test_redteam_3.py`` (whose harness, ``ScriptAgent``, these tests
reuse): each test is an attack that computes what it learns (``recovered``) and ends by
asserting the defence, that this is not the secret. While the leak is open that assertion
fails and the test is marked ``xfail(strict=True, raises=AssertionError)`` (``leak``); the
day a fix closes it strict xfail reports it and the marker goes (run with ``--runxfail``
to see each recovery).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sandbox.demo_data import hospital_table
from tests.redteam.test_redteam_3 import MIN_CELL, PERMITTED, ScriptAgent, script_agent

__all__ = ["script_agent"]  # the fixture, imported for pytest


def _dialysis_patient(frame: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """``frame`` with one patient given twelve dialysis episodes (one record each), the
    only N18 diagnosis; and that patient's total cost of care (the secret)."""
    patient = frame.loc[5]
    visits = pd.DataFrame([patient] * 11).assign(los=1, cost=np.round(
        np.random.default_rng(5).normal(3000, 150, 11), 2))
    frame = pd.concat([frame, visits], ignore_index=True)
    mine = frame.patient_id == patient.patient_id
    frame.loc[mine, "diagnosis"] = "N18"
    return frame, float(frame.cost[mine].sum())


# ---- R4-1: the script route counts records, not persons (F13 fixed on one route only) ---

def test_script_row_of_one_patients_episodes_is_that_patients_total(
        script_agent: ScriptAgent) -> None:
    """The statistics route now counts a cell's persons (F13); the script route, on the
    same dataset with the same declared identifier, still counts records: a row holding
    one patient's twelve episodes passes the threshold (12 >= 10) and is released
    automatically as that patient's total cost."""
    frame, secret = _dialysis_patient(hospital_table(7, 600, "R"))
    script_agent.publish(frame)
    df = frame[PERMITTED]
    table = df.groupby("diagnosis").agg(n=("cost", "size"),
                                        sum_cost=("cost", "sum")).reset_index()
    got = script_agent.run({"cost_by_diagnosis.csv": table.round(2)})
    recovered = None
    if "table-1.csv" in got:
        row = got["table-1.csv"].set_index("diagnosis").loc["N18"]
        recovered = round(float(row.sum_cost), 2)
    assert recovered != round(secret, 2), "disclosed: one patient's total cost of care"


# ---- R4-2: the differencing audit counts records, not persons ---------------------------

def test_statistics_total_before_and_after_one_patients_erasure(
        script_agent: ScriptAgent) -> None:
    """One patient's twelve episodes are erased from the provider's file (an erasure
    request, or a patient who moved away) between two statistics jobs asking the same
    total. Threshold and dominance count persons now (F13), but the audit that compares
    a new cell's population with those released before counts records: the two totals'
    populations differ by twelve records (>= k) though by one person, so both are
    released and their difference is that patient's total."""
    frame, secret = _dialysis_patient(hospital_table(7, 600, "R"))
    spec = {"analyses": [{"kind": "magnitude", "dims": ["sex"], "value": "cost",
                          "statistics": ["sum"]}]}

    def total_cost() -> float | None:
        doc = script_agent.statistics(spec)
        cells = {c["cell"]["sex"]: c["value"]
                 for c in doc["analyses"][0]["tables"][0]["cells"]}
        return cells.get("All")

    script_agent.publish(frame)
    before = total_cost()
    script_agent.publish(frame[frame.diagnosis != "N18"])  # the patient is erased
    after = total_cost()
    recovered = None if before is None or after is None else round(before - after, 2)
    assert recovered != round(secret, 2), "disclosed: the erased patient's total cost"


# ---- R4-3: PSI: clipping (F16's fix) makes the sums at two widths differ by one value ----

def test_psi_sums_at_two_widths_give_the_largest_employer() -> None:
    """F16 fixed the width refusal (a binary search on the register's largest value) by
    clipping every value into ``[0, 2^bits - 1]``. But the clipped sum is released: a
    second job asking the same intersection one bit narrower clips exactly the values at
    or above the new ceiling, and the two sums differ by their excess over it. With one
    large employer among the matched firms that difference is its size less the ceiling:
    the exact value, where the refusal gave only a factor of two. (Which width clips one
    firm alone the same two-job difference finds by bisection: zero or not.) The width is
    now the platform's: a spec naming another is refused, and the attack recovers nothing."""
    from compute.errors import InvalidInput
    from compute.psi import parse_psi_spec, run_psi

    rng = np.random.default_rng(4)
    firms = 40
    server = pd.DataFrame({"code": [f"91{i:08d}" for i in range(firms)],
                           "employees": rng.integers(5, 200, firms)})
    server.loc[17, "employees"] = 1234  # the one large employer, matched below
    client = pd.DataFrame({"code": [*server.code[:30], *(f"92{i:08d}" for i in range(5))]})
    schema = {"code": "string", "employees": "integer"}

    def intersection_sum(bits: int) -> Any:
        try:
            spec = parse_psi_spec({"id": "code", "value": {"column": "employees",
                                                           "bits": bits}}, schema)
        except InvalidInput:  # the width refused: no release at that width
            return None
        released, _ = run_psi(spec, client, server, MIN_CELL)
        return released["sum"]

    wide, narrow = intersection_sum(11), intersection_sum(10)  # ceilings 2047 and 1023
    recovered = None if wide is None or narrow is None else 1023 + (wide - narrow)
    assert recovered != 1234, "disclosed: the large employer's exact head count"


# ---- R4-4: joint: a dominance withdrawal is a record set less one, by subtraction --------

def test_joint_std_withdrawal_differenced_against_a_job_without_std() -> None:
    """F14b fixed the joint std by having the provider withdraw the record dominating its
    squared deviations from the whole job. Which records a job withdraws depends on what
    it asks: the same permit's next job asking the count and sum of cost without the std
    dominates nothing (2.3 M among 400 costs of about 11,000 passes nk and p% on |x|), so
    it keeps the record. The second job's sum less the first's is that patient's exact
    cost, and the two counts say it is one record; the first job even says that it hid
    something (``suppressed_cells``)."""
    from compute.spec import parse_spec
    from tests.compute.conftest import SCHEMA, hospital_frame
    from tests.compute.harness import run_joint

    frames = {f"h{i}": hospital_frame(70 + i, 400) for i in range(3)}
    frames["h2"].loc[9, "cost"] = 2_345_678.9  # one transplant patient at h2

    def job(statistics: list[str]) -> tuple[Any, Any]:
        spec = parse_spec({"statistics": statistics, "columns": ["cost"]}, SCHEMA)
        cost = run_joint(spec, frames, min_cell_count=MIN_CELL).columns["cost"]
        return cost["n"], cost["sum"]

    (n_a, sum_a), (n_b, sum_b) = job(["count", "sum", "std"]), job(["count", "sum"])
    recovered = (n_b - n_a, round(sum_b - sum_a, 2))
    assert recovered != (1, 2_345_678.9), "disclosed: the transplant patient's cost"


# ---- R4-5: the script route's left-out groups: k records, one of them dominating ---------

def test_script_left_out_groups_dominated_by_one_record(script_agent: ScriptAgent) -> None:
    """F9's complement rule lets a table leave out groups below k when they hold none or
    at least k records together: then ``total - rows`` is a cell of k records, released
    implicitly, and only its count is checked. A cell is also disclosive when one record
    dominates its sum (nk, p%: the statistics route hides such a cell, here its pooled
    rare bucket, and a complement). Here the left-out groups are ten records: the one
    leukaemia patient's CAR-T therapy (800,000 CNY) and nine ordinary rare cases. The
    total less the rows, less nine typical costs, is the therapy's cost to within 1 %
    (p% promises 10 %); both tables re-derive and are released automatically."""
    frame = hospital_table(7, 600, "R")
    for diagnosis, at in {"C91": [0], "Q21": [1, 2, 3], "G35": [4, 6, 7],
                          "M32": [8, 9, 10]}.items():
        frame.loc[at, "diagnosis"] = diagnosis
    secret = 800_000.0
    frame.loc[0, "cost"] = secret  # the one C91 patient
    script_agent.publish(frame)
    df = frame[PERMITTED]
    by = df.groupby("diagnosis").agg(n=("cost", "size"), sum_cost=("cost", "sum")).reset_index()
    overall = pd.DataFrame({"n": [len(df)], "sum_cost": [df.cost.sum()]})
    got = script_agent.run({"a_by_diagnosis.csv": by[by.n >= MIN_CELL].round(2),
                            "b_overall.csv": overall.round(2)})
    recovered = None
    if set(got) == {"table-1.csv", "table-2.csv"}:
        rows, total = got["table-1.csv"], got["table-2.csv"].iloc[0]
        left_n = int(total.n - rows.n.sum())
        left_sum = float(total.sum_cost - rows.sum_cost.sum())
        typical = float(rows.sum_cost.sum() / rows.n.sum())
        estimate = left_sum - (left_n - 1) * typical
        recovered = (left_n, abs(estimate - secret) < 0.02 * secret)
    assert recovered != (10, True), "disclosed: the C91 patient's cost to within 2 %"


# ---- R4-6: PSI sums: no dominance rule at all --------------------------------------------

def test_psi_category_sum_dominated_by_one_employer() -> None:
    """A PSI release shows a category's count and sum once the count is k or more; the
    sum goes out whatever its contributions. District D4 has ten matched firms: nine
    small ones and the district's one large employer (6,000 staff). D4's sum less nine
    typical firms (district D1's shown mean) is that employer's head count to within
    2 %; the statistics route (and the joint route, per provider) would hide such a cell
    by nk dominance and p% (10 %)."""
    from compute.psi import PSI_VALUE_BITS, parse_psi_spec, run_psi

    rng = np.random.default_rng(3)
    firms = 40
    server = pd.DataFrame({"code": [f"91{i:08d}" for i in range(firms)],
                           "district": "D1",
                           "employees": rng.integers(5, 200, firms)})
    server.loc[:9, "district"] = "D4"  # ten firms in D4, all matched below
    secret = 6_000
    server.loc[4, "employees"] = secret  # the district's one large employer
    client = pd.DataFrame({"code": [*server.code[:30], *(f"92{i:08d}" for i in range(5))]})
    spec = parse_psi_spec({"id": "code", "categories": {
        "column": "district", "values": ["D1", "D4"]},
        "value": {"column": "employees", "bits": PSI_VALUE_BITS}},
        {"code": "string", "district": "string", "employees": "integer"})
    released, _ = run_psi(spec, client, server, MIN_CELL)
    d1, d4 = ({c["category"]: c for c in released["categories"]}[d] for d in ("D1", "D4"))
    recovered = None
    if d4["sum"] is not None and d1["sum"] is not None:
        estimate = d4["sum"] - (d4["count"] - 1) * d1["sum"] / d1["count"]
        recovered = abs(estimate - secret) < 0.02 * secret
    assert recovered is not True, "disclosed: the large employer's head count to 2 %"
