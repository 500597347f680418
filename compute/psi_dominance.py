"""Dominance of a PSI sum, decided by the provider holding the values.

A PSI release shows a category's count and the sum of its values over the intersection.
Only the client's agent learns the intersection, and only as per-group cardinalities; no
party can test a sum's contributions *within* the intersection. The server's agent
therefore applies nk dominance and p% (``compute.sdc.policy.DEFAULT_POLICY``, as the
statistics and joint routes do) to each group of its *whole register* (a listed
category; the rest, i.e. the records of no listed category; the whole register) before
the protocol, on the values the sums add (rounded and clipped). A dominated group's sum
is withheld whatever the intersection: the outcome is the rule's, per register group,
and carries no other data.

The outcome travels to the client inside the protocol, as one more group per sum: the
*withheld marker* of a sum holds the identifiers of its dominated register group (every
identifier for the total: ``compute.psi.withheld_markers``), and none otherwise (padded like every
group, so its size says nothing).
The client reads ``|A ∩ marker| > 0``: a group with any match is flagged exactly when its
register group is dominated (a set has no false negatives; a false positive, probability
``FPR``, only withholds more). A group with no match sums to 0 and discloses nothing.

Both rules are closed under union of register groups (a union's top-n share is at most
the larger of its parts'; its p% remainder at least its dominant part's), so a hidden
part made of undominated groups is undominated too.
"""

from __future__ import annotations

import numpy as np

from compute.sdc.policy import DEFAULT_POLICY

NK_RULES = tuple((r.n, r.k) for r in DEFAULT_POLICY.nk_rules)
P_PERCENT = DEFAULT_POLICY.p_percent
WITHHELD = "withheld"  # the marker group's name: ``withheld``, ``cat.i.withheld``


def dominated(values: np.ndarray) -> bool:
    """nk or p% on a register group's non-negative values (the sum's contributions)."""
    if len(values) == 0:
        return False
    tops = np.sort(values.astype(float))[::-1]
    total = float(tops.sum())
    top1, top2 = float(tops[:1].sum()), float(tops[:2].sum())
    if top1 > 0 and total - top2 < P_PERCENT * top1:
        return True
    return total > 0 and any(float(tops[:n].sum()) >= k * total for n, k in NK_RULES)
