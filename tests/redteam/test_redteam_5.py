"""Red team, fifth pass: attacks on the fixes of the fourth (persons as contributors, the
audit counting persons) and on what they left out.

Same convention as ``test_redteam_4.py`` (whose harness, ``ScriptAgent`` of
``test_redteam_3.py``, these tests reuse): each test is an attack that computes what it
learns (``recovered``) and ends by asserting the defence, that this is not the secret.
While the leak is open that assertion fails and the test is marked
``xfail(strict=True, raises=AssertionError)`` (``leak``); the day a fix closes it strict
xfail reports it and the marker goes (run with ``--runxfail`` to see each recovery).

Findings:

* R5-1 (high, statistics route, differencing audit): where the dataset declares an
  identifier the audit compares *person* populations only (and record populations only
  with those released before identifiers were declared). Two cells over the same persons
  but different records are identical to it (a difference of zero persons passes), so a
  total before and after one more episode of a patient already in the data, or a total
  over everyone beside a margin that leaves out one record with a missing dimension,
  differ by exactly one record's value, released automatically.
* R5-2 (high, statistics route, differencing audit): the audit checks the cells the
  first computation of a table shows, then computes the table again with the cells it
  hit suppressed; secondary suppression then picks other complements, and a cell that
  was hidden the first time (a complement) can be shown the second time, released
  without ever being compared with what was released before. Next month's edition
  with one new patient in a category, beside a newly dominated category and a total
  that the audit hides: that category's sum comes out, and less last month's is the
  new patient's cost.
* R5-3 (high, script route against the statistics route, differencing audit): the
  audit sketches a script row as the records with its keys, though its sums are over
  the records that hold a value of the column; the statistics route sketches a
  magnitude cell as the records holding the value. With k or more records lacking a
  cost, a script's overall ``sum_cost`` (over every costed record) and the statistics
  route's ``All`` by diagnosis (every costed record with a diagnosis) are far apart to
  the audit and one record apart in what they sum: the one costed episode without a
  diagnosis.
* R5-4 (high, script route, job view and ledger): an output held for review (every
  output of a permit that reviews, and every unverified one of a permit that releases
  automatically) is listed to the requester, before anyone has looked at it, with the
  name the script gave its file, its SHA-256 and its size (job view; the
  ``output.pending_review`` ledger entries too). The name is up to about a hundred characters
  the script chooses after reading the data: values leave in it, twenty files a run.
  The threat model says a requester learns of a held run only that it was held.
* R5-5 (medium, statistics route, magnitude tables): a boolean column is a permitted
  magnitude value; its sum is the count of records holding ``true``. Every contribution
  is 1, so nk dominance and p% hide only sums of one or two; three to k-1 holders of a
  sensitive flag come out as a sum, where the frequency route pools and hides that count.
  R5-5b: the same on the script route, a verified table's sum of a 0/1 column.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from containers import runjob
from containers.runspec import RunResult
from sandbox.demo_data import hospital_table
from tests.redteam.test_redteam_2 import Agent, agent, cells
from tests.redteam.test_redteam_3 import PERMITTED, ScriptAgent, script_agent

__all__ = ["agent", "script_agent"]  # the fixtures, imported for pytest


def _sum_cells(doc: dict[str, Any], analysis: int, dim: str | None) -> dict[Any, Any]:
    table = doc["analyses"][analysis]["tables"][0]["cells"]
    return {c["cell"][dim] if dim else "All": c["value"] for c in table}


# ---- R5-1: the audit counts persons: the same persons over other records is no difference

def test_total_before_and_after_one_more_episode_of_a_known_patient(
        script_agent: ScriptAgent) -> None:
    """R4-2's mirror image. The audit now names persons, so a total asked before and
    after one patient's twelve episodes were erased differs by one person and is caught.
    But a patient already in the data who comes back for one more episode (next month's
    file, or the same file after a late record is loaded) changes no person population:
    every cell's persons are the same, the audit sees a difference of zero persons (not a
    difference), and the two totals, released automatically, differ by exactly that one
    episode's cost. Record mode caught this (a difference of one record); the record
    comparison the person audit keeps runs only against populations released before the
    dataset declared its identifiers."""
    frame = hospital_table(7, 600, "R")
    secret = 7654.32
    spec = {"analyses": [{"kind": "magnitude", "dims": ["sex"], "value": "cost",
                          "statistics": ["sum"]}]}
    script_agent.publish(frame)
    before = _sum_cells(script_agent.statistics(spec), 0, "sex")["All"]
    episode = frame.loc[[5]].assign(los=3, cost=secret)  # patient R-000005 comes back
    script_agent.publish(pd.concat([frame, episode], ignore_index=True))
    after = _sum_cells(script_agent.statistics(spec), 0, "sex")["All"]
    recovered = None if before is None or after is None else round(after - before, 2)
    assert recovered != secret, "disclosed: the returning patient's new episode's cost"


def test_total_less_a_margin_without_one_record_of_missing_diagnosis(
        script_agent: ScriptAgent) -> None:
    """The same in one job on one file: one of a patient's two episodes has no diagnosis
    coded yet. A magnitude table without dimensions sums every episode's cost; the same
    sum by diagnosis leaves out records whose diagnosis is missing, so its ``All`` margin
    lacks that one episode. The two populations hold the same persons (the patient's
    other episode is in both), so the audit, comparing the job's second analysis with its
    first, finds no difference; the two totals differ by that episode's cost."""
    frame = hospital_table(7, 600, "R")
    secret = 4321.09
    uncoded = frame.loc[[5]].assign(los=2, cost=secret, diagnosis=np.nan)
    script_agent.publish(pd.concat([frame, uncoded], ignore_index=True))
    doc = script_agent.statistics({"analyses": [
        {"kind": "magnitude", "value": "cost", "statistics": ["sum"]},
        {"kind": "magnitude", "dims": ["diagnosis"], "value": "cost",
         "statistics": ["sum"]}]})
    everyone = _sum_cells(doc, 0, None)["All"]
    coded = _sum_cells(doc, 1, "diagnosis")["All"]
    recovered = None if everyone is None or coded is None else round(everyone - coded, 2)
    assert recovered != secret, "disclosed: the uncoded episode's cost"


