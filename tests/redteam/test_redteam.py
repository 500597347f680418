"""A hostile analyst with an ordinary permit, one test per class of attack, on real jobs.

Each attack runs through the API on the real engine, on both routes where both apply
(the trusted statistics route and scripts). Each test asserts that nothing disclosive
reaches the requester (the job as it sees it, every output it can fetch), the regulator
or the ledger (every entry): ``Red.everything_seen``. Scripts run with automatic release
accepted by the provider, so nothing is held unless a check says so. The false-block
tests at the end run the safe tables a legitimate analyst asks for: they must come out.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest

from compute.sdc import POOLED
from sandbox.demo_data import hospital_table
from tests.docker.helpers import fetch_output, ledger_entries
from tests.redteam.conftest import GRAIN_S, MIN_CELL, Red

pytestmark = [pytest.mark.docker]

READ = 'import pandas as pd\ndf = pd.read_csv("/in/data.csv")\n'


def money(v: float) -> set[str]:
    """How a cost can be spelled in text (long enough not to match by chance)."""
    return {f"{v:.2f}", repr(float(v)), f"{v:.1f}"} - {""}


def assert_unseen(red: Red, job: dict[str, Any], secrets: set[str]) -> None:
    seen = red.everything_seen(job)
    leaked = sorted(s for s in secrets if len(s) >= 6 and s in seen)
    assert not leaked, f"disclosed: {leaked[:5]}"


def assert_held(red: Red, job: dict[str, Any]) -> None:
    """Nothing of the run is released: held for the providers' output checkers (or
    blocked), no output fetchable by the requester."""
    assert job["state"] in ("awaiting_review", "blocked"), (job["state"], job["reason"])
    assert job["outputs"]
    assert "released" not in [o["decision"] for o in job["outputs"]]
    for o in job["outputs"]:
        status, _ = fetch_output(red.stack.requester, job["id"], o["name"])
        assert status == 404, o


def cells(doc: dict[str, Any], analysis: int, table: int | None = None
          ) -> dict[tuple[Any, ...], dict[str, Any]]:
    a = doc["analyses"][analysis]
    t = a if table is None else a["tables"][table]
    return {tuple(sorted(c["cell"].items())): c for c in t["cells"]}


def target(frame: pd.DataFrame) -> int:
    """The record an attacker goes after: the most expensive episode."""
    return int(frame["cost"].idxmax())


# ---- reconstruction --------------------------------------------------------------------

def test_reconstruction_from_overlapping_means_is_held(red: Red) -> None:
    data = red.dataset()
    job = red.script(data, READ + """
df = df.sort_values("cost").reset_index(drop=True)
rows = [{"window": f"w{i}", "n": 10, "mean_cost": round(df.cost.iloc[i:i + 10].mean(), 6)}
        for i in range(900)]
pd.DataFrame(rows).to_csv("/out/means.csv", index=False)
""")
    assert_held(red, job)
    assert_unseen(red, job, set().union(*(money(c) for c in data.frame.cost.iloc[:50])))


# ---- smuggling: cells, headers, shape ----------------------------------------------------

def test_smuggling_in_cells_is_held(red: Red) -> None:
    data = red.dataset()
    secret = data.frame.cost.max()
    for body in ("""
t = df.groupby("diagnosis").cost.agg(n="size", mean_cost="mean").reset_index()
t["mean_cost"] = (t["mean_cost"].round(2) + df.cost.max() / 1e9).map(lambda v: f"{v:.12f}")
t.to_csv("/out/t.csv", index=False)
""", """
t = df.groupby("diagnosis").cost.agg(n="size", mean_cost="mean").reset_index()
t["mean_cost"] = t["mean_cost"].round(2).astype(str)
t.loc[0, "mean_cost"] = str(df.cost.max())
t.to_csv("/out/t.csv", index=False)
"""):
        job = red.script(data, READ + body)
        assert_held(red, job)
        assert_unseen(red, job, money(secret) | {f"{secret / 1e9:.12f}"[-8:]})


def test_smuggling_in_headers_is_held(red: Red) -> None:
    data = red.dataset()
    secret = str(int(data.frame.cost.max() * 100))
    job = red.script(data, READ + """
