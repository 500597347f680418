"""Red team, sixth pass: attacks on the fifth pass's fixes (holdings, the audit's second
computation, script value columns, positional held names, the few-valued rule, DP with a
person as the unit) and on what they left out.

Same convention as ``test_redteam_5.py`` (whose harnesses, ``Agent`` of
``test_redteam_2.py`` and ``ScriptAgent`` of ``test_redteam_3.py``, these tests reuse):
each test is an attack that computes what it learns (``recovered``) and ends by asserting
the defence, that this is not the secret. While the leak is open that assertion fails and
the test is marked ``xfail(strict=True, raises=AssertionError)`` (``leak``); the day a fix
closes it strict xfail reports it and the marker goes (run with ``--runxfail`` to see
each recovery).

Findings:

* R6-1 (high, statistics route, magnitude tables): the few-valued rule looks at cells
  whose value takes two or three values; a cell taking four is left to nk and p%, on the
  ground (disclosure-control.md, *Threshold*) that its count and sums leave each value's
  count undetermined. They do not once the frequency table of the same column is asked
  (a permitted, ordinary table): it releases the common values' counts and hides the
  rare value with one complement, and the hidden pair's count (the margin less the
  shown) and their sum (the magnitude sum less the shown values' known products) are two
  equations in two unknowns. Three stage-3 patients among 2,000 come out as 3. The
  script route's verified sum of such a column is the same (R6-1b).
* R6-2 (high, statistics and script routes, differencing audit): a record's identity is
  a keyed hash of every column of the source record as text, so a change to every row
  that no cell reads (a column the file gains, an extract date, an integer column
  written as ``3.0`` once one of its values is missing) makes every record a new
  record. Two editions' cells then differ by every record (record mode) or by the
  holdings of every person (persons mode): far apart to the audit, though what they sum
  differs by one episode. R5-1's returning patient, whose new episode has no length of
  stay yet, and R4-2's erased record, beside a monthly extract date, are released again;
  the script route's overall sums likewise (R6-2b). A person's identity is a keyed hash
  of the identifier as written, so pseudonyms issued afresh for each extract make every
  person new, and R4-2's erased patient comes back in persons mode too (R6-2c).
  Closed: identities from the permitted fields, typed, in every permit's space, and a
  label check where editions overlap little (variants: ``test_redteam_6_identities.py``).
* R6-3 (medium, script route, job view and ledger): R5-4 names a held output by
  position but keeps its extension, and a withheld one is ``withheld-<i>``; the agent
  takes the files in the order of the names the script chose. Each of up to twenty
  files is one of seven kinds (csv, json, png, jpg, jpeg, pdf, withheld): about 56 bits
  a held run (base 3 with csv, json and svg, which is always withheld, without any
  image policy), shown to the requester and on the ledger before anyone has looked.
  threat-model.md lists "how many files it left and of which kind" beside "only that it
  was held", without the bandwidth: a patient's cost in cents is thirteen files.
* R6-4 (low, statistics route, rules of a table): a table without dimensions has one
  cell, so the table's ``rules`` (kept by F1) are that cell's. Beside R5-5's threshold
  suppression of a flag's sum, ``dominance`` and ``p_percent`` are listed only when one
  or two records hold the flag: the count the threshold hides is bounded to 1-2 (or
  3-9), finer than the frequency route's 1-9.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from sandbox.demo_data import hospital_table
from tests.redteam.test_redteam_2 import Agent, agent, cells
from tests.redteam.test_redteam_3 import PERMITTED, ScriptAgent, script_agent
from tests.redteam.test_redteam_5 import _held_run, _requesters_view

__all__ = ["agent", "script_agent"]  # the fixtures, imported for pytest


# ---- R6-1: a four-valued column's sum beside its frequency table ------------------------

STAGE = ({"name": "stage", "type": "integer", "sensitivity": "sensitive",
          "description": "disease stage, 0 (none) to 3"},)


def rarest_count(counts: dict[str, Any], total: float | None, rare: int) -> int | None:
    """The number of records holding ``rare`` from a frequency table of a column taking
    the values 0..3 (``counts``: value text to count or None, with ``All``) and the sum of
    the column over the same records: when the table hides ``rare`` and one complement
    ``c``, their count H is the margin less the shown counts, their sum S the sum less
    the shown values' products, and S = c H + (rare - c) n."""
    if total is None or counts.get("All") is None:
        return None
    hidden = [v for v in range(4) if counts.get(str(v)) is None]
    if len(hidden) != 2 or rare not in hidden:
        return None
    (c,) = (v for v in hidden if v != rare)
    h = counts["All"] - sum(counts[str(v)] for v in range(4) if v not in hidden)
    s = total - sum(v * counts[str(v)] for v in range(4) if v not in hidden)
    return round(float(s - c * h) / (rare - c))


