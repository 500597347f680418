"""Red team, third pass: leaks through the script route's verified tables, the statistics
route's magnitude rules, joint statistics (GLM rounds, OLS, moments, the job view) and PSI,
found by a requester holding an ordinary permit (minimum cell count 10, default provider
settings, automatic release of script outputs accepted).

Same convention as ``test_redteam_2.py``: each test is an attack that computes what it
learns (``recovered``) and ends by asserting the defence, that this is not the secret.
While the leak is open that assertion fails and the test is marked
``xfail(strict=True, raises=AssertionError)``; the day a fix closes the leak strict xfail
reports it and the marker goes, leaving the test as the regression test of the fix (run
with ``--runxfail`` to see each recovery).

No Docker: script attacks run the agent's own post-run code, ``containers.runjob.report``
(file-level checks, re-derivation from the permitted input, the differencing audit
against the provider's ``AuditStore``, the cap, the platform's rendering of verified
tables), on the files a script would have written to ``/out``, after
``containers.jobdir.prepare`` has projected the permitted columns and written the keyed
row identities, exactly as ``containers.agent`` runs a script job around its container.
The container only produces those files, and the attacker controls them anyway. Joint
attacks play every party in one process (``tests.compute.harness``).
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from authz.wire import RunTask
from compute import sdc
from containers import jobdir, runjob, statistics_job
from containers.audit_store import AuditStore
from containers.executor import Limits
from containers.runspec import RunResult
from sandbox.demo_data import FIELDS, hospital_table

PERMITTED = ["age", "sex", "diagnosis", "los", "cost"]  # never patient_id
MIN_CELL = 10


def leak(reason: str) -> pytest.MarkDecorator:
    """An open leak: the test's final assertion (the defence) fails because the attack
    recovers the secret."""
    return pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)


class ScriptAgent:
    """The provider's agent finishing script jobs of one requester (one audit store): what
    happens after the container exits, on the files the script left in ``/out``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "data").mkdir(parents=True, exist_ok=True)
        self.store = AuditStore(root / "audit.sqlite")
        self.jobs = 0

    def publish(self, frame: pd.DataFrame, file: str = "episodes.csv") -> str:
        frame.to_csv(self.root / "data" / file, index=False)
        return file

    def _prepare(self, kind: str, file: str, **extra: Any) -> tuple[RunTask, Path]:
        self.jobs += 1
        job_id = f"job_{self.jobs}"
        task = RunTask.model_validate({
            "job_id": job_id, "kind": kind, "permit_id": "pmt_1",
            "requester_id": "req_1", "script_b64": base64.b64encode(b"pass\n").decode(),
            "script_sha256": "0" * 64, "min_cell_count": MIN_CELL, "timeout_s": 60,
            "script_release": "automatic",
            "datasets": [{"id": "ds_1", "code": "episodes", "provider_id": "prov_1",
                          "format": "csv", "location": file,
                          "fields": [f for f in FIELDS if f["name"] in PERMITTED],
                          # As the controller sends it (authz.runs): the dataset's
                          # declared identifier fields, whatever the permit.
                          "identifiers": [f["name"] for f in FIELDS
                                          if f["sensitivity"] == "identifier"]}],
            **extra})
        job_dir = self.root / "work" / job_id
        jobdir.prepare(task, job_dir, lambda _: [self.root / "data"], "img", Limits(),
                       self.store)
        return task, job_dir

    def statistics(self, spec: dict[str, Any], *, file: str = "episodes.csv"
                   ) -> dict[str, Any]:
        """A statistics job of the same requester on the same dataset (same audit store):
        the ``statistics.json`` document it releases."""
        task, job_dir = self._prepare("statistics", file, statistics=spec)
        report = statistics_job.statistics_report(task, job_dir, "img", self.store)
        doc: dict[str, Any] = json.loads(base64.b64decode(report.outputs[0].content_b64 or ""))
        return doc

    def run(self, outputs: dict[str, pd.DataFrame], *, file: str = "episodes.csv"
            ) -> dict[str, pd.DataFrame]:
        """One run whose script wrote ``outputs`` (name: table): the tables the requester
        can fetch, by their released names. A run held for review releases nothing."""
        task, job_dir = self._prepare("script", file)
        job_id = task.job_id
        out = job_dir / "out"
        out.mkdir()
        for name, table in outputs.items():
            table.to_csv(out / name, index=False)
        result = RunResult(job_id, 0, False, False, b"", b"", False, False, out, None, None,
                           None)
        report = runjob.report(task, job_dir, result, "img", None, audit=self.store)
        if report.state != "released":
            return {}
        return {o.name: pd.read_csv(io.BytesIO(base64.b64decode(o.content_b64)))
                for o in report.outputs if o.decision == "released" and o.content_b64}