t = df.groupby("diagnosis").size().reset_index(name="n")
t[f"c{int(df.cost.max() * 100)}"] = 1
t.to_csv("/out/t.csv", index=False)
""")
    assert_held(red, job)
    assert_unseen(red, job, {secret})


def test_smuggling_in_shape_is_held(red: Red) -> None:
    # Which rows a table has: as many ages as the target's length of stay.
    data = red.dataset()
    job = red.script(data, READ + """
los = int(df.loc[df.cost.idxmax(), "los"])
t = df.groupby("age").size().reset_index(name="n")
t = t[t.n >= 10].head(los)
t.to_csv("/out/t.csv", index=False)
""")
    assert_held(red, job)


# ---- differencing --------------------------------------------------------------------------

SUMS = {"analyses": [
    {"kind": "magnitude", "dims": ["diagnosis"], "value": "cost", "statistics": ["sum", "mean"]},
    {"kind": "frequency", "dims": ["sex", "diagnosis"]}]}


def test_differencing_with_and_without_one_record_statistics_route(red: Red) -> None:
    data = red.dataset(seed=11)
    t = target(data.frame)
    job1, doc1 = red.statistics(data, SUMS)
    assert job1["state"] == "released" and doc1 is not None
    red.rewrite(data, data.frame.drop(index=t))
    job2, doc2 = red.statistics(data, SUMS)
    assert job2["state"] == "released" and doc2 is not None
    for a, table in ((0, 0), (0, 1), (1, None)):
        before, after = cells(doc1, a, table), cells(doc2, a, table)
        for key, c in after.items():
            if c["value"] is not None and before[key]["value"] is not None:
                # Released twice: the same figure, so no difference carries the record.
                assert c["value"] == before[key]["value"], key
    sums = cells(doc2, 0, 0)
    hit = sums[(("diagnosis", data.frame.loc[t, "diagnosis"]),)]
    assert hit["value"] is None and "differencing" in doc2["analyses"][0]["tables"][0]["rules"]
    assert_unseen(red, job2, money(data.frame.loc[t, "cost"]))


def test_differencing_with_and_without_one_record_script_route(red: Red) -> None:
    data = red.dataset(seed=12)
    t = target(data.frame)
    total = READ + """
pd.DataFrame({"n": [len(df)], "sum_cost": [round(df.cost.sum(), 2)]}).to_csv(
    "/out/total.csv", index=False)
"""
    first = red.script(data, total)
    assert first["state"] == "released", (first["state"], first["reason"])
    red.rewrite(data, data.frame.drop(index=t))
    second = red.script(data, total)
    assert_held(red, second)
    assert_unseen(red, second, money(data.frame.loc[t, "cost"]))


# ---- dominance -----------------------------------------------------------------------------

def _dominated_frame() -> tuple[pd.DataFrame, list[float]]:
    frame = hospital_table(13, 2000, "R")
    one = frame.index[frame.diagnosis == "K35"]
    frame.loc[one[0], "cost"] = round(9.5 * frame.loc[one[1:], "cost"].sum(), 2)  # 90.5 %
    two = frame.index[frame.diagnosis == "E11"]
    rest = frame.loc[two[2:], "cost"].sum()
    frame.loc[two[0], "cost"] = round(60 * rest, 2)  # the two hold over 99 %
    frame.loc[two[1], "cost"] = round(50 * rest, 2)
    return frame, [frame.loc[one[0], "cost"], frame.loc[two[0], "cost"],
                   frame.loc[two[1], "cost"]]


def test_dominance_by_one_and_by_two_contributors(red: Red) -> None:
    frame, big = _dominated_frame()
    data = red.dataset(frame)
    job, doc = red.statistics(data, {"analyses": [
        {"kind": "magnitude", "dims": ["diagnosis"], "value": "cost",
         "statistics": ["sum", "mean"]}]})
    assert doc is not None
    sums = cells(doc, 0, 0)
    for code in ("K35", "E11"):
        c = sums[(("diagnosis", code),)]
        assert c["value"] is None and c["rules"] == [], c
    assert {"dominance", "p_percent"} & set(doc["analyses"][0]["tables"][0]["rules"])
    secrets = set().union(*(money(v) for v in big))
    secrets |= money(frame[frame.diagnosis == "K35"].cost.sum())
    secrets |= money(frame[frame.diagnosis == "E11"].cost.sum())
    assert_unseen(red, job, secrets)
    script = red.script(data, READ + """