# ---- R5-2: the audit's second pass releases a complement of the first, never audited ----

def test_complement_released_by_the_audits_second_pass_gives_a_newcomer(
        script_agent: ScriptAgent) -> None:
    """Last month's edition: the sum of cost by diagnosis, every cell released. This
    month's has two new patients: a hip fracture (S72, the smallest diagnosis) and a
    heart attack whose 20 M CNY of intensive care dominates I21 (nk). The first
    computation hides I21 (dominance) and, as its complement, the smallest cell, S72;
    the audit compares what that computation shows (E11, J18, K35 unchanged; ``All``
    within two persons of last month's: hit) and computes the table again with ``All``
    suppressed. I21 and ``All`` now cover each other in the line, so S72 is no longer
    needed as a complement and is released, though the audit never looked at it: it is
    last month's S72 and one person. The difference of the two S72 sums is the new hip
    fracture patient's cost."""
    frame = hospital_table(7, 600, "R")
    secret = 31415.92
    spec = {"analyses": [{"kind": "magnitude", "dims": ["diagnosis"], "value": "cost",
                          "statistics": ["sum"]}]}
    script_agent.publish(frame)
    before = _sum_cells(script_agent.statistics(spec), 0, "diagnosis")
    newcomers = pd.DataFrame([
        {"patient_id": "R-900001", "age": 58, "sex": "M", "diagnosis": "I21", "los": 60,
         "cost": 20_000_000.0},
        {"patient_id": "R-900002", "age": 81, "sex": "F", "diagnosis": "S72", "los": 12,
         "cost": secret}])
    script_agent.publish(pd.concat([frame, newcomers], ignore_index=True))
    after = _sum_cells(script_agent.statistics(spec), 0, "diagnosis")
    assert after["I21"] is None and after["All"] is None  # dominance, differencing
    recovered = None if None in (before["S72"], after["S72"]) else round(
        after["S72"] - before["S72"], 2)
    assert recovered != secret, "disclosed: the new hip fracture patient's cost"


