"""Red team, sixth pass, R6-2 variants: record and person identities that change with
something no cell reads.

R6-2 (``test_redteam_6.py``) broke the differencing audit's identities with a column
that changes on every row; the fix hashes each record's permitted fields, each parsed by
its declared type (``compute.sdc.identity``), compares every identity space the
requester was released populations in, and, where the editions' identities overlap
little, compares cells of the same label by count. These attacks try the edges: a
column the file gains, an integer written as a float, an identifier written with spaces
or leading zeros, two permits with different fields, a column a permit's identities
needed leaving the file. Same convention as ``test_redteam_6.py``: each attack computes
what it learns (``recovered``) and asserts the defence. The last tests check the
defence costs nothing where nothing leaks (a growing monthly edition is released).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from sandbox.demo_data import hospital_table
from tests.redteam.test_redteam_2 import Agent, agent, cells
from tests.redteam.test_redteam_3 import PERMITTED, ScriptAgent, script_agent

__all__ = ["agent", "script_agent"]  # the fixtures, imported for pytest

TOTAL = {"analyses": [{"kind": "magnitude", "value": "cost", "statistics": ["sum"]}]}
WARD = ({"name": "ward", "type": "string", "sensitivity": "internal"},)


def _total(doc: dict[str, Any]) -> Any:
    return next(c["value"] for c in cells(doc, 0)
                if all(v == "All" for v in c["cell"].values()))


def _difference(before: Any, after: Any) -> float | None:
    return None if before is None or after is None else round(before - after, 2)


def test_a_column_the_file_gains_hides_an_erased_record(agent: Agent) -> None:
    """The provider's next edition carries a new column (a discharge ward, not
    permitted) and lacks one erased episode: every record's text has changed."""
    frame = hospital_table(7, 2000, "R")
    agent.publish(frame)
    before = _total(agent.run(TOTAL))
    assert before is not None
    gained = frame.drop(index=5).assign(ward=lambda f: "W" + (f.age % 4).astype(str))
    agent.publish(gained)
    recovered = _difference(before, _total(agent.run(TOTAL)))
    assert recovered != round(float(frame.cost[5]), 2), "disclosed: the erased episode's cost"


def test_an_integer_column_written_as_float_hides_an_erased_record(agent: Agent) -> None:
    """Age and length of stay written ``55.0`` from one edition on (pandas does so once a
    column has a missing value), with zero-padded ages in a few rows and stray spaces
    around the sex; one episode erased."""
    frame = hospital_table(7, 2000, "R")
    agent.publish(frame)
    before = _total(agent.run(TOTAL))
    respelled = frame.drop(index=5).astype({"age": float, "los": float}).astype(str)
    first = respelled.index[:50]
    respelled.loc[first, "age"] = "0" + frame.age[first].astype(str)
    respelled["sex"] = " " + respelled.sex + "  "
    agent.publish(respelled)
    recovered = _difference(before, _total(agent.run(TOTAL)))
    assert recovered != round(float(frame.cost[5]), 2), "disclosed: the erased episode's cost"


def test_identifiers_respelled_hide_a_returning_patients_episode(
        script_agent: ScriptAgent) -> None:
    """Persons mode. The next extract writes patient numbers with a trailing space; the
    returning patient R-000005 has one more episode. The holdings must still see one
    person whose records changed."""
    frame = hospital_table(7, 600, "R")
    secret = 7654.32
    script_agent.publish(frame)
    before = _total(script_agent.statistics(TOTAL))
    episode = frame.loc[[5]].assign(cost=secret)
    grown = pd.concat([frame, episode], ignore_index=True)
    grown["patient_id"] = grown.patient_id + " "
    script_agent.publish(grown)
    after = _total(script_agent.statistics(TOTAL))
    recovered = None if before is None or after is None else round(after - before, 2)
    assert recovered != secret, "disclosed: the returning patient's new episode's cost"


def test_two_permits_with_different_fields_compare_their_records(agent: Agent) -> None:
    """The requester holds two permits on the dataset, one with a ward field: record
    identities over each permit's fields differ. The total under the first permit, then
    (one episode erased) the ``All`` margin of a table by ward under the second: another
    label, another identity space, the same records but one."""
    frame = hospital_table(7, 2000, "R").assign(ward=lambda f: "W" + (f.age % 3).astype(str))
    agent.publish(frame)
    before = _total(agent.run(TOTAL, permit_id="pmt_1"))
    assert before is not None
    agent.publish(frame.drop(index=5))
    by_ward = {"analyses": [{"kind": "magnitude", "dims": ["ward"], "value": "cost",
                             "statistics": ["sum"]}]}
    after = _total(agent.run(by_ward, permit_id="pmt_2", extra_fields=WARD))
    recovered = _difference(before, after)
    assert recovered != round(float(frame.cost[5]), 2), "disclosed: the erased episode's cost"


