"""Differencing by combination: a new cell near P_i + P_j or P_i - P_j of released cells."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from compute import statistics
from compute.release_audit import History, compute_audited
from compute.sdc.audit import (
    Sketches,
    near_duplicates,
    row_identities,
    sketch_cells,
    slots_for,
    table_sketches,
)
from compute.sdc.combinations import differenced, near_combinations
from compute.statspec import parse_statistics_spec

K = 10
SLOTS = slots_for(K)
POLICY = statistics.policy_for(K, None)


def _sketch(*sets: np.ndarray) -> Sketches:
    cells = np.concatenate([np.full(len(s), i, dtype=np.int64) for i, s in enumerate(sets)])
    return sketch_cells(cells, np.concatenate(sets).astype(np.uint64), len(sets), SLOTS)


def _ids(seed: int, n: int = 20000) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 2**63, n, dtype=np.uint64)


def test_union_and_difference_less_a_few_records_are_caught() -> None:
    ids = _ids(1)
    b, c, a = ids[:400], ids[400:900], ids[:2000]  # b and c disjoint; b inside a
    prior = _sketch(b, c, a, ids[3000:3050])
    bc = np.concatenate([b, c])
    cases = {
        "union less one": (bc[1:], True),
        "union exactly": (bc, False),  # nothing new: sum(b) + sum(c)
        "union less k-1": (bc[K - 1:], True),
        "union less k": (bc[K:], False),  # k records: the threshold's own premise
        "union plus a few": (np.concatenate([bc, ids[5000:5004]]), True),
        "difference less three": (a[400:][3:], True),  # (a - b) less three
        "difference exactly": (a[400:], False),
        "unrelated": (ids[6000:6400], False),
    }
    new = _sketch(*(s for s, _ in cases.values()))
    got = near_combinations(new, prior, K)
    assert dict(zip(cases, got.tolist(), strict=True)) == {n: w for n, (_, w) in cases.items()}
    # Pairwise alone misses every one of them.
    assert not near_duplicates(new, prior, K).any()


def test_overlapping_cells_whose_union_reveals_the_overlap() -> None:
    """b and c share three records: b ∪ c released gives their sum by subtraction."""
    ids = _ids(2)
    b, c = ids[:300], ids[297:700]
    assert near_combinations(_sketch(ids[:700]), _sketch(b, c), K).tolist() == [True]
    wide = ids[:300], ids[280:700]  # twenty shared: not a disclosure of fewer than k
    assert near_combinations(_sketch(ids[:700]), _sketch(*wide), K).tolist() == [False]


@pytest.mark.parametrize("seed", range(4))
def test_random_removals_are_caught_exactly_below_k(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids = _ids(10 + seed)
    cells = [ids[o:o + int(n)] for o, n in zip(range(0, 15000, 1000),
                                                 rng.integers(10, 900, 15), strict=True)]
    prior = _sketch(*cells)
    i, j = rng.choice(len(cells), 2, replace=False)
    union = np.concatenate([cells[i], cells[j]])
    removed = list(range(0, 2 * K))
    new = _sketch(*(union[d:] for d in removed))
    assert differenced(new, prior, K).tolist() == [0 < d < K for d in removed]


def test_a_margin_over_released_interior_cells_less_one_record_is_suppressed() -> None:
    """Released before: each sex's count of one ward (not the ward's total). Asked now,
    on the data less one record: the ward's total, which pairwise differs from each by
    hundreds but from their sum by one."""
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"ward": rng.choice(list("ABCD"), 2000),
                          "sex": rng.choice(["F", "M"], 2000),
                          "age": rng.integers(18, 90, 2000)})
    ids = row_identities(frame, "k3y-f0r-th3-t3st")
    cells = table_sketches(frame, ["ward", "sex"], ids, SLOTS)  # 5 x 3 margined, C order
    ward_a = [0, 1]  # (A, F), (A, M)
    gone = int(np.flatnonzero(frame.ward.to_numpy() == "A")[0])
    rest = np.arange(len(frame)) != gone
    spec = parse_statistics_spec({"analyses": [{"kind": "frequency", "dims": ["ward"]}]},
                                 {"ward": "string", "sex": "string", "age": "integer"})

    def cell_a(prior: Sketches) -> dict[str, Any]:
        done = compute_audited(frame[rest].reset_index(drop=True), spec, POLICY,
                               History(ids[rest], prior, 0))
        table = done.document["analyses"][0]
        cell = next(c for c in table["cells"] if c["cell"]["ward"] == "A")
        return {**cell, "table_rules": table["rules"]}

    both = cell_a(cells.take(np.array(ward_a)))
    # Hidden cells carry no rules of their own; the table says which rules hid some.
    assert both["value"] is None and "differencing" in both["table_rules"]
    alone = cell_a(cells.take(np.array(ward_a[:1])))  # one of them alone is far from it
    assert alone["value"] is not None


def test_beyond_the_search_budget_cells_are_withheld_not_released_unchecked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ids = _ids(7)
    prior = _sketch(ids[:400], ids[400:900])
    new = _sketch(ids[2000:2400], ids[:400])  # unrelated; identical to a released one
    assert differenced(new, prior, K).tolist() == [False, False]
    monkeypatch.setattr("compute.sdc.combinations.MAX_PAIRS", 3)
    assert differenced(new, prior, K).tolist() == [True, True]