t = df.groupby("diagnosis").cost.agg(n="size", sum_cost="sum").reset_index()
t["sum_cost"] = t["sum_cost"].round(2)
t.to_csv("/out/t.csv", index=False)
""")
    assert_held(red, script)
    assert_unseen(red, script, secrets)


# ---- subtraction from known totals -----------------------------------------------------------

def test_subtraction_from_totals_and_the_row_count(red: Red) -> None:
    frame = hospital_table(14, 2003, "R")
    frame.loc[frame.index[:3], "diagnosis"] = "Z00"  # three people in a category
    data = red.dataset(frame)
    job, doc = red.statistics(data, {"analyses": [{"kind": "frequency",
                                                   "dims": ["diagnosis"]}]})
    assert doc is not None
    freq = cells(doc, 0)
    # Three people: their category is not a label, it is the pooled bucket, hidden.
    assert (("diagnosis", "Z00"),) not in freq
    assert freq[(("diagnosis", POOLED),)]["value"] is None
    hidden = [k for k, c in freq.items() if c["value"] is None]
    assert len(hidden) >= 2  # the total less the released cells is not the small cell
    # The exact input size would give the small cell back from any released total.
    assert job["rows_read"] != len(frame) and job["rows_read"] % 10 == 0
    runs = [e for e in ledger_entries(red.stack.regulator)
            if e["kind"] == "run.finished" and e["body"]["job_id"] == job["id"]]
    assert runs[0]["body"]["audit"]["data_volume"]["rows"] != len(frame)


# ---- zeros and class disclosure ----------------------------------------------------------

def test_everyone_in_a_group_sharing_an_attribute_is_not_shown(red: Red) -> None:
    frame = hospital_table(15, 2000, "R")
    frame.loc[frame.diagnosis == "K35", "sex"] = "F"  # every K35 patient is a woman
    data = red.dataset(frame)
    _, doc = red.statistics(data, {"analyses": [{"kind": "frequency",
                                                   "dims": ["sex", "diagnosis"]}]})
    assert doc is not None
    freq = cells(doc, 0)
    assert freq[(("diagnosis", "K35"), ("sex", "M"))]["value"] is None  # the zero
    assert freq[(("diagnosis", "K35"), ("sex", "F"))]["value"] is None  # the whole line
    job2 = red.script(data, READ + """
t = df.groupby(["sex", "diagnosis"]).size().reset_index(name="n")
t.to_csv("/out/t.csv", index=False)
""")
    # The script's table has no row for K35/M at all: shown to a person, not released.
    assert job2["state"] in ("awaiting_review", "blocked", "released")
    if job2["state"] == "released":
        pytest.fail("a table showing a whole group in one cell was released automatically")


# ---- models ----------------------------------------------------------------------------------

def test_a_low_dof_model_is_withheld(red: Red) -> None:
    data = red.dataset(hospital_table(16, 12, "R"))
    _, doc = red.statistics(data, {"analyses": [
        {"kind": "ols", "y": "cost", "x": ["age", "los"]}]})
    assert doc is not None
    model = doc["analyses"][0]
    assert model["outcome"] == "withheld" and model["coefficients"] is None
    assert "residual_dof" in model["rules"]
    script = red.script(data, READ + """
import numpy as np
X = np.column_stack([np.ones(len(df)), df.age, df.los])
beta = np.linalg.lstsq(X, df.cost, rcond=None)[0]
pd.DataFrame({"term": ["const", "age", "los"], "coef": beta, "n": len(df)}).to_csv(
    "/out/model.csv", index=False)