def test_sum_of_a_four_valued_column_beside_its_frequency_table(agent: Agent) -> None:
    """A disease stage coded 0 to 3: most patients 0, a few dozen at 1 and at 2, three at
    stage 3 (the count the threshold hides). The frequency table by stage hides stage 3
    and, as its complement, stage 2; it shows stage 0, stage 1 and the total. The
    magnitude sum of stage (four values in the ``All`` cell: not few-valued; nk and p%
    pass a sum of a hundred small integers) is n1 + 2 n2 + 3 n3. With n2 + n3 the total
    less the shown counts, n3 = sum - n1 - 2 (n2 + n3)."""
    frame = hospital_table(22, 2000, "R").assign(stage=0)
    frame.loc[frame.index[100:140], "stage"] = 1
    frame.loc[frame.index[200:225], "stage"] = 2
    frame.loc[frame.index[[300, 301, 302]], "stage"] = 3
    agent.publish(frame)
    doc = agent.run({"analyses": [
        {"kind": "frequency", "dims": ["stage"]},
        {"kind": "magnitude", "value": "stage", "statistics": ["sum"]}]},
        extra_fields=STAGE)
    counts = {str(c["cell"]["stage"]): c["value"] for c in cells(doc, 0)}
    total = cells(doc, 1)[0]["value"]
    recovered = rarest_count(counts, total, 3)
    assert recovered != 3, "disclosed: three stage-3 patients, a count below k"


def test_script_sum_of_a_four_valued_column_beside_its_frequency_table(
        script_agent: ScriptAgent) -> None:
    """The script route's twin of R6-1 (R5-5b with a fourth value). A day-surgery unit:
    length of stay 0 for most episodes, 1 or 2 nights for a hundred, 3 nights for three
    patients. A script's overall table (``n``, ``sum_los``) re-derives exactly and is
    released automatically (four values: the few-valued rule does not look); the
    statistics route's frequency table by ``los`` shows the counts at 0 and 2 and the
    total, hiding 3 and, as its complement, 1: n1 + n3 and n1 + 3 n3 give n3."""
    frame = hospital_table(9, 600, "R").assign(los=0)
    frame.loc[frame.index[100:140], "los"] = 1
    frame.loc[frame.index[200:260], "los"] = 2
    frame.loc[[11, 222, 433], "los"] = 3
    script_agent.publish(frame)
    df = frame[PERMITTED]
    overall = pd.DataFrame({"n": [len(df)], "sum_los": [int(df.los.sum())]})
    got = script_agent.run({"overall.csv": overall})
    doc = script_agent.statistics({"analyses": [{"kind": "frequency", "dims": ["los"]}]})
    counts = {str(c["cell"]["los"]): c["value"] for c in cells(doc, 0)}
    total = float(got["table-1.csv"].sum_los.iloc[0]) if "table-1.csv" in got else None
    recovered = rarest_count(counts, total, 3)
    assert recovered != 3, "disclosed: three patients kept three nights, a count below k"


# ---- R6-2: a change to every row that no cell reads makes every record new ---------------

def _sums(doc: dict[str, Any], dim: str | None = None) -> dict[Any, Any]:
    return {c["cell"][dim] if dim else "All": c["value"] for c in cells(doc, 0)}