@pytest.fixture
def script_agent(tmp_path: Path) -> ScriptAgent:
    return ScriptAgent(tmp_path)


# ---- F9: a verified table's left-out rows come back as the overall total less its rows --

def test_script_table_left_out_group_is_the_total_less_its_rows(
        script_agent: ScriptAgent) -> None:
    """F9 (fixed): a verified table left out groups of 1..k-1 records with no secondary
    suppression, and an overall (key-less) table verified too; the total less the rows
    gave the left-out group's count and sums. Now a table whose left-out groups hold 1 to
    k-1 records (in all, or in a line) is held (``complement``), and the union of its
    rows is audited against the total (``differencing``)."""
    frame = hospital_table(7, 600, "R")
    frame.loc[5, ["diagnosis", "los", "cost"]] = ["C91", 17, 12345.67]  # the one leukaemia
    script_agent.publish(frame)
    df = frame[PERMITTED]  # what the script reads at /in/data.csv
    # What the script writes: an ordinary table by diagnosis (small groups may be left
    # out, and the checks drop them anyway) and the overall figures.
    by = df.groupby("diagnosis").agg(n=("los", "size"), sum_los=("los", "sum"),
                                     mean_cost=("cost", "mean")).reset_index()
    overall = pd.DataFrame({"n": [len(df)], "sum_los": [df.los.sum()],
                            "mean_cost": [df.cost.mean()]})
    got = script_agent.run({"a_by_diagnosis.csv": by[by.n >= MIN_CELL].round(6),
                            "b_overall.csv": overall.round(6)})
    recovered = None
    if set(got) == {"table-1.csv", "table-2.csv"}:  # both verified, released automatically
        rows, total = got["table-1.csv"], got["table-2.csv"].iloc[0]
        count = int(total.n - rows.n.sum())
        los = int(total.sum_los - rows.sum_los.sum())
        # Means are rendered to 7 significant digits: the cost to within a few CNY.
        cost = float(total.mean_cost * total.n - (rows.mean_cost * rows.n).sum())
        recovered = (count, los, abs(cost - 12345.67) < 5)
    assert recovered != (1, 17, True), \
        "disclosed: the only C91 patient exists, their length of stay and cost"



