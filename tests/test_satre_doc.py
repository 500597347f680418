"""docs/satre.md's counts are the counts of its own table (they are edited as features land)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "satre.md"
ROW = re.compile(r"^\| (\d+\.\d+\.\d+) \| .*? \| (Mandatory|Recommended|Optional) \| "
                 r"(met|partly|not yet) \| (.+) \|$", re.M)


def test_counts_match_the_table_and_every_line_has_evidence() -> None:
    text = DOC.read_text()
    rows = ROW.findall(text)
    assert len({n for n, *_ in rows}) == len(rows) > 90
    assert all(len(evidence.strip()) > 20 for *_, evidence in rows)
    counts = Counter((level, status) for _, level, status, _ in rows)
    for level in ("Mandatory", "Recommended", "Optional"):
        met, partly, not_yet = (counts[(level, s)] for s in ("met", "partly", "not yet"))
        assert f"| {level} | {met + partly + not_yet} | {met} | {partly} | {not_yet} |" in text
    m = re.search(r"\*\*Mandatory statements that apply to the software: (\d+); met: (\d+), "
                  r"partly met:\s+(\d+), not yet met: (\d+)\.\*\*", text)
    assert m is not None
    assert tuple(map(int, m.groups())) == (
        sum(counts[("Mandatory", s)] for s in ("met", "partly", "not yet")),
        counts[("Mandatory", "met")], counts[("Mandatory", "partly")],
        counts[("Mandatory", "not yet")])
