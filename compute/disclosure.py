"""Minimum-cell-count disclosure check on a provider's local aggregates (agent side).

The primary rule runs before this one, on the records: ``local_aggregate`` with the permit's
minimum count withdraws the records of every cell of 1..k-1 (explicit or implied by
differencing two released record sets) from the whole job, so the aggregates reaching this
check hold no small cell and it suppresses nothing (docs/joint-statistics.md, "Disclosure
check"). This check is the second line, for aggregates computed without that step (a DP
job, whose sensitivities assume no cascade of withdrawals).

Rule: every count cell c with 0 < c < min_cell_count is set to 0, and every real sum that
depends on that cell is set to 0 with it. Dependency is the layout's ``governor``:
``col.X.n`` governs ``col.X.s1/s2``, ``mom.n`` and ``ols.n`` govern their whole blocks,
``grp.V.n[i]`` governs ``grp.V.s1[i]``. So within one statistic counts and sums stay
consistent, but a margin in another statistic still holds the cell's records: on its own
this check does not stop differencing. The number of suppressed cells -- cells, not
records, the record step's included -- travels encrypted in ``disclosure.suppressed`` so the
requester learns the release is partial.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from compute.errors import InvalidInput, LayoutMismatch
from compute.layout import Layout

META_ENTRIES = frozenset({"disclosure.suppressed"})


@dataclass(frozen=True)
class DisclosureReport:
    """Stays with the provider's agent (its log); only the total is shipped, encrypted."""

    min_cell_count: int
    suppressed_cells: int
    by_entry: dict[str, int]


def check_disclosure(aggregates: Mapping[str, Any], layout: Layout,
                     min_cell_count: int) -> tuple[dict[str, Any], DisclosureReport]:
    if isinstance(min_cell_count, bool) or not isinstance(min_cell_count, int) \
            or min_cell_count < 1:
        raise InvalidInput("min_cell_count", "range", "min_cell_count must be an integer >= 1")
    out = copy.deepcopy(dict(aggregates))
    counts, reals = out.get("counts"), out.get("reals")
    if not isinstance(counts, dict) or not isinstance(reals, dict):
        raise LayoutMismatch("aggregates lack the counts/reals families")
    by_entry: dict[str, int] = {}
    for e in layout.of_kind("count"):
        if e.name in META_ENTRIES:
            continue
        cells = counts.get(e.name)
        if not isinstance(cells, list) or len(cells) != e.length:
            raise LayoutMismatch(f"entry {e.name} must be a list of {e.length} counts")
        hit = [i for i, c in enumerate(cells) if isinstance(c, int) and 0 < c < min_cell_count]
        for i in hit:
            cells[i] = 0
        if hit:
            by_entry[e.name] = len(hit)
    for e in layout.of_kind("real"):
        sums, gov = reals.get(e.name), counts.get(e.governor or "")
        if not isinstance(sums, list) or len(sums) != e.length or not isinstance(gov, list):
            raise LayoutMismatch(f"entry {e.name} must be a list of {e.length} sums")
        for i in range(e.length):
            if gov[i if e.elementwise else 0] == 0:
                sums[i] = 0.0
    # Cells the local aggregation already withdrew records from (local_aggregate with the
    # minimum count) come in as this entry; a malformed value is refused, not trusted.
    prior = counts.get("disclosure.suppressed", [0])
    if not isinstance(prior, list) or len(prior) != 1 or isinstance(prior[0], bool) \
            or not isinstance(prior[0], int) or prior[0] < 0:
        raise LayoutMismatch("entry disclosure.suppressed must be a list of 1 count")
    total = prior[0] + sum(by_entry.values())
    counts["disclosure.suppressed"] = [total]
    return out, DisclosureReport(min_cell_count, total, by_entry)