def test_script_rows_undo_the_statistics_routes_secondary_suppression(
        script_agent: ScriptAgent) -> None:
    """F9b (fixed): the same across routes: a statistics job's table hid a rare category
    and one complement, the script route then released the complement as a verified row;
    the statistics table's margin less the script rows was the rare one. Now the script
    table is held twice over: it leaves out 1 to k-1 records (``complement``), and the
    union of its rows is within k-1 records of the statistics route's released margin
    (``differencing``, the shared audit store)."""
    # A cost, not a length of stay: a discrete column's sums are held wherever a rare
    # value is (R6-1), which would stop this attack before the defence it tests.
    frame = hospital_table(7, 600, "R")
    frame.loc[5, ["diagnosis", "cost"]] = ["C91", 17017.17]  # the one leukaemia patient
    script_agent.publish(frame)
    doc = script_agent.statistics({"analyses": [
        {"kind": "magnitude", "dims": ["diagnosis"], "value": "cost", "statistics": ["sum"]}]})
    cells = {c["cell"]["diagnosis"]: c["value"]
             for c in doc["analyses"][0]["tables"][0]["cells"]}
    assert cells[sdc.POOLED] is None  # the rare bucket and a complement are hidden
    assert sum(v is None for v in cells.values()) == 2 and cells["All"] is not None
    df = frame[PERMITTED]
    by = df.groupby("diagnosis").agg(n=("cost", "size"),
                                     sum_cost=("cost", "sum")).reset_index().round(2)
    rows = script_agent.run({"by_diagnosis.csv": by[by.n >= MIN_CELL]}).get("table-1.csv")
    recovered = None if rows is None else round(cells["All"] - rows.sum_cost.sum(), 2)
    assert recovered != 17017.17, "disclosed: the C91 patient's cost"

# ---- F10: a joint GLM round at crafted coefficients is the most extreme record ----------

def test_glm_rounds_at_crafted_coefficients_give_the_most_expensive_patient() -> None:
    """Fixed (F10): a provider fails a round whose weights one record dominates (rule
    ``glm_weight_dominance``): the part, so the round, releases nothing."""
    from compute.errors import InvalidInput
    from compute.spec import parse_spec
    from tests.compute.conftest import SCHEMA, hospital_frame
    from tests.compute.harness import joint_sums

    frames = {f"h{i}": hospital_frame(60 + i, 400) for i in range(3)}
    frames["h1"].loc[11, ["cost", "los", "age"]] = [61234.56, 2.75, 47]  # the costliest

    def glm_round(beta: list[float], **model: Any
                  ) -> tuple[list[float], list[float]] | None:
        """One round (a joint job of the permit) at ``beta``: the pooled X'WX (upper
        triangle) and X'Wz, as the requester decrypts them; None when a part failed."""
        spec = parse_spec({"statistics": ["glm"], "glm": {
            "family": "poisson", "y": "age", "x": ["cost", "los"], "beta": beta, **model}},
            SCHEMA)
        try:
            sums, _ = joint_sums(spec, frames, min_cell_count=MIN_CELL)
        except InvalidInput as refused:  # a provider withheld its part: the job fails
            assert refused.rule == "glm_weight_dominance"
            assert not any(ch.isdigit() for ch in str(refused))  # no figure of the data
            return None
        assert not sums.counts["disclosure.suppressed"][0]  # every provider's part released
        return ([float(v) for v in sums.reals["glm.xwx"]],
                [float(v) for v in sums.reals["glm.xwz"]])

    def attack() -> tuple[float, float, int] | None:
        # Rounds 1-2 (Poisson, W = mu = exp(eta)): a public guess of where costs end and a
        # gentle slope (no overflow), then centred on the estimate and steep: X'WX is the
        # top record's x x' times its weight.
        if (r := glm_round([-0.0005 * 20000, 0.0005, 0.0])) is None:
            return None
        guess = r[0][1] / r[0][0]
        if (r := glm_round([-0.01 * guess, 0.01, 0.0])) is None:
            return None
        cost, los = r[0][1] / r[0][0], r[0][2] / r[0][0]
        # Round 3 (negative binomial, alpha 1): eta = s (cost_top - cost) is 0 for the top
        # record and large for every other, whose W z is then eta - 1 and W 1, so X'Wz[0]
        # less what X'WX says of the others is the top record's (y - mu + mu eta) / (1 + mu),
        # mu = 1.
        slope = 0.0045  # keeps mu^2 of the cheapest record encodable
        b0, b1 = slope * cost, -slope
        if (r := glm_round([b0, b1, 0.0], family="negative_binomial", alpha=1.0)) is None:
            return None
        xwx, xwz = r
        others_n, others_cost = xwx[0] - 0.5, xwx[1] - 0.5 * cost
        age = 2 * (xwz[0] - (b0 * others_n + b1 * others_cost - others_n)) + 1
        return (round(cost, 2), round(los, 4), round(age))

    recovered = attack()
    assert recovered != (61234.56, 2.75, 47), \
        "disclosed: the most expensive patient's cost, stay and age"