def test_a_column_a_permits_identities_needed_leaves_the_file(agent: Agent) -> None:
    """Populations released under a permit with a ward field; the ward column then
    leaves the file, so those identities cannot be computed again. A total under the
    other permit one episode later must not pass as compared with nothing."""
    frame = hospital_table(7, 2000, "R").assign(ward=lambda f: "W" + (f.age % 3).astype(str))
    agent.publish(frame)
    before = _total(agent.run(TOTAL, permit_id="pmt_2", extra_fields=WARD))
    assert before is not None
    agent.publish(frame.drop(index=5).drop(columns="ward"))
    recovered = _difference(before, _total(agent.run(TOTAL, permit_id="pmt_1")))
    assert recovered != round(float(frame.cost[5]), 2), "disclosed: the erased episode's cost"


def test_a_script_total_after_rotated_pseudonyms(script_agent: ScriptAgent) -> None:
    """R6-2c on the script route: a statistics total, then (pseudonyms rotated, one
    patient erased) a script's overall table, released automatically if verified."""
    frame = hospital_table(7, 600, "R")
    script_agent.publish(frame)
    before = _total(script_agent.statistics(TOTAL))
    rotated = frame.drop(index=5).assign(patient_id=frame.patient_id.str.replace("R-", "P-"))
    script_agent.publish(rotated)
    df = rotated[PERMITTED]
    got = script_agent.run({"overall.csv": pd.DataFrame(
        {"n": [len(df)], "sum_cost": [round(df.cost.sum(), 2)]})})
    after = float(got["table-1.csv"].sum_cost.iloc[0]) if "table-1.csv" in got else None
    recovered = None if before is None or after is None else abs(
        before - after - float(frame.cost[5])) < 1
    assert recovered is not True, "disclosed: the erased patient's cost"


def test_corrections_to_an_unread_column_hide_an_erased_record(agent: Agent) -> None:
    """The next edition corrects the age of 150 episodes (7.5 %: the editions' identities
    still overlap by more than 0.9, so no label is compared by count) and lacks one
    erased episode. To the permitted fields' identities the total's records differ by
    301; the total of cost does not read age, and over cost alone they differ by one."""
    frame = hospital_table(7, 2000, "R")
    agent.publish(frame)
    before = _total(agent.run(TOTAL))
    assert before is not None
    corrected = frame.copy()
    corrected.loc[corrected.index[100:250], "age"] += 1
    agent.publish(corrected.drop(index=5))
    recovered = _difference(before, _total(agent.run(TOTAL)))
    assert recovered != round(float(frame.cost[5]), 2), "disclosed: the erased episode's cost"


def test_script_total_after_corrections_to_an_unread_column(
        script_agent: ScriptAgent) -> None:
    """The same on the script route: an overall table (``n``, ``sum_cost``: seven
    significant digits, to 1 CNY for 600 episodes) before, and after 40 corrected ages
    (6.7 %) and one new episode of a known patient."""
    frame = hospital_table(7, 600, "R")
    secret = 7654.32

    def overall(edition: pd.DataFrame) -> float | None:
        script_agent.publish(edition)
        df = edition[PERMITTED]
        got = script_agent.run({"overall.csv": pd.DataFrame(
            {"n": [len(df)], "sum_cost": [round(df.cost.sum(), 2)]})})
        return float(got["table-1.csv"].sum_cost.iloc[0]) if "table-1.csv" in got else None

    before = overall(frame)
    corrected = pd.concat([frame, frame.loc[[5]].assign(cost=secret)], ignore_index=True)
    corrected.loc[corrected.index[100:140], "age"] += 1
    after = overall(corrected)
    recovered = None if before is None or after is None else abs(after - before - secret) < 1
    assert recovered is not True, "disclosed: the returning patient's new episode's cost"


# ---- what the defence must not cost --------------------------------------------------------

def test_corrections_to_the_summed_column_release_the_total(agent: Agent) -> None:
    """Forty-five costs corrected and one episode erased: the totals differ by the sum
    of 46 changes, which discloses no one; both are released."""
    frame = hospital_table(7, 2000, "R")
    agent.publish(frame)
    assert _total(agent.run(TOTAL)) is not None
    corrected = frame.copy()
    corrected.loc[corrected.index[100:145], "cost"] += 10
    agent.publish(corrected.drop(index=5))
    assert _total(agent.run(TOTAL)) is not None


def test_a_growing_monthly_edition_is_released(agent: Agent) -> None:
    """Fifty new episodes and a new extract date: the totals differ by fifty records,
    which discloses no one; both are released."""
    frame = hospital_table(7, 2050, "R")
    agent.publish(frame.iloc[:2000].assign(extracted="2026-10-31"))
    assert _total(agent.run(TOTAL)) is not None
    agent.publish(frame.assign(extracted="2026-11-30"))
    assert _total(agent.run(TOTAL)) is not None


def test_rotated_pseudonyms_with_many_new_patients_are_released(
        script_agent: ScriptAgent) -> None:
    """Pseudonyms rotated, as R6-2c, but the edition has fifty new patients: the label
    check compares the totals (fifty apart) and releases both."""
    frame = hospital_table(7, 650, "R")
    script_agent.publish(frame.iloc[:600])
    assert _total(script_agent.statistics(TOTAL)) is not None
    script_agent.publish(frame.assign(patient_id=frame.patient_id.str.replace("R-", "P-")))
    assert _total(script_agent.statistics(TOTAL)) is not None