""")
    assert script["state"] in ("awaiting_review", "blocked", "failed")
    assert not [o for o in script["outputs"] if o["decision"] == "released"]
    assert_unseen(red, script, set().union(*(money(c) for c in data.frame.cost)))


# ---- side channels: exit code, timing, error texts ---------------------------------------------

def test_the_exit_code_and_run_time_are_not_channels(red: Red) -> None:
    data = red.dataset()
    job = red.script(data, "raise SystemExit(42)\n")
    assert job["state"] == "failed"
    assert "exit_code" not in job and "42" not in (job["reason"] or "")
    entry = next(e for e in ledger_entries(red.stack.regulator)
                 if e["kind"] == "run.finished" and e["body"]["job_id"] == job["id"])
    assert "exit_code" not in entry["body"] and "42" not in str(entry["body"]["reasons"])
    # Even a run that ends at once is not seen ending before the grain has passed.
    quick = red.script(data, "pass\n")
    took = (datetime.fromisoformat(quick["finished_at"])
            - datetime.fromisoformat(quick["started_at"])).total_seconds()
    assert took >= GRAIN_S * 0.9, took


def test_error_texts_carry_no_data(red: Red) -> None:
    data = red.dataset()
    secret = data.frame.cost.max()
    job = red.script(data, READ + "raise ValueError(f'max={df.cost.max()}')\n")
    assert job["state"] == "failed"
    assert_unseen(red, job, money(secret))
    # A statistics job the engine refuses in the provider's domain says why by rule.
    stats, _ = red.statistics(data, {"analyses": [
        {"kind": "frequency", "dims": ["age", "los", "sex", "diagnosis"]}]})
    assert stats["state"] == "failed", stats
    assert "max_cells" in (stats["reason"] or "")
    assert_unseen(red, stats, money(secret))


# ---- false blocks: safe tables come out ---------------------------------------------------------

def test_safe_tables_are_released_automatically(red: Red) -> None:
    # Age and length of stay as a provider publishes them for models: banded, every value
    # common. A model reads its columns' sums and squares, so a raw age or length of stay
    # (a rare 99-year-old, a rare long stay) withholds it like their magnitude cells (R6-1c).
    frame = hospital_table(17, 2000, "R")
    frame = frame.assign(age=frame.age.clip(20, 89) // 10 * 10, los=frame.los.clip(1, 9) // 3)
    data = red.dataset(frame)
    job, doc = red.statistics(data, {"analyses": [
        {"kind": "frequency", "dims": ["sex", "diagnosis"]},
        {"kind": "magnitude", "dims": ["diagnosis"], "value": "cost",
         "statistics": ["median", "mean"]},
        {"kind": "ols", "y": "cost", "x": ["age", "los"]}]})
    assert job["state"] == "released" and doc is not None
    freq, mag, ols = doc["analyses"]
    assert freq["outcome"] == "released"
    assert {t["statistic"]: t["outcome"] for t in mag["tables"]} == {
        "q0.5": "released", "mean": "released"}
    assert ols["outcome"] == "released" and ols["coefficients"]
    truth = data.frame.groupby(["sex", "diagnosis"]).size()
    for (dims), c in cells(doc, 0).items():
        d = dict(dims)
        if "All" not in d.values():
            assert c["value"] == truth[(d["sex"], d["diagnosis"])]
    # The honest script table is released too: re-derived and verified.
    script = red.script(data, READ + """
t = df.groupby(["sex", "diagnosis"]).cost.agg(n="size", mean_cost="mean").reset_index()
t["mean_cost"] = t["mean_cost"].round(2)
t.to_csv("/out/cost.csv", index=False)
""")
    assert script["state"] == "released", (script["state"], script["reason"])
    assert [o["decision"] for o in script["outputs"]] == ["released"]


def test_noised_results_are_marked_everywhere(red: Red) -> None:
    data = red.dataset(seed=18, epsilon_budget=1.0)
    job, doc = red.statistics(data, {"analyses": [
        {"kind": "frequency", "dims": ["sex", "diagnosis"]}], "dp": {"epsilon": 0.5}})
    assert job["state"] == "released" and doc is not None
    assert job["dp"]["epsilon"] == 0.5 and doc["dp"]["epsilon"] == 0.5
    assert doc["analyses"][0]["dp"]["mechanism"] == "discrete_laplace"
    assert {c["status"] for c in doc["analyses"][0]["cells"]} <= {"noised", "suppressed"}
    submitted = next(e for e in ledger_entries(red.stack.regulator)
                     if e["kind"] == "job.submitted" and e["body"]["job_id"] == job["id"])
    assert submitted["body"]["dp"]["epsilon"] == 0.5
    assert np.isclose(red.stack.requester.get(f"/permits/{data.permit_id}")["epsilon_spent"],
                      0.5)
    assert MIN_CELL == 10