# ---- F11: PSI: a category's suppressed count and sum are the intersection's less the rest --

def test_psi_suppressed_category_is_the_intersection_less_the_others() -> None:
    import numpy as np

    from compute.psi import parse_psi_spec, run_psi

    rng = np.random.default_rng(3)
    firms = 120
    # The social-insurance register (server): firms by district, declared employees.
    server = pd.DataFrame({"code": [f"91{i:08d}" for i in range(firms)],
                           "district": rng.choice(["D1", "D2", "D3"], firms),
                           "employees": rng.integers(5, 200, firms)})
    server.loc[17, ["district", "employees"]] = ["D4", 1234]  # the one firm in district D4
    # The tax register (client): most of those firms and some others.
    client = pd.DataFrame({"code": [*server.code[:90], *(f"92{i:08d}" for i in range(20))]})
    spec = parse_psi_spec({"id": "code", "categories": {
        "column": "district", "values": ["D1", "D2", "D3", "D4"]},
        "value": {"column": "employees"}},
        {"code": "string", "district": "string", "employees": "integer"})
    released, _ = run_psi(spec, client, server, MIN_CELL)
    shown = [c for c in released["categories"] if c["count"] is not None]
    assert "D4" not in [c["category"] for c in shown]  # D4 is suppressed...
    total = released["sum"]  # withheld (``None``) when a category is dominated
    recovered = (released["intersection"] - sum(c["count"] for c in shown),
                 None if total is None else total - sum(c["sum"] or 0 for c in shown))
    assert recovered != (1, 1234), "disclosed: one D4 firm matched, and its employees"


# ---- F12: the script route's threshold counts records, not a statistic's contributors ----

def test_script_statistic_over_few_non_missing_values_is_released(
        script_agent: ScriptAgent) -> None:
    """F12 (fixed): rederive applied the threshold to the records with the keys, not to
    the records holding the statistic's value; a group of k records of which three have a
    cost released the mean and std of three costs. Now a row whose column holds 1 to k-1
    values is a ``threshold`` finding: the run is held."""
    import numpy as np

    frame = hospital_table(7, 600, "R")
    z99 = frame.index[:12]  # twelve episodes of a rare diagnosis, nine not yet costed
    frame.loc[z99, "diagnosis"] = "Z99"
    frame.loc[z99[3:], "cost"] = np.nan
    frame.loc[z99[:3], "cost"] = [4800.0, 5150.0, 5425.5]  # the first is the attacker's own
    script_agent.publish(frame)
    df = frame[PERMITTED]
    table = df.groupby("diagnosis").agg(n=("los", "size"), mean_cost=("cost", "mean"),
                                        std_cost=("cost", "std")).reset_index()
    got = script_agent.run({"cost_by_diagnosis.csv": table[table.n >= MIN_CELL].round(6)})
    recovered = None
    if "table-1.csv" in got:  # released automatically
        row = got["table-1.csv"].set_index("diagnosis").loc["Z99"]
        # Three contributors (the count of values is not the row's n): with one of them
        # known, mean and std give the other two (x + y = s, x^2 + y^2 = q).
        own, three = 4800.0, 3
        s = three * row.mean_cost - own
        q = (three - 1) * row.std_cost ** 2 + three * row.mean_cost ** 2 - own ** 2
        gap = (2 * q - s * s) ** 0.5
        # To within a cent or so (the platform renders 7 significant digits).
        recovered = [abs((s + d) / 2 - v) < 0.05 for d, v in ((-gap, 5150.0), (gap, 5425.5))]
    assert recovered != [True, True], "disclosed: two other patients' costs"


