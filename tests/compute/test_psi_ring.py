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

from authz.wire import PSI_CHUNK_BYTES, PSI_MAX_CHUNKS
from compute import psi_ring
from compute.errors import InvalidInput, PolicyViolation
from compute.psi import PSISpec, identifiers
from compute.psi_ring import (
    MAX_MESSAGE_BYTES,
    blind_own,
    cardinalities,
    holder_keys,
    layout_sizes,
    message,
    new_key,
    own_sets,
    pack,
    reblind,
    reblind_per_group,
    route,
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


def ring_hops(spec: PSISpec, frames: list[pd.DataFrame], holder: int, min_size: int = 5
              ) -> list[list[dict[str, list[bytes]]]]:
    """Every message of a ring, hop by hop (``hops[h][o]``: the set of ``o`` after hop h),
    as the agents make them."""
    n = len(frames)
    keys, hkeys = [new_key() for _ in range(n)], holder_keys(spec)
    hops = [[blind_own(hkeys if i == holder else keys[i],
                       own_sets(spec, frames[i], holder=i == holder)) for i in range(n)]]
    for h in range(1, n):
        hop = []
        for o in range(n):
            at = route(n, holder, o)[h - 1]
            hop.append(reblind_per_group(hkeys, hops[-1][o], min_size=min_size)
                       if at == holder else reblind(keys[at], hops[-1][o], min_size=min_size))
        hops.append(hop)
    return hops


def test_routes_reach_the_holder_last() -> None:
    assert route(3, 1, 0) == [2, 1] and route(3, 1, 2) == [0, 1] and route(3, 1, 1) == [2, 0]
    assert route(4, 0, 2) == [3, 1, 0] and route(4, 0, 0) == [1, 2, 3]


def test_relayed_sets_hold_no_identifier_and_no_order() -> None:
    frames = registers(3, seed=7)
    hops = ring_hops(SPEC, frames, holder=1)
    relayed = b"".join(pack(s) for hop in hops for s in hop)
    for frame in frames:
        for code in identifiers(frame, "credit_code")[:40]:
            assert code.encode() not in relayed and code[-8:].encode() not in relayed
            assert hashlib.sha256(code.encode()).digest() not in relayed
    # Each reblinded set comes back sorted: its order does not follow the sender's.
    assert all(s == sorted(s) for hop in hops[1:] for sets in hop for s in sets.values())
    # The holder's groups are each padded to its 200 identifiers; a non-holder's set keeps
    # its size in every per-group version the holder made of it.
    assert {len(s) for s in hops[0][1].values()} == {200}
    assert set(hops[2][0]) == set(SPEC.groups()) == set(hops[0][1])
    assert {len(s) for s in hops[2][0].values()} == {len(hops[1][0]["ids"])}
    assert unpack(pack(hops[2][1])) == hops[2][1]
    cards = cardinalities(SPEC, [hops[2][0], hops[2][2]], hops[2][1])
    assert cards["all"] == len(plain(frames, holder=1))


def test_the_counter_cannot_link_the_holders_groups() -> None:
    """What the counter receives from the holder, one fully blinded set per group: no point
    is in two groups (each group has its own key), so which groups hold a record's point,
    i.e. its category and value bits, cannot be read; the non-holders' per-group versions
    are unlinkable alike. Under one key for all groups, a holder record's point would be in
    each of its groups."""
    spec = PSISpec("credit_code", "district", DISTRICTS[:2], "employees", 2)
    frames = registers(3, seed=5)
    frames[1] = frames[1].assign(employees=frames[1]["employees"] % 4)
    final = ring_hops(spec, frames, holder=1)[-1]
    for sets in final:
        for a, b in itertools.combinations(spec.groups(), 2):
            assert not set(sets[a]) & set(sets[b]), (a, b)
    # ...while within a group the counter still finds the intersection.
    cards = cardinalities(spec, [final[0], final[2]], final[1])
    assert cards["all"] == len(plain(frames, holder=1)) > 0


def test_malformed_messages_are_refused() -> None:
    good = pack({"ids": [b"\x02" + bytes(32)] * 3})
    for bad in (b"", b"XXXX\x00\x01", good[:-1], good + b"\x00",
                pack({"../x": [b"\x02" + bytes(32)]}), pack({"ids": [b"\x05" + bytes(32)]})):
        with pytest.raises(InvalidInput):
            unpack(bad)


def test_a_message_over_the_relay_limit_is_refused_with_its_reason(
        monkeypatch: pytest.MonkeyPatch) -> None:
    point = b"\x02" + bytes(32)
    assert len(message({"ids": [point] * 1000})) == len(pack({"ids": [point] * 1000}))
    assert MAX_MESSAGE_BYTES == PSI_CHUNK_BYTES * PSI_MAX_CHUNKS  # the relay's limit
    # The limit as the relay's, scaled down: 256 MiB of points would take seconds to build.
    monkeypatch.setattr(psi_ring, "MAX_MESSAGE_BYTES", 33 * 1000)
    assert message({"ids": [point] * 990})
    with pytest.raises(InvalidInput, match="exceed the 256 MiB") as e:
        message({"all": [point] * 1000})
    assert e.value.rule == "message_size"


def test_the_layout_reads_a_message_of_millions_of_points_without_copying_them() -> None:
    point = b"\x03" + bytes(32)
    data = pack({"all": [point] * 2_000_000, "cat.0": [point] * 3})
    assert layout_sizes(data) == {"all": 2_000_000, "cat.0": 3}
    bad = bytearray(data)
    bad[6 + 1 + 3 + 4 + 33 * 1_999_999] = 4  # the last point of "all" is not compressed
    with pytest.raises(InvalidInput, match="not compressed"):
        layout_sizes(bytes(bad))