# ---- R5-3: a script row is audited as its keys' records, not the records it sums --------

def test_script_overall_sum_less_the_statistics_margin_gives_an_uncoded_episode(
        script_agent: ScriptAgent) -> None:
    """Twelve episodes are not costed yet and one costed episode has no diagnosis coded
    yet (a different patient: persons differ too, so this is not R5-1). A script's
    overall table (``n``, ``sum_cost``) verifies and is released automatically; the
    audit records its population as all 600 records. The statistics route's sum of cost
    by diagnosis then releases its ``All``: the 587 costed, coded records, thirteen away
    from the script's population (>= k: no difference), but one record away from what
    the script's ``sum_cost`` summed. The difference is the uncoded episode's cost, to
    the script table's seven significant digits (within 1 CNY here)."""
    frame = hospital_table(7, 600, "R")
    secret = 27182.82
    frame.loc[20:31, "cost"] = np.nan  # twelve episodes not costed yet
    frame.loc[5, ["diagnosis", "cost"]] = [np.nan, secret]  # one episode not coded yet
    script_agent.publish(frame)
    df = frame[PERMITTED]  # what the script reads at /in/data.csv
    overall = pd.DataFrame({"n": [len(df)], "sum_cost": [round(df.cost.sum(), 2)]})
    got = script_agent.run({"overall.csv": overall})
    coded = _sum_cells(script_agent.statistics({"analyses": [
        {"kind": "magnitude", "dims": ["diagnosis"], "value": "cost",
         "statistics": ["sum"]}]}), 0, "diagnosis")["All"]
    recovered = None
    if "table-1.csv" in got and coded is not None:
        estimate = float(got["table-1.csv"].sum_cost.iloc[0]) - coded
        recovered = abs(estimate - secret) < 1.0
    assert recovered is not True, "disclosed: the uncoded episode's cost to 1 CNY"


# ---- R5-4: a held output's name, digest and size reach the requester ---------------------

def _held_run(script_agent: ScriptAgent, outputs: dict[str, bytes]) -> Any:
    """The agent's report on a run whose script left ``outputs`` (name: bytes) in /out,
    as ``ScriptAgent.run`` makes it, but the report itself (a held run releases nothing)."""
    task, job_dir = script_agent._prepare("script", "episodes.csv")
    out = job_dir / "out"
    out.mkdir()
    for name, content in outputs.items():
        (out / name).write_bytes(content)
    result = RunResult(task.job_id, 0, False, False, b"", b"", False, False, out, None,
                       None, None)
    return runjob.report(task, job_dir, result, "img", None, audit=script_agent.store)