# ---- F13: contributors are records, never persons -----------------------------------------

def test_a_cell_of_one_patients_episodes_is_that_patients_total(
        script_agent: ScriptAgent) -> None:
    import numpy as np

    frame = hospital_table(7, 600, "R")
    patient = frame.loc[5]
    # One dialysis patient: twelve episodes (one record each) of the only N18 diagnosis.
    visits = pd.DataFrame([patient] * 11).assign(los=1, cost=np.round(
        np.random.default_rng(5).normal(3000, 150, 11), 2))
    frame = pd.concat([frame, visits], ignore_index=True)
    frame.loc[frame.patient_id == patient.patient_id, "diagnosis"] = "N18"
    script_agent.publish(frame)
    doc = script_agent.statistics({"analyses": [
        {"kind": "magnitude", "dims": ["diagnosis"], "value": "cost",
         "statistics": ["sum"]}]})
    cells = {c["cell"]["diagnosis"]: c["value"]
             for c in doc["analyses"][0]["tables"][0]["cells"]}
    secret = frame.cost[frame.patient_id == patient.patient_id].sum()
    recovered = None if cells.get("N18") is None else round(cells["N18"], 2)
    assert recovered != round(secret, 2), "disclosed: one patient's total cost of care"


def _dialysis_patient() -> tuple[pd.DataFrame, float]:
    """Episodes with one dialysis patient: twelve episodes (one record each) of the only
    N18 diagnosis; and that patient's total cost."""
    import numpy as np

    frame = hospital_table(7, 600, "R")
    patient = frame.loc[5]
    visits = pd.DataFrame([patient] * 11).assign(los=1, cost=np.round(
        np.random.default_rng(5).normal(3000, 150, 11), 2))
    frame = pd.concat([frame, visits], ignore_index=True)
    frame.loc[frame.patient_id == patient.patient_id, "diagnosis"] = "N18"
    return frame, float(frame.cost[frame.patient_id == patient.patient_id].sum())


def test_script_cell_of_one_patients_episodes_is_that_patients_total(
        script_agent: ScriptAgent) -> None:
    """F13 on the script route (fixed): rederive counted records, so a script's row of
    one patient's twelve episodes verified and its sum was that patient's total. Now the
    threshold counts the persons the dataset's identifier says the records are of: the
    row is a ``threshold`` finding and the run is held."""
    frame, secret = _dialysis_patient()
    script_agent.publish(frame)
    df = frame[PERMITTED]  # what the script reads at /in/data.csv: no patient_id
    table = df.groupby("diagnosis").agg(n=("cost", "size"),
                                        sum_cost=("cost", "sum")).reset_index()
    got = script_agent.run({"cost_by_diagnosis.csv": table.round(2)})
    recovered = None
    if "table-1.csv" in got:  # released automatically
        rows = got["table-1.csv"].set_index("diagnosis")
        recovered = round(float(rows.loc["N18", "sum_cost"]), 2)
    assert recovered != round(secret, 2), "disclosed: one patient's total cost of care"


def test_script_table_whose_groups_hold_k_persons_each_is_released(
        script_agent: ScriptAgent) -> None:
    """Counting persons suppresses only what it must: a table where some patients have
    several episodes but every diagnosis holds at least k patients verifies and is
    released automatically, its rows the records' figures."""
    frame = hospital_table(7, 600, "R")
    repeat = frame.groupby("diagnosis").head(3)  # three patients per diagnosis come back
    frame = pd.concat([frame, repeat.assign(los=1)], ignore_index=True)
    script_agent.publish(frame)
    df = frame[PERMITTED]
    # Sums of a cost: a length of stay is discrete, and its rare stays hold a row (R6-1).
    table = df.groupby("diagnosis").agg(n=("cost", "size"), sum_cost=("cost", "sum"),
                                        mean_cost=("cost", "mean"),
                                        std_cost=("cost", "std")).reset_index()
    got = script_agent.run({"by_diagnosis.csv": table.round(6)})
    assert set(got) == {"table-1.csv"}
    rows = got["table-1.csv"].set_index("diagnosis")
    assert rows.n.to_dict() == df.diagnosis.value_counts().to_dict()
    want = df.groupby("diagnosis").cost.sum()
    assert rows.sum_cost.to_dict() == pytest.approx(want.to_dict(), rel=1e-6)