def test_returning_patient_whose_stay_is_still_open(script_agent: ScriptAgent) -> None:
    """R5-1's attack, closed by holdings, reopened by the file's formatting. Patient
    R-000005 comes back; the new episode is costed so far but still open, so its length
    of stay is missing. The provider's export writes ``los`` as a float column from then
    on (``3`` becomes ``3.0`` on every row, as pandas does for an integer column with a
    missing value). Every record's identity changes, so every person's holdings change:
    the totals by sex before and after differ by 600 persons' holdings to the audit, by
    one episode in what they sum."""
    frame = hospital_table(7, 600, "R")
    secret = 7654.32
    spec = {"analyses": [{"kind": "magnitude", "dims": ["sex"], "value": "cost",
                          "statistics": ["sum"]}]}
    script_agent.publish(frame)
    before = _sums(script_agent.statistics(spec), "sex")["All"]
    episode = frame.loc[[5]].assign(los=np.nan, cost=secret)  # still in hospital
    script_agent.publish(pd.concat([frame, episode], ignore_index=True))
    after = _sums(script_agent.statistics(spec), "sex")["All"]
    recovered = None if before is None or after is None else round(after - before, 2)
    assert recovered != secret, "disclosed: the returning patient's open episode's cost"


def test_erased_record_beside_a_monthly_extract_date(agent: Agent) -> None:
    """R4-2 in record mode (no identifier declared). The provider's monthly file carries
    the extract date on every row (not permitted, never read by a cell). Between two
    editions one episode is erased: the two totals of cost differ by that record, but
    every record's identity has changed with the date, so to the audit the populations
    share nothing and both totals are released."""
    frame = hospital_table(7, 2000, "R")
    spec = {"analyses": [{"kind": "magnitude", "value": "cost", "statistics": ["sum"]}]}
    agent.publish(frame.assign(extracted="2026-10-31"))
    before = _sums(agent.run(spec))["All"]
    agent.publish(frame.drop(index=5).assign(extracted="2026-11-30"))
    after = _sums(agent.run(spec))["All"]
    recovered = None if before is None or after is None else round(before - after, 2)
    assert recovered != round(float(frame.cost[5]), 2), "disclosed: the erased episode's cost"


def test_script_totals_of_two_editions_with_an_extract_date(
        script_agent: ScriptAgent) -> None:
    """R6-2 on the script route. Two monthly editions, each with its extract date on every
    row; between them patient R-000005 has one more episode. A script's overall table
    (``n``, ``sum_cost``) verifies both months and is released automatically: the same
    persons, each with records the audit has never seen. The two sums (seven significant
    digits) differ by the new episode's cost, to 1 CNY."""
    frame = hospital_table(7, 600, "R")
    secret = 7654.32

    def overall(edition: pd.DataFrame) -> float | None:
        script_agent.publish(edition)
        df = edition[PERMITTED]  # what the script reads at /in/data.csv
        got = script_agent.run({"overall.csv": pd.DataFrame(
            {"n": [len(df)], "sum_cost": [round(df.cost.sum(), 2)]})})
        return float(got["table-1.csv"].sum_cost.iloc[0]) if "table-1.csv" in got else None

    before = overall(frame.assign(extracted="2026-10-31"))
    episode = frame.loc[[5]].assign(los=3, cost=secret)
    after = overall(pd.concat([frame, episode], ignore_index=True)
                    .assign(extracted="2026-11-30"))
    recovered = None if before is None or after is None else abs(after - before - secret) < 1
    assert recovered is not True, "disclosed: the returning patient's new episode's cost"


def test_erased_patient_across_a_pseudonym_rotation(script_agent: ScriptAgent) -> None:
    """R4-2 in persons mode, reopened by the provider's pseudonymisation. Many providers
    issue each extract under fresh pseudonyms (here ``R-`` becomes ``P-``): every person
    identity changes, so two editions' totals share no person to the audit. Between them
    patient R-000005 (one episode) asked to be erased; the two overall totals of cost,
    both released, differ by that patient's cost."""
    frame = hospital_table(7, 600, "R")
    spec = {"analyses": [{"kind": "magnitude", "value": "cost", "statistics": ["sum"]}]}
    script_agent.publish(frame)
    before = _sums(script_agent.statistics(spec))["All"]
    rotated = frame.drop(index=5).assign(patient_id=frame.patient_id.str.replace("R-", "P-"))
    script_agent.publish(rotated)
    after = _sums(script_agent.statistics(spec))["All"]
    recovered = None if before is None or after is None else round(before - after, 2)
    assert recovered != round(float(frame.cost[5]), 2), "disclosed: the erased patient's cost"