def _requesters_view(make_party: Any, make_agent: Any, make_person: Any, report: Any
                     ) -> dict[str, Any]:
    """The agent's ``report`` posted for a job of an ordinary permit, and that job as the
    requester's ``GET /jobs/<id>`` shows it."""
    from tests.api.test_release_review import Review

    review = Review(make_party, make_agent, make_person)
    job = review.analyst.post("/jobs", {"permit_id": review.permit_id,
                                        "dataset_ids": [review.ds["id"]],
                                        "script": "print('x')\n"}).json
    assert review.agent.post("/agent/tasks/next").json["task"]["job_id"] == job["id"]
    r = review.agent.post(f"/agent/jobs/{job['id']}/result",
                          report.model_dump(mode="json", exclude_none=True))
    assert r.status_code == 200, r.json
    seen: dict[str, Any] = review.analyst.get(f"/jobs/{job['id']}").json
    return seen


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_held_output_names_carry_a_value_to_the_requester(
        script_agent: ScriptAgent, make_party: Any, make_agent: Any,
        make_person: Any) -> None:
    """The one leukaemia patient's cost is written into the name of an ordinary-looking
    table (``by_diagnosis_v1234567.csv``). The table does not verify (it leaves out the
    C91 row), so the agent holds it for review, as it must; but the controller lists the
    held output in the requester's job view by the name the script gave it (and its
    digest and size, which a script can also modulate). No person has looked; none needs
    to, the value has left."""
    frame = hospital_table(7, 600, "R")
    frame.loc[5, ["diagnosis", "cost"]] = ["C91", 12345.67]
    script_agent.publish(frame)
    df = frame[PERMITTED]  # what the script reads at /in/data.csv
    cents = round(float(df.cost[df.diagnosis == "C91"].iloc[0]) * 100)
    by = df.groupby("diagnosis").agg(n=("cost", "size")).reset_index()
    table = by[by.n >= 10].to_csv(index=False).encode()
    report = _held_run(script_agent, {f"by_diagnosis_v{cents}.csv": table})
    assert report.state == "awaiting_review"  # held, as it must be

    # The controller receives that report for a job of the requester's permit.
    seen = _requesters_view(make_party, make_agent, make_person, report)
    assert seen["state"] == "awaiting_review"
    assert all(o["decision"] == "pending_review" for o in seen["outputs"])
    recovered = None
    for o in seen["outputs"]:
        digits = o["name"].removeprefix("by_diagnosis_v").removesuffix(".csv")
        if digits.isdigit():
            recovered = int(digits) / 100
    assert recovered != 12345.67, "disclosed: the C91 patient's cost, in a file name"


# ---- R5-5: the sum of a boolean is a count, below k, that dominance does not stop --------

def test_sum_of_a_sensitive_flag_is_a_small_count(agent: Agent) -> None:
    """Three of 2,000 patients are HIV positive. The frequency table by HIV status pools
    ``true`` (three holders) with nothing and hides it; the requester asks instead for the
    sum of ``hiv`` (a permitted boolean, so a numeric magnitude value). Each record
    contributes 0 or 1: a sum of three ones passes nk (the two largest are 2/3 of it) and
    p% (the third is the whole rest, above 10 % of the largest), so the ``All`` cell is
    released: three, a count the threshold exists to hide (and by diagnosis, each cell is
    a count of positives, hidden only when it holds one or two)."""
    frame = hospital_table(22, 2000, "R").assign(hiv="false")
    frame.loc[frame.index[frame.diagnosis == "K35"][:3], "hiv"] = "true"
    agent.publish(frame)
    hiv = ({"name": "hiv", "type": "boolean", "sensitivity": "sensitive"},)
    doc = agent.run({"analyses": [
        {"kind": "frequency", "dims": ["hiv"]},
        {"kind": "magnitude", "value": "hiv", "statistics": ["sum"]}]}, extra_fields=hiv)
    shown = {c["cell"]["hiv"]: c["value"] for c in cells(doc, 0)}
    assert 1.0 not in shown and all(v is None for k, v in shown.items() if k != "All")
    total = cells(doc, 1)[0]["value"]
    recovered = None if total is None else round(total)
    assert recovered != 3, "disclosed: three HIV-positive patients, a count below k"


def test_script_sum_of_a_two_valued_column_is_a_small_count(
        script_agent: ScriptAgent) -> None:
    """The script route's twin of R5-5. A day-surgery unit's episodes: length of stay is
    0 (same-day discharge) for all but three patients kept overnight (1). A script's
    overall table (``n``, ``sum_los``) re-derives exactly (the count is the input's,
    the sum is the sum), passes the threshold (600 records hold a value) and nk / p% (a
    sum of three ones), and is released automatically: three, a count below k."""
    frame = hospital_table(9, 600, "R").assign(los=0)
    frame.loc[[11, 222, 433], "los"] = 1
    script_agent.publish(frame)
    df = frame[PERMITTED]
    overall = pd.DataFrame({"n": [len(df)], "sum_los": [int(df.los.sum())]})
    got = script_agent.run({"overall.csv": overall})
    recovered = int(got["table-1.csv"].sum_los.iloc[0]) if "table-1.csv" in got else None
    assert recovered != 3, "disclosed: three overnight stays, a count below k"