# ---- F14: a std dominated by one record's squared deviation gives that record ----------

def test_a_std_dominated_by_one_outlier_gives_the_outlier(script_agent: ScriptAgent) -> None:
    import numpy as np

    frame = hospital_table(7, 600, "R")
    z99 = frame.index[:20]  # twenty day cases of a routine procedure, one complicated
    frame.loc[z99, "diagnosis"] = "Z99"
    frame.loc[z99, "cost"] = np.round(np.random.default_rng(2).normal(3000, 30, 20), 2)
    frame.loc[z99[7], "cost"] = 60000.0
    script_agent.publish(frame)
    doc = script_agent.statistics({"analyses": [
        {"kind": "magnitude", "dims": ["diagnosis"], "value": "cost",
         "statistics": ["mean", "std"]}]})
    mean_cell, std_cell = ({c["cell"]["diagnosis"]: c for c in t["cells"]}["Z99"]
                           for t in doc["analyses"][0]["tables"])
    mean, std = mean_cell["value"], std_cell["value"]
    n = 20  # a frequency table gives it; sum / mean too
    # One value x among n - 1 alike: x = mean + (n - 1) std / sqrt(n).
    estimate = None if mean is None or std is None else mean + (n - 1) * std / n ** 0.5
    # To within a few CNY here; the p% rule promises 10 %.
    recovered = None if estimate is None else round(estimate, -1)
    if std is None:  # hidden like every hidden cell: no rule says why
        assert std_cell == {**std_cell, "value": None, "status": "suppressed", "rules": []}
    assert recovered != 60000.0, "disclosed: the complicated case's cost"


def test_joint_mean_and_std_give_one_hospitals_outlier() -> None:
    """Fixed (F14b): each provider applies nk and p% to its own contributions (squared
    deviations for the std) and withdraws the dominating record."""
    from compute.spec import parse_spec
    from tests.compute.conftest import SCHEMA, hospital_frame
    from tests.compute.harness import run_joint

    frames = {f"h{i}": hospital_frame(70 + i, 400) for i in range(3)}
    frames["h2"].loc[9, "cost"] = 2_345_678.9  # one transplant patient at h2
    spec = parse_spec({"statistics": ["count", "mean", "std"], "columns": ["cost"]}, SCHEMA)
    cost = run_joint(spec, frames, min_cell_count=MIN_CELL).columns["cost"]
    n, mean, std = cost["n"], cost["mean"], cost["std"]
    assert isinstance(n, int) and isinstance(mean, float) and isinstance(std, float)
    estimate = mean + (n - 1) * std / n ** 0.5  # one value far out among many
    recovered = round(estimate, -4)  # to 10,000 CNY (0.4 %); the p% rule promises 10 %
    assert recovered != round(2_345_678.9, -4), "disclosed: the transplant patient's cost"


# ---- F15: joint OLS on a flag one record holds (F6, fixed on the statistics route) -------

