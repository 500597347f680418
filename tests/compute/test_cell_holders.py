"""The cell-holders rounds (compute/cell_holders.py): a cell fewer than min_providers hold
is withdrawn from every statistic at every provider; a cell enough hold is untouched.

The F8 attack itself is tests/redteam/test_redteam_2.py; these run the rounds alone (no
CKKS), every provider in this process (tests/compute/harness.py).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compute import cell_holders
from compute.errors import BadSignature, Conflict
from compute.local_aggregate import kept_records, local_aggregate
from compute.masking import local_sessions
from tests.compute.conftest import DIAGNOSES, FULL_SPEC, hospital_frame
from tests.compute.harness import cell_holder_rounds

K = 3
# Diagnosis groups beside an age histogram: two cell families on different columns, so a
# withdrawal in one can leave a cell of the other short.
SPEC: dict[str, Any] = {
    "version": 1, "statistics": ["grouped", "histogram"], "columns": [], "shift": {},
    "bins": {"age": [0, 50, 100]},
    "groups": {"by": [{"column": "diagnosis", "categories": ["A", "B"]}], "values": ["cost"]},
}


def frame(rows: list[tuple[str, int, int]]) -> pd.DataFrame:
    """(diagnosis, age, how many records)."""
    return pd.DataFrame([{"diagnosis": d, "age": a, "cost": 100.0 + a}
                         for d, a, n in rows for _ in range(n)])


def rounds(spec: dict[str, Any], frames: dict[str, pd.DataFrame], min_providers: int = 3
           ) -> tuple[dict[str, Any], list[list[dict[str, Any]]], dict[str, Any]]:
    agents = {p: Ed25519PrivateKey.generate() for p in frames}
    masks, _ = local_sessions("jnt_test", agents)
    published: list[list[dict[str, Any]]] = []
    withdrawn = cell_holder_rounds(spec, frames, K, min_providers, masks, agents, published)
    return withdrawn, published, masks


def test_a_cell_enough_providers_hold_is_released_unchanged() -> None:
    frames = {f"h{i}": hospital_frame(60 + i, 300).dropna() for i in range(3)}
    spec = {**FULL_SPEC, "quantiles": {}, "statistics": [
        s for s in FULL_SPEC["statistics"] if s != "quantiles"]}
    withdrawn, published, _ = rounds(spec, frames)
    assert len(published) == 1  # nothing forced: one round
    for p, f in frames.items():
        assert not withdrawn[p].any()
        assert local_aggregate(spec, f, K, withdrawn[p]) == local_aggregate(spec, f, K)


def test_a_forced_withdrawal_that_shortens_another_cell_takes_a_second_round() -> None:
    frames = {
        # Only h0 has diagnosis A: forced in round 0. Its age 50-100 bin is then one record
        # (short at h0, withdrawn there), so only two providers hold that bin: forced in
        # round 1 at h1 and h2 too. Round 2 forces nothing.
        "h0": frame([("A", 60, 3), ("B", 60, 1), ("B", 20, 5)]),
        "h1": frame([("B", 20, 5), ("B", 70, 4)]),
        "h2": frame([("B", 20, 6), ("B", 80, 3)]),
    }
    withdrawn, published, _ = rounds(SPEC, frames)
    assert len(published) == 3
    for p, f in frames.items():
        kept = kept_records(SPEC, f, K, withdrawn[p])
        assert set(f[kept].age) == {20}, p  # neither diagnosis A nor the upper bin is left
        counts = local_aggregate(SPEC, f, K, withdrawn[p])["counts"]
        assert counts["grp.rows"][0] == 0 and counts["hist.age"][2] == 0


def test_rounds_past_the_cap_fail_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cell_holders, "MAX_ROUNDS", 2)
    frames = {"h0": frame([("A", 60, 3), ("B", 60, 1), ("B", 20, 5)]),
              "h1": frame([("B", 20, 5), ("B", 70, 4)]),
              "h2": frame([("B", 20, 6), ("B", 80, 3)])}
    with pytest.raises(Conflict, match="did not settle") as e:
        rounds(SPEC, frames)
    assert not any(ch.isdigit() for ch in str(e.value).replace("2 rounds", ""))


def test_a_masked_vector_is_not_the_providers_indicators_and_masks_are_fresh() -> None:
    frames = {f"h{i}": frame([("B", 20, 5), ("B", 70, 4)]) for i in range(3)}
    _, published, masks = rounds(SPEC, frames)
    vec = published[0][0]
    masked = np.frombuffer(base64.b64decode(vec["masked_b64"]), dtype="<u8")
    assert masked.max() > 1  # uniform words mod 2^64, not 0/1 indicators
    size = cell_holders.layout_size(SPEC)
    s = masks[vec["provider_id"]]
    first, second = cell_holders.round_mask(s, 0, size), cell_holders.round_mask(s, 1, size)
    assert not np.any(first == second)  # a fresh mask per round
    # ...and the masks of all providers cancel in each round.
    for r in (0, 1):
        total = np.zeros(size, dtype=np.uint64)
        for m in masks.values():
            total += cell_holders.round_mask(m, r, size)
        assert not total.any()


def test_an_altered_or_missing_vector_is_refused() -> None:
    frames = {f"h{i}": frame([("B", 20, 5)]) for i in range(3)}
    agents = {p: Ed25519PrivateKey.generate() for p in frames}
    masks, _ = local_sessions("jnt_test", agents)
    size = cell_holders.layout_size(SPEC)
    held = np.ones(size, dtype=np.uint64)
    vectors = [cell_holders.publish(masks[p], 0, held, agents[p]) for p in frames]
    pubs = {p: k.public_key() for p, k in agents.items()}
    assert (cell_holders.holders(vectors, "jnt_test", 0, size, pubs) == 3).all()
    raw = bytearray(base64.b64decode(vectors[1]["masked_b64"]))
    raw[0] ^= 1
    altered = {**vectors[1], "masked_b64": base64.b64encode(bytes(raw)).decode()}
    with pytest.raises(BadSignature):
        cell_holders.holders([vectors[0], altered, vectors[2]], "jnt_test", 0, size, pubs)
    with pytest.raises(Conflict):
        cell_holders.holders(vectors[:2], "jnt_test", 0, size, pubs)
    with pytest.raises(Exception, match="round"):
        cell_holders.holders(vectors, "jnt_test", 1, size, pubs)


def test_no_round_without_explicit_cells_under_dp_or_below_two_providers() -> None:
    assert cell_holders.needed(SPEC, 3)
    assert not cell_holders.needed(SPEC, 1)
    assert not cell_holders.needed({**SPEC, "dp": {"epsilon": 1.0}}, 3)
    assert not cell_holders.needed({"statistics": ["mean"], "columns": ["cost"]}, 3)
    # The layout is the spec's alone: bins + missing, (R+1)(C+1) + missing, groups.
    ct = {"statistics": ["contingency"], "contingency": {
        "rows": "sex", "cols": "diagnosis", "row_categories": ["F", "M"],
        "col_categories": DIAGNOSES}}
    assert cell_holders.layout_size(ct) == 3 * 5 + 1
    assert cell_holders.layout(SPEC) == [("hist.age", 5), ("grp", 4), ("grp.cost", 8)]


def test_the_wire_bounds_are_the_protocols() -> None:
    from authz import wire

    assert (wire.CELL_HOLDER_ROUNDS, wire.CELL_HOLDER_CELLS) == \
        (cell_holders.MAX_ROUNDS, cell_holders.MAX_CELLS)
