"""Red team, second pass: leaks through what the statistics route releases automatically.

Each test is an attack by a requester holding an ordinary permit (minimum cell count 10,
default provider settings, automatic release). The attack computes what it learns
(``recovered``) and the test ends by asserting the defence, that this is not the secret.
While the leak is open that assertion fails, and the test is marked
``xfail(strict=True, raises=AssertionError)``: the expected failure *is* the attack
recovering the secret (run with ``--runxfail`` to see each recovery). The day a fix
closes a leak the test passes, strict xfail reports it, and the marker goes: the test
stays as the regression test of the fix.

The attacks run the agent's own code for a statistics job, without Docker:
``containers.jobdir.prepare`` (projection of the permitted columns, keyed row
identities) then ``containers.statistics_job.statistics_report`` (parse, compute, disclosure
rules, the differencing audit against the provider's ``AuditStore``, the cap), exactly
what ``containers.agent.Agent._complete_statistics`` calls. The document it returns is
the ``statistics.json`` output the controller stores and the requester fetches
unchanged. Findings and fixes: REDTEAM.md at the repository root.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from authz.wire import RunTask
from compute import sdc
from compute.errors import InvalidInput
from containers import jobdir, statistics_job
from containers.audit_store import AuditStore
from containers.executor import Limits
from sandbox.client import ApiError
from sandbox.demo_data import FIELDS, hospital_table
from tests.redteam.conftest import Red

PERMITTED = ["age", "sex", "diagnosis", "los", "cost"]  # never patient_id
MIN_CELL = 10


def leak(reason: str) -> pytest.MarkDecorator:
    """An open leak: the test's final assertion (the defence) fails because the attack
    recovers the secret."""
    return pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)


class Agent:
    """The provider's agent computing statistics jobs of one requester (one audit store)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "data").mkdir(parents=True, exist_ok=True)
        self.store = AuditStore(root / "audit.sqlite")
        self.jobs = 0

    def publish(self, frame: pd.DataFrame, file: str = "episodes.csv") -> str:
        frame.to_csv(self.root / "data" / file, index=False)
        return file

    def run(self, spec: dict[str, Any], *, dataset_id: str = "ds_1",
            file: str = "episodes.csv", permit_id: str = "pmt_1",
            extra_fields: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
        self.jobs += 1
        job_id = f"job_{self.jobs}"
        task = RunTask.model_validate({
            "job_id": job_id, "kind": "statistics", "permit_id": permit_id,
            "requester_id": "req_1", "script_b64": base64.b64encode(b"{}").decode(),
            "script_sha256": "0" * 64, "min_cell_count": MIN_CELL, "timeout_s": 60,
            "statistics": spec,
            "datasets": [{"id": dataset_id, "code": "episodes", "provider_id": "prov_1",
                          "format": "csv", "location": file,
                          "fields": [f for f in FIELDS if f["name"] in PERMITTED]
                          + list(extra_fields)}]})
        job_dir = self.root / "work" / job_id
        jobdir.prepare(task, job_dir, lambda _: [self.root / "data"], "img", Limits(),
                       self.store)
        report = statistics_job.statistics_report(task, job_dir, "img", self.store)
        assert report.outputs[0].decision == "released"
        doc: dict[str, Any] = json.loads(base64.b64decode(report.outputs[0].content_b64 or ""))
        return doc


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    return Agent(tmp_path)


def cells(doc: dict[str, Any], analysis: int = 0, table: int = 0) -> list[dict[str, Any]]:
    a = doc["analyses"][analysis]
    return list((a["tables"][table] if "tables" in a else a)["cells"])


# ---- F1: the rules listed on a suppressed cell tell an empty cell from a small one -------

def hidden_but_not_empty(table: list[dict[str, Any]], fixed: dict[str, Any], dim: str
                         ) -> list[Any]:
    """Along one line of a table, the hidden cells whose rules do not say ``zeros``."""
    line = [c for c in table if all(c["cell"][k] == v for k, v in fixed.items())
            and c["cell"][dim] != "All"]
    return [c["cell"][dim] for c in line if c["value"] is None and "zeros" not in c["rules"]]


# F1: per-cell rules of suppressed cells ('zeros' vs 'threshold') told which hidden cells
# hold records: a person unique on age had their diagnosis, sex and length of stay
# disclosed. Hidden cells are now alike (status "suppressed", no rules).
def test_rule_tags_of_hidden_cells_give_a_unique_persons_attributes(agent: Agent) -> None:
    frame = hospital_table(7, 2000, "R")
    counts = frame.age.value_counts()
    common_los = frame.los.value_counts().loc[lambda n: n >= MIN_CELL].index
    # The neighbour: the one patient of their age (and of a common length of stay).
    target = frame.index[frame.age.isin(counts[counts == 1].index)
                         & frame.los.isin(common_los)][0]
    # Ages held by fewer than k patients are pooled under one label; here the neighbour
    # is the only patient of a rare age, so the pooled row is theirs alone.
    others = frame.age.isin(counts[counts < MIN_CELL].index) & (frame.index != target)
    frame.loc[others, "age"] = counts.idxmax()
    agent.publish(frame)
    secret = frame.loc[target]
    doc = agent.run({"analyses": [{"kind": "frequency", "dims": ["age", dim]}
                                  for dim in ("diagnosis", "sex", "los")]})
    age = sdc.POOLED
    recovered = {}
    for i, dim in enumerate(("diagnosis", "sex", "los")):
        row = [c for c in cells(doc, i) if c["cell"]["age"] == age]
        assert row
        assert all(c["value"] is None for c in row)  # every cell of the row is hidden
        holding = hidden_but_not_empty(cells(doc, i), {"age": age}, dim)
        recovered[dim] = holding[0] if len(holding) == 1 else None
    truth = {"diagnosis": secret.diagnosis, "sex": secret.sex, "los": secret.los}
    assert recovered != truth, f"disclosed: {recovered}"


# F1b: the 'zeros' and 'class_disclosure' tags undid the class-disclosure suppression.
def test_rule_tags_undo_the_class_disclosure_suppression(agent: Agent) -> None:
    frame = hospital_table(15, 2000, "R")
    frame.loc[frame.diagnosis == "K35", "sex"] = "F"  # the group attribute to protect
    agent.publish(frame)
    doc = agent.run({"analyses": [{"kind": "frequency", "dims": ["sex", "diagnosis"]}]})
    by = {(c["cell"]["sex"], c["cell"]["diagnosis"]): c for c in cells(doc)}
    assert by[("M", "K35")]["value"] is None and by[("F", "K35")]["value"] is None
    women = hidden_but_not_empty(cells(doc), {"diagnosis": "K35"}, "sex")
    # The line's total is released, and it is the hidden (F, K35) cell.
    recovered = by[("All", "K35")]["value"] if women == ["F"] else None
    assert recovered != int((frame.diagnosis == "K35").sum()), "disclosed: all K35 are F"


# ---- F2: a continuous column as a dimension publishes every value as a label ------------

def labels(doc: dict[str, Any], dim: str, analysis: int = 0) -> set[Any]:
    """The category labels a table publishes along ``dim`` (totals and the pooled bucket
    aside: neither is a data value)."""
    return {c["cell"][dim] for c in cells(doc, analysis)} - {"All", sdc.POOLED}


def test_a_numeric_dimension_publishes_the_maximum(agent: Agent) -> None:
    """F2 (fixed): a number column is never a dimension, and an integer dimension
    publishes no label fewer than k records hold (its rare values are pooled)."""
    frame = hospital_table(7, 2000, "R")
    frame.loc[0, "age"] = 104  # the oldest patient, the only one of their age
    agent.publish(frame)
    with pytest.raises(InvalidInput) as refused:
        agent.run({"analyses": [{"kind": "frequency", "dims": ["sex", "cost"]}]})
    assert refused.value.field == "statistics.analyses[0].dims[1]"
    assert "label" in refused.value.rule
    doc = agent.run({"analyses": [{"kind": "frequency", "dims": ["sex", "age"]}]})
    held = frame.age.value_counts()
    most = max(labels(doc, "age"))
    recovered = most if held[most] < MIN_CELL else None
    assert recovered is None and most != frame.age.max(), f"disclosed: {most}"
    assert all(held[a] >= MIN_CELL for a in labels(doc, "age"))


def test_a_numeric_dimension_publishes_every_value_under_dp(agent: Agent) -> None:
    """F2b (fixed): the same on the differentially private route, whose labels are not
    noised."""
    frame = hospital_table(8, 500, "R")
    agent.publish(frame)
    with pytest.raises(InvalidInput) as refused:
        agent.run({"analyses": [{"kind": "frequency", "dims": ["cost"]}],
                   "dp": {"epsilon": 0.1}})
    assert refused.value.field == "statistics.analyses[0].dims[0]"
    doc = agent.run({"analyses": [{"kind": "frequency", "dims": ["los"]}],
                     "dp": {"epsilon": 0.1}})
    assert doc["dp"]["epsilon"] == 0.1
    held = frame.los.value_counts()
    recovered = labels(doc, "los")
    assert recovered != set(frame.los), "disclosed: the whole length-of-stay column"
    assert recovered == set(held[held >= MIN_CELL].index)
    assert sdc.POOLED in {c["cell"]["los"] for c in cells(doc)}


# ---- F3: a new version of a dataset is a new audit key --------------------------------------

# F3: the differencing audit was keyed by dataset id; a new version of the dataset (same
# code, next version, new id) was not compared with the populations released from the
# previous one. It is keyed by the dataset's lineage (provider and code) now.
def test_a_new_version_escapes_the_differencing_audit(agent: Agent) -> None:
    v1 = hospital_table(7, 2000, "R")
    newcomer = v1.iloc[[0]].assign(patient_id="R-NEW", diagnosis="K35", cost=23456.78)
    v2 = pd.concat([v1, newcomer], ignore_index=True)  # next month's edition: one admission
    spec = {"analyses": [{"kind": "magnitude", "dims": ["diagnosis"], "value": "cost",
                          "statistics": ["sum"]}]}
    before = agent.run(spec, dataset_id="ds_v1", file=agent.publish(v1, "v1.csv"))
    after = agent.run(spec, dataset_id="ds_v2", file=agent.publish(v2, "v2.csv"),
                      permit_id="pmt_2")
    b = {c["cell"]["diagnosis"]: c["value"] for c in cells(before)}
    a = {c["cell"]["diagnosis"]: c["value"] for c in cells(after)}
    recovered = None if None in (a["K35"], b["K35"]) else round(a["K35"] - b["K35"], 2)
    assert recovered != 23456.78, "disclosed: the newcomer's cost"


# ---- F5: an exact median says k records share it; the mean gives the one left over ----

# F5: a median released exactly said at least k records hold it; in a cell of k + 1 the
# mean then gave the one other record's value, in a cell of k + 2 the mean and std the two
# others. A quantile at (or a midpoint with) a common value whose records leave 1..k-1
# others is now suppressed (quantile_remainder).
def test_exact_median_mean_and_std_of_a_small_cell_give_the_odd_records(agent: Agent) -> None:
    frame = hospital_table(21, 2000, "R")
    one = frame.index[:MIN_CELL + 1]
    frame.loc[one, ["diagnosis", "los"]] = ["Z00", 1]  # day cases of a rare diagnosis...
    frame.loc[one[4], "los"] = 9  # ...and one patient who stayed nine days
    two = frame.index[MIN_CELL + 1:2 * MIN_CELL + 3]
    frame.loc[two, ["diagnosis", "los"]] = ["Z01", 2]
    frame.loc[two[:2], "los"] = [5, 7]  # two patients who stayed longer
    agent.publish(frame)
    doc = agent.run({"analyses": [
        {"kind": "frequency", "dims": ["diagnosis"]},
        {"kind": "magnitude", "dims": ["diagnosis"], "value": "los",
         "statistics": ["mean", "median", "std"]}]})

    def cell(code: str) -> tuple[Any, ...]:
        return tuple(next(c["value"] for c in cells(doc, *at) if c["cell"]["diagnosis"] == code)
                     for at in ((0, 0), (1, 0), (1, 1), (1, 2)))

    recovered: dict[str, list[float]] = {}
    for code in ("Z00", "Z01"):
        n, mean, median, std = cell(code)
        if None in (n, mean, median, std) or not float(median).is_integer():
            continue
        # An exact (not midpoint) median is a value >= k records hold; not all of the cell
        # (class disclosure would hide it): take exactly k, the rest are n - k records.
        rest, total = n - MIN_CELL, n * mean - MIN_CELL * median
        squares = (n - 1) * std ** 2 + n * mean ** 2 - MIN_CELL * median ** 2
        if rest == 1:
            recovered[code] = [round(total, 6)]
        elif rest == 2:  # x + y = total, x^2 + y^2 = squares
            gap = (2 * squares - total ** 2) ** 0.5
            recovered[code] = [round((total - gap) / 2, 6), round((total + gap) / 2, 6)]
    assert recovered != {"Z00": [9], "Z01": [5, 7]}, f"disclosed: {recovered}"


# ---- F7: a flagged magnitude cell is held back but not protected ------------------------

def test_a_flagged_magnitude_cell_comes_back_from_its_margin(agent: Agent) -> None:
    """F7 (fixed): a cell flagged for class disclosure has its value held back, and
    secondary suppression protects it like a suppressed one."""
    frame = hospital_table(23, 2000, "R")
    group = frame.index[:12]
    frame.loc[group, ["diagnosis", "los"]] = ["Z00", 3]  # every Z00 patient stayed 3 days
    agent.publish(frame)
    doc = agent.run({"analyses": [
        {"kind": "frequency", "dims": ["diagnosis"]},
        {"kind": "magnitude", "dims": ["diagnosis"], "value": "los", "statistics": ["sum"]}]})
    counts = {c["cell"]["diagnosis"]: c["value"] for c in cells(doc, 0)}
    sums = {c["cell"]["diagnosis"]: c for c in cells(doc, 1)}
    # Flagged (class disclosure), so hidden, and alike to any hidden cell to the requester.
    assert sums["Z00"]["value"] is None and sums["Z00"]["status"] == "suppressed"
    released = [c["value"] for k, c in sums.items() if k not in ("Z00", "All")]
    recovered = None
    if None not in released and sums["All"]["value"] is not None:
        recovered = (sums["All"]["value"] - sum(released)) / counts["Z00"]
    assert recovered != 3, "disclosed: the Z00 patients' length of stay"


# ---- F6: a regression on a rare binary column -------------------------------------------

# F6: OLS on a flag one record holds gave const + coef = that record's outcome, with
# 1,998 residual dof. A two-valued regressor now needs min_count records at each level
# (threshold), and no record may have leverage above 1/min_count (leverage).
def test_ols_on_a_rare_flag_gives_the_flagged_records_cost(agent: Agent) -> None:
    frame = hospital_table(22, 2000, "R").assign(hiv="false")
    frame.loc[123, "hiv"] = "true"  # one HIV-positive patient
    agent.publish(frame)
    doc = agent.run({"analyses": [{"kind": "ols", "y": "cost", "x": ["hiv"]}]},
                    extra_fields=({"name": "hiv", "type": "boolean",
                                   "sensitivity": "sensitive"},))
    model = doc["analyses"][0]
    coef = {c["term"]: c["coef"] for c in model["coefficients"] or []}
    recovered = round(coef["const"] + coef["hiv"], 2) if coef else None
    assert recovered != frame.loc[123, "cost"], "disclosed: the HIV patient's cost"


# ---- F4: joint statistics: a column total is the margin of a grouping ----------------------

def test_joint_column_total_less_its_groups_gives_the_suppressed_record() -> None:
    from compute.spec import parse_spec
    from tests.compute.conftest import SCHEMA, hospital_frame
    from tests.compute.harness import run_joint

    frames = {f"h{i}": hospital_frame(40 + i, 400).assign(age=lambda d: d.age.clip(upper=98))
              for i in range(3)}
    frames["h0"].loc[7, ["age", "cost"]] = [99, 31337.25]  # the oldest patient anywhere
    spec = parse_spec({"statistics": ["sum", "grouped"], "columns": ["cost"],
                       "groups": {"by": [{"column": "age", "edges": [0, 99, 200]}],
                                  "values": ["cost"]}}, SCHEMA)
    res = run_joint(spec, frames, min_cell_count=MIN_CELL)
    assert res.grouped is not None
    groups = res.grouped["cells"]
    withdrawn = res.columns["cost"]["n"] - sum(g["cost"]["n"] for g in groups)
    total = res.columns["cost"]["sum"]
    assert isinstance(total, float) and isinstance(withdrawn, int)
    recovered = round(total - sum(g["cost"]["sum"] for g in groups), 2) if withdrawn == 1 \
        else None
    assert recovered != 31337.25, "disclosed: the 99-year-old's cost"


def test_joint_group_held_by_one_provider_is_that_providers_figure() -> None:
    """F8 (fixed): min_providers was checked per job, not per cell, so a group only one
    hospital has records in was that hospital's exact figures. A masked cell-holders round
    now tells every provider how many hold each explicit cell; a cell fewer than
    min_providers hold is withdrawn from every statistic (compute/cell_holders.py)."""
    from compute.spec import parse_spec
    from tests.compute.conftest import DIAGNOSES, SCHEMA, hospital_frame
    from tests.compute.harness import run_joint

    frames = {f"h{i}": hospital_frame(50 + i, 400).assign(cost=lambda d: d.cost.fillna(5000.0))
              for i in range(3)}
    for other in ("h1", "h2"):  # lung cancer (C34) is treated at h0 only
        frames[other].loc[frames[other].diagnosis == "C34", "diagnosis"] = "J18"
    spec = parse_spec({"statistics": ["grouped"], "groups": {
        "by": "diagnosis", "categories": DIAGNOSES, "values": ["cost"]}}, SCHEMA)
    res = run_joint(spec, frames, min_cell_count=MIN_CELL)
    assert res.grouped is not None
    c34 = next(c for c in res.grouped["cells"] if c["key"] == ["C34"])
    h0 = frames["h0"][frames["h0"].diagnosis == "C34"].cost
    recovered = (c34["cost"]["n"], round(c34["cost"]["sum"], 4))
    assert recovered != (len(h0), round(h0.sum(), 4)), "disclosed: h0's own C34 figures"


# ---- end to end: F1 and F3 through the controller and a real agent --------------------------

@pytest.mark.docker
@pytest.mark.slow
def test_rule_tags_end_to_end(red: Red) -> None:
    """F1 through the controller: the requester's own statistics.json, fetched from the
    controller, no longer tells a rare-age patient's diagnosis by the rules of the
    hidden cells of their row (the pooled row of rare ages is theirs alone here)."""
    frame = hospital_table(31, 2000, "R")
    counts = frame.age.value_counts()
    target = frame.index[frame.age.isin(counts[counts == 1].index)][0]
    # The neighbour is the only patient of a rare age: the pooled row of ages is theirs.
    others = frame.age.isin(counts[counts < MIN_CELL].index) & (frame.index != target)
    frame.loc[others, "age"] = counts.idxmax()
    data = red.dataset(frame)
    job, doc = red.statistics(data, {"analyses": [
        {"kind": "frequency", "dims": ["age", "diagnosis"]}]})
    assert job["state"] == "released" and doc is not None
    hidden = [c for c in cells(doc, 0) if c["value"] is None]
    assert hidden and {c["status"] for c in hidden} == {"suppressed"}
    assert all(c["rules"] == [] for c in hidden)
    recovered = hidden_but_not_empty(cells(doc, 0), {"age": sdc.POOLED}, "diagnosis")
    assert recovered != [frame.diagnosis[target]], f"disclosed: {recovered}"


@pytest.mark.docker
@pytest.mark.slow
def test_a_numeric_dimension_is_refused_end_to_end(red: Red) -> None:
    """F2 (fixed) end to end: the controller refuses a number column as a dimension
    before any job is queued, naming the field."""
    data = red.dataset(seed=31)
    with pytest.raises(ApiError) as refused:
        red.statistics(data, {"analyses": [{"kind": "frequency", "dims": ["sex", "cost"]}]})
    assert refused.value.status == 400
    assert refused.value.body["field"] == "statistics.analyses[0].dims[1]"


@pytest.mark.docker
@pytest.mark.slow
# F3 end to end: next month's edition of the dataset (same code, version 2) gave the one
# new admission's cost by subtraction.
def test_a_new_version_escapes_the_audit_end_to_end(red: Red) -> None:
    import time
    import uuid
    from datetime import UTC, datetime, timedelta

    from tests.docker.helpers import dataset_body
    from tests.redteam.conftest import Data

    v1 = hospital_table(32, 2000, "R")
    first = red.dataset(v1)
    spec = {"analyses": [{"kind": "magnitude", "dims": ["diagnosis"], "value": "cost",
                          "statistics": ["sum"]}]}
    job1, doc1 = red.statistics(first, spec)
    assert doc1 is not None, job1
    provider = red.provider
    code = provider.client.get(f"/datasets/{first.dataset_id}")["code"]
    newcomer = v1.iloc[[0]].assign(patient_id="R-NEW", diagnosis="K35", cost=23456.78)
    v2 = pd.concat([v1, newcomer], ignore_index=True)
    file = f"red-{uuid.uuid4().hex[:8]}.csv"
    v2.to_csv(provider.root / file, index=False)
    body = {**dataset_body(provider.code, file), "code": code}  # the provider's next edition
    r = provider.client.http.post(f"{provider.client.url}/api/v1/datasets", json=body,
                                  timeout=60)
    assert r.status_code == 201, r.text
    ds2 = r.json()
    assert ds2["version"] == 2
    for _ in range(60):  # the agent's schema check activates it
        if provider.client.get(f"/datasets/{ds2['id']}")["status"] == "active":
            break
        time.sleep(1)
    req = red.stack.requester.post("/requests", {
        "purpose": "Cost of inpatient care by diagnosis, for pricing review.",
        "use_kind": "statistics", "business_system": "harbor-pricing-2026",
        "items": [{"dataset_id": ds2["id"], "columns": ["age", "sex", "diagnosis", "los",
                                                       "cost"]}]})
    permit = provider.client.post(f"/requests/{req['id']}/items/{ds2['id']}/approve", {
        "expires_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(), "max_runs": 50,
        "min_cell_count": MIN_CELL, "risk_assessment": "aggregates only",
        "script_release": "automatic"})["permit_id"]
    job2, doc2 = red.statistics(Data(v2, file, ds2["id"], permit), spec)
    assert doc2 is not None, job2
    b = {c["cell"]["diagnosis"]: c["value"] for c in cells(doc1)}
    a = {c["cell"]["diagnosis"]: c["value"] for c in cells(doc2)}
    recovered = None if None in (a["K35"], b["K35"]) else round(a["K35"] - b["K35"], 2)
    assert recovered != 23456.78, "disclosed: the newcomer's cost"
