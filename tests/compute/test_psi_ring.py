"""Private set intersection among three and four providers (the ring protocol) against a
plain pandas intersection, the cipher's commutativity across roles, and what the relayed
messages hold."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pandas as pd
import pytest
from private_set_intersection.python import client, server

from compute.errors import InvalidInput, PolicyViolation
from compute.psi import PSISpec, identifiers
from compute.psi_ring import (
    MAX_MESSAGE_BYTES,
    blind_own,
    cardinalities,
    holder_sets,
    is_dummy_layout,
    message,
    new_key,
    own_sets,
    pack,
    reblind,
    run_ring_psi,
    unpack,
)

DISTRICTS = ("Huangpu", "Xuhui", "Pudong")
SPEC = PSISpec("credit_code", "district", DISTRICTS, "employees", 6)


def registers(n: int, seed: int) -> list[pd.DataFrame]:
    """n registers over overlapping slices of 260 credit codes; the holder (index 1) has
    districts and employee counts."""
    rng = np.random.default_rng(seed)
    codes = [f"91310{x:013d}" for x in rng.choice(10**12, size=260, replace=False)]
    frames = [pd.DataFrame({"credit_code": rng.choice(codes, 200, replace=False)})
              for _ in range(n)]
    frames[1] = frames[1].assign(
        district=rng.choice([*DISTRICTS, "Other"], 200, p=[0.45, 0.45, 0.05, 0.05]),
        employees=rng.integers(0, 64, 200))
    return frames


def plain(frames: list[pd.DataFrame], holder: int) -> pd.DataFrame:
    common = set.intersection(*(set(f["credit_code"]) for i, f in enumerate(frames)
                                if i != holder))
    return frames[holder][frames[holder]["credit_code"].isin(common)]


def test_the_cipher_commutes_across_roles() -> None:
    """H(x)^a made by a client with key a, raised to b by a server, equals H(x)^b made by a
    client with key b, raised to a by a server: one key serves both roles."""
    a, b = new_key(), new_key()
    ids = ["91310000000000000001", "91310000000000000002", "x"]
    ab = reblind(b, blind_own(a, {"ids": ids}), min_size=1)["ids"]
    ba = reblind(a, blind_own(b, {"ids": ids}), min_size=1)["ids"]
    assert sorted(ab) == sorted(ba) and len(set(ab)) == 3
    # The same key bytes reload as either role (CreateFromKey) and blind alike.
    direct = client.CreateFromKey(a, False).CreateRequest(ids[:1]).encrypted_elements[0]
    assert bytes(direct) in blind_own(a, {"ids": ids})["ids"]
    assert server.CreateFromKey(a, False).GetPrivateKeyBytes() == a


@pytest.mark.parametrize(("n", "counter"), [(3, 0), (4, 3)])
def test_matches_a_plain_intersection(n: int, counter: int) -> None:
    frames = registers(n, seed=n)
    out, sizes = run_ring_psi(SPEC, frames, holder=1, counter=counter, min_count=5)
    want = plain(frames, holder=1)
    assert 5 <= len(want) < 200
    assert out["intersection"] == len(want)
    assert out["sum"] == int(want["employees"].sum())
    for cell in out["categories"]:
        sub = want[want["district"] == cell["category"]]
        if len(sub) >= 5:
            assert (cell["count"], cell["sum"]) == (len(sub), int(sub["employees"].sum()))
        else:  # Pudong among four registers (3 firms): suppressed with its sum
            assert cell["count"] is None and cell["sum"] is None
    assert out["suppressed_cells"] == sum(
        1 for d in DISTRICTS if (want["district"] == d).sum() < 5)
    assert sizes["hop0"] > 0 and sizes["relayed"] > sizes["hop0"]


def test_below_the_minimum_count_everything_is_suppressed() -> None:
    frames = registers(3, seed=3)
    n = len(plain(frames, holder=1))
    out, _ = run_ring_psi(PSISpec("credit_code"), frames, holder=1, counter=2,
                          min_count=n + 1)
    assert out == {"intersection": None, "min_count": n + 1, "suppressed_cells": 1}
    with pytest.raises(PolicyViolation, match="minimum count"):  # a probe of a few ids
        run_ring_psi(PSISpec("credit_code"), [frames[0].head(3), *frames[1:]], holder=1,
                     counter=2, min_count=10)
    with pytest.raises(InvalidInput):
        run_ring_psi(PSISpec("credit_code"), frames, holder=1, counter=1)


def test_relayed_sets_hold_no_identifier_and_no_order() -> None:
    frames = registers(3, seed=7)
    keys = [new_key() for _ in range(3)]
    hop0 = [blind_own(keys[i], own_sets(SPEC, frames[i], holder=i == 1)) for i in range(3)]
    hop1 = [reblind(keys[(o + 1) % 3], hop0[o], min_size=5) for o in range(3)]
    hop2 = [reblind(keys[(o + 2) % 3], hop1[o], min_size=5) for o in range(3)]
    relayed = b"".join(pack(s) for s in [*hop0, *hop1, *hop2])
    for frame in frames:
        for code in identifiers(frame, "credit_code")[:40]:
            assert code.encode() not in relayed and code[-8:].encode() not in relayed
            assert hashlib.sha256(code.encode()).digest() not in relayed
    # Each reblinded set comes back sorted: its order does not follow the sender's.
    assert all(s == sorted(s) for hop in hop1 for s in hop.values())
    # The holder's sets hold M records per category (three and "other"; M = 256, the
    # largest district's 90 or so, doubled and rounded up), half of them per value bit.
    assert {n: len(s) for n, s in hop0[1].items() if n in ("all", "cat.2", "bit.5")} == \
        {"all": 4 * 256, "cat.2": 256, "bit.5": 2 * 256}
    assert unpack(pack(hop2[1])) == hop2[1]
    cards = cardinalities(SPEC, [hop2[0], hop2[2]], hop2[1])
    assert cards["all"] == len(plain(frames, holder=1))


def test_malformed_messages_are_refused() -> None:
    good = pack({"ids": [b"\x02" + bytes(32)] * 3})
    for bad in (b"", b"XXXX\x00\x01", good[:-1], good + b"\x00",
                pack({"../x": [b"\x02" + bytes(32)]}), pack({"ids": [b"\x05" + bytes(32)]})):
        with pytest.raises(InvalidInput):
            unpack(bad)


def counter_view(spec: PSISpec, holder_frame: pd.DataFrame) -> dict[tuple[str, ...], int]:
    """What the counter can compute from the holder's fully blinded groups alone: the size
    of every group and of every pairwise and triple intersection among them."""
    keys = [new_key() for _ in range(3)]
    sets = blind_own(keys[1], own_sets(spec, holder_frame, holder=True))
    for h in (2, 0):
        sets = reblind(keys[h], sets, min_size=1)
    groups = {name: set(points) for name, points in sets.items()}
    view = {}
    for r in (1, 2, 3):
        for combo in itertools.combinations(sorted(groups), r):
            view[combo] = len(set.intersection(*(groups[g] for g in combo)))
    return view


def holder(sizes: dict[str, int], values: tuple[int, int], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    district = [d for d, k in sizes.items() for _ in range(k)]
    return pd.DataFrame({"credit_code": [f"91310{x:013d}" for x in rng.choice(
                             10**12, len(district), replace=False)],
                         "district": district,
                         "employees": rng.integers(*values, len(district))})


def test_the_holders_sets_tell_the_counter_nothing_beyond_a_power_of_two() -> None:
    """Two holders whose largest district falls in the same power-of-two bucket but whose
    histograms and employee counts differ look alike to the counter: every group's size and
    every intersection of a category with at most one value bit (which is what the counter
    needs) is the same, so neither the category histogram nor any sum over the holder's
    whole set can be read from them."""
    spec = PSISpec("credit_code", "district", DISTRICTS, "employees", 3)
    a = holder({"Huangpu": 20, "Xuhui": 10, "Other": 5}, (0, 8), seed=1)
    b = holder({"Huangpu": 3, "Pudong": 17}, (6, 8), seed=2)
    view_a, view_b = counter_view(spec, a), counter_view(spec, b)
    onebit = [c for c in view_a if sum(g.startswith("bit.") for g in c) <= 1]
    assert {c: view_a[c] for c in onebit} == {c: view_b[c] for c in onebit}
    assert view_a[("all",)] == 4 * 64 and view_a[("cat.0",)] == 64  # M = 64 (2 * 20 -> 64)
    assert view_a[("bit.0", "cat.1")] == 32 and view_a[("all", "bit.2")] == 4 * 32
    # Without a value column every category holds M = the largest one rounded up.
    no_value = PSISpec("credit_code", "district", DISTRICTS)
    assert counter_view(no_value, a) == counter_view(no_value, b.iloc[3:])
    assert counter_view(no_value, a)[("cat.2",)] == 32
    # M is never below the minimum count, so no hop refuses a category's set.
    assert len(holder_sets(no_value, a, min_size=40)["cat.0"]) == 64
    for sp, frame in ((spec, a), (no_value, b), (PSISpec("credit_code", value_column="employees",
                                                            value_bits=3), a)):
        assert is_dummy_layout({n: len(s) for n, s in holder_sets(sp, frame).items()})
    assert not is_dummy_layout({"all": 35, "cat.0": 35, "cat.1": 35, "cat.2": 35})


def test_a_message_over_the_relay_limit_is_refused_with_its_reason() -> None:
    point = b"\x02" + bytes(32)
    assert len(message({"ids": [point] * 1000})) == len(pack({"ids": [point] * 1000}))
    with pytest.raises(InvalidInput, match="exceed the 12 MiB") as e:
        message({"all": [point] * (MAX_MESSAGE_BYTES // 33)})
    assert e.value.rule == "message_size"