def test_joint_ols_on_a_rare_flag_gives_the_flagged_patients_cost() -> None:
    """Fixed (F15): a level of a few-valued column in a block is a cell: the one uninsured
    record is withdrawn, and the flag left constant has no coefficient."""
    from compute.spec import parse_spec
    from tests.compute.conftest import SCHEMA, hospital_frame
    from tests.compute.harness import run_joint

    frames = {f"h{i}": hospital_frame(80 + i, 400).assign(insured=True) for i in range(3)}
    frames["h1"].loc[4, ["insured", "cost"]] = [False, 27182.82]  # the one uninsured patient
    spec = parse_spec({"statistics": ["ols"], "ols": {"y": "cost", "x": ["insured"]}}, SCHEMA)
    ols = run_joint(spec, frames, min_cell_count=MIN_CELL).ols
    assert ols is not None
    beta = ols["beta"]
    recovered = None if beta is None else round(beta["intercept"], 2)  # that record's mean
    assert recovered != 27182.82, "disclosed: the uninsured patient's cost"


# ---- F16: PSI: the value width refusal is an oracle on the server's maximum -------------

def test_psi_value_width_refusal_gives_the_servers_largest_value() -> None:
    import numpy as np

    from compute.errors import InvalidInput, MagnitudeOverflow
    from compute.psi import parse_psi_spec, server_rows

    rng = np.random.default_rng(4)
    server = pd.DataFrame({"code": [f"91{i:08d}" for i in range(200)],
                           "employees": rng.integers(5, 200, 200)})
    server.loc[42, "employees"] = 1234  # the one large employer
    schema = {"code": "string", "employees": "integer"}

    def refused(bits: int) -> bool:
        """One PSI job (its server part) asking for sums of ``bits`` bits: does it fail?
        (Any width but the platform's is now refused on the spec alone, data unseen.)"""
        try:
            spec = parse_psi_spec({"id": "code", "value": {"column": "employees",
                                                           "bits": bits}}, schema)
        except InvalidInput:
            return True
        try:
            server_rows(spec, server)
        except MagnitudeOverflow:
            return True
        return False

    low, high = 1, 32  # binary search: the smallest width that is not refused
    while low < high:
        mid = (low + high) // 2
        low, high = (mid + 1, high) if refused(mid) else (low, mid)
    recovered = (2 ** (low - 1), 2 ** low)  # the largest value lies in [2^(b-1), 2^b)
    assert recovered != (1024, 2048), "disclosed: the largest employer's size to a factor 2"


# ---- F17: a joint job shows the requester every provider's exact row count --------------

@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_joint_job_view_gives_exact_provider_row_counts(make_party: Any, admin: Any) -> None:
    from compute.derive import derive
    from compute.protocol import decrypt_aggregate, requester_keygen
    from compute.spec import spec_from_json
    from tests.api.test_joint import play_agents, submit, world

    keys = requester_keygen()
    w = world(make_party, admin, 3)
    for i, h in enumerate(w["hospitals"]):
        h["frame"] = h["frame"].iloc[:293 + i].assign(age=lambda d: d.age.clip(upper=98))
    w["hospitals"][0]["frame"].iloc[7, w["hospitals"][0]["frame"].columns.get_loc("age")] = 99
    spec = {"version": 1, "columns": ["cost"], "statistics": ["count", "grouped"],
            "groups": {"by": [{"column": "age", "edges": [0, 99, 200]}], "values": ["cost"]}}
    r = submit(w, keys, spec)
    assert r.status_code == 201, r.json
    assert all(a.status_code == 200 for a in play_agents(w["hospitals"]))
    joint = w["requester"].get(f"/joint-jobs/{r.json['id']}").json
    assert joint["state"] == "combined", joint["reason"]
    rows_read = [p["rows_read"] for p in joint["parts"]]
    parsed = spec_from_json(joint["spec"], {"age": "integer", "cost": "number"})
    released = derive(parsed, decrypt_aggregate(joint["aggregate"], keys, parsed))
    # Each provider's own size, and how many records the check withdrew (the 99-year-old).
    recovered = (sorted(rows_read), sum(rows_read) - released.rows)
    assert recovered != ([293, 294, 295], 1), "disclosed: exact provider sizes, a small count"
