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
  equations in two unknowns. Three stage-3 patients among 2,000 come out as 3.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from sandbox.demo_data import hospital_table
from tests.redteam.test_redteam_2 import Agent, agent, cells, leak
from tests.redteam.test_redteam_3 import PERMITTED, ScriptAgent, script_agent

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
    return round((s - c * h) / (rare - c))


@leak("R6-1: a four-valued column's sum and its frequency table give a count below k")
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


@leak("R6-1: a script's sum of a four-valued column beside the frequency table")
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