# ---- R6-3: a held run's outputs, by position and kind, spell a value ---------------------

KINDS = (".csv", ".json", ".svg")  # held table, held document, withheld image


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_kinds_of_held_outputs_spell_a_value(
        script_agent: ScriptAgent, make_party: Any, make_agent: Any,
        make_person: Any) -> None:
    """R5-4's fix names a held output by position and keeps its extension, and names a
    withheld one ``withheld-<i>``; files are taken in the order of the names the script
    chose. So the script picks, for each of up to twenty files, one of seven kinds (csv,
    json, png, jpg, jpeg, pdf, or an svg that is always withheld): about 56 bits a run,
    shown in the job view and on the ledger before anyone has looked. Here thirteen
    files in base 3 (csv, json, svg: no image policy needed) carry the one leukaemia
    patient's cost in cents. The run is held, as it must be; the value has left."""
    frame = hospital_table(7, 600, "R")
    frame.loc[5, ["diagnosis", "cost"]] = ["C91", 12345.67]
    script_agent.publish(frame)
    df = frame[PERMITTED]  # what the script reads at /in/data.csv
    cents = round(float(df.cost[df.diagnosis == "C91"].iloc[0]) * 100)
    # An ordinary count by diagnosis (it leaves out C91, so it is held), as a table or
    # a document; or an image, which is withheld.
    by = df.groupby("diagnosis").agg(n=("cost", "size")).reset_index()
    by = by[by.n >= 10]
    content = {".csv": by.to_csv(index=False).encode(),
               ".json": by.to_json(orient="records").encode(), ".svg": b"<svg/>"}
    files = {}
    for position in range(13):  # least significant digit first
        kind = KINDS[cents // 3 ** position % 3]
        files[f"f{position:02d}{kind}"] = content[kind]
    report = _held_run(script_agent, files)
    assert report.state == "awaiting_review"  # held, as it must be

    seen = _requesters_view(make_party, make_agent, make_person, report)
    assert seen["state"] == "awaiting_review"
    digits = {}
    for o in seen["outputs"]:  # output-<i>.<ext> or withheld-<i>
        stem, _, ext = o["name"].partition(".")
        position = int(stem.rpartition("-")[2]) - 1
        digits[position] = 2 if stem.startswith("withheld-") else 1 if ext == "json" else 0
    recovered = sum(d * 3 ** i for i, d in digits.items()) / 100
    assert recovered != 12345.67, "disclosed: the C91 patient's cost, in the output kinds"


# ---- R6-4: a one-cell table's rules are its cell's rules ---------------------------------

HIV = ({"name": "hiv", "type": "boolean", "sensitivity": "sensitive"},)


def test_rules_of_a_one_cell_sum_bound_a_small_count(agent: Agent) -> None:
    """F1 withheld each hidden cell's rules and kept the table's (which rules hid
    something somewhere in it); R5-5 made the sum of a flag with 1 to k-1 holders a
    ``threshold`` suppression. A table without dimensions has one cell, so its rules are
    that cell's: the sum of ``hiv`` is hidden under ``threshold`` alone when three to nine
    patients are positive, and under ``threshold``, ``dominance`` and ``p_percent`` when
    one or two are (a sum of ones is dominated by its two largest only then). The
    frequency table says 1 to 9; the rules say 1 or 2. Here one patient is positive."""
    frame = hospital_table(22, 2000, "R").assign(hiv="false")
    frame.loc[frame.index[frame.diagnosis == "K35"][:1], "hiv"] = "true"
    agent.publish(frame)
    doc = agent.run({"analyses": [
        {"kind": "magnitude", "value": "hiv", "statistics": ["sum"]}]}, extra_fields=HIV)
    table = doc["analyses"][0]["tables"][0]
    assert cells(doc, 0)[0]["value"] is None  # hidden, as it must be
    recovered = {1, 2} if "dominance" in table["rules"] else None
    assert recovered != {1, 2}, "disclosed: one or two HIV-positive patients, not 3 to 9"
