"""Private set intersection (openmined-psi) against a plain intersection, and what each
party's messages hold."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd
import pytest
from private_set_intersection.python import Request, Response, ServerSetup

from compute.errors import InvalidInput, PolicyViolation
from compute.psi import (
    PSISpec,
    client_cardinalities,
    client_request,
    identifiers,
    parse_psi_spec,
    release,
    run_psi,
    server_respond,
    server_setup,
    shown_cells,
    withheld_markers,
)
from compute.psi_dominance import dominated

DISTRICTS = ["Huangpu", "Xuhui", "Pudong", "Minhang"]
SERVER_SCHEMA = {"credit_code": "string", "district": "string", "employees": "integer"}


def credit_codes(rng: np.random.Generator, n: int) -> list[str]:
    return [f"91310{x:013d}" for x in rng.choice(10**12, size=n, replace=False)]


@pytest.fixture(scope="module")
def registers() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scenario 3: the tax bureau's firms (client) and social insurance filings (server)."""
    rng = np.random.default_rng(3)
    codes = credit_codes(rng, 1000)
    tax = pd.DataFrame({"credit_code": codes[:600]})
    social = pd.DataFrame({"credit_code": codes[200:1000],
                           "district": rng.choice([*DISTRICTS, "Other"], 800,
                                                  p=[0.3, 0.3, 0.3, 0.07, 0.03]),
                           "employees": rng.integers(0, 900, 800)})
    social.loc[5, "employees"] = None
    return tax, social


def plain(tax: pd.DataFrame, social: pd.DataFrame) -> pd.DataFrame:
    return social[social["credit_code"].isin(set(tax["credit_code"]))]


def test_matches_a_plain_intersection(registers: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    tax, social = registers
    spec = parse_psi_spec({"id": "credit_code",
                           "categories": {"column": "district", "values": DISTRICTS},
                           "value": {"column": "employees"}}, SERVER_SCHEMA)
    out, sizes = run_psi(spec, tax, social, min_count=10)
    want = plain(tax, social)
    assert out["intersection"] == len(want) == 400
    assert out["sum"] == int(want["employees"].fillna(0).sum())
    for cell in out["categories"]:
        sub = want[want["district"] == cell["category"]]
        if len(sub) >= 10:
            assert cell["count"] == len(sub)
            assert cell["sum"] == int(sub["employees"].fillna(0).sum())
        else:  # Minhang: below the minimum count, suppressed with its sum
            assert cell["count"] is None and cell["sum"] is None
    assert out["suppressed_cells"] == sum(
        1 for d in DISTRICTS if (want["district"] == d).sum() < 10)
    assert sizes["request"] > 0 and sizes["response"] > 0 and sizes["setup"] > 0


def test_no_identifier_crosses_and_matches_stay_hidden(
        registers: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    tax, social = registers
    spec = PSISpec("credit_code")
    ids = identifiers(tax, "credit_code")
    skeys, setups = server_setup(spec, social, len(ids))
    ckey, request = client_request(ids)
    responses = server_respond(skeys, request, min_request=10)
    # What the controller relays: blinded points and compressed sets, no identifier (nor
    # any 8-character piece of one) in the clear.
    relayed = request + responses["all"] + b"".join(setups.values())
    for code in [*ids[:50], *social["credit_code"].head(50)]:
        assert code.encode() not in relayed and code[-8:].encode() not in relayed
    assert client_cardinalities(ckey, setups, responses) == {"all": 400}
    with pytest.raises(InvalidInput):  # a response missing for a group
        client_cardinalities(ckey, setups, {})
    # The response comes back sorted, not in the request's order: which point answers which
    # request item, and so which of the client's identifiers matched, is not in it.
    resp = Response()
    resp.ParseFromString(responses["all"])
    points = list(resp.encrypted_elements)
    assert points == sorted(points)
    req = Request()
    req.ParseFromString(request)
    assert len(points) == len(req.encrypted_elements)


def test_refusals(registers: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    tax, social = registers
    spec = PSISpec("credit_code")
    out, _ = run_psi(spec, tax.head(250), social, min_count=100)  # 50 matches < 100
    assert out["intersection"] is None and out["suppressed_cells"] == 1
    with pytest.raises(PolicyViolation, match="minimum count"):
        run_psi(spec, tax.head(5), social, min_count=10)  # a probe of a few identifiers
    # Values outside [0, 2^bits - 1] are clipped, never refused (a refusal would tell
    # the requester the largest value's width), and the release says so whatever the data.
    wide = social.assign(employees=social["employees"].fillna(0) * 3 - 900)
    out, _ = run_psi(PSISpec("credit_code", value_column="employees", value_bits=4),
                     tax.tail(150), wide)
    want = plain(tax.tail(150), wide)["employees"].clip(0, 15)
    assert out["sum"] == int(want.sum()) and (want == 0).any() and (want == 15).any()
    assert out["values_clipped_to"] == [0, 15]
    for raw, rule in (({"id": "nope"}, "unknown_column"),
                      ({"id": "credit_code", "value": {"column": "district"}}, "not_numeric"),
                      ({"id": "credit_code", "value": {"column": "employees", "bits": 20}},
                       "fixed_width"),
                      ({"id": "credit_code", "join": 1}, "unknown_field"),
                      ({"id": "credit_code", "categories": {"column": "district",
                                                            "values": [1, 1.0]}}, "duplicate")):
        with pytest.raises(InvalidInput) as e:
            parse_psi_spec(raw, SERVER_SCHEMA)
        assert e.value.rule == rule


def test_identifiers_are_normalized_sets() -> None:
    frame = pd.DataFrame({"id": [" A1", "A1", None, "", 12.0, "12"]})
    got: Any = identifiers(frame, "id")
    assert got == ["A1", "12"]


def test_setup_sizes_do_not_reveal_group_sizes(
        registers: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, social = registers
    spec = PSISpec("credit_code", "district", tuple(DISTRICTS), "employees", 4)
    _, setups = server_setup(spec, social.fillna({"employees": 0}).assign(
        employees=lambda f: f["employees"] % 16), 600)
    sizes = [len(s) for s in setups.values()]
    # Minhang holds about 7 % of the server's identifiers and "all" 100 %: padded, every
    # compressed set has (within Golomb coding's variation) the same size.
    assert max(sizes) / min(sizes) < 1.05


def gcs_hashes(setup: bytes) -> set[int]:
    """What the client reads from a setup message, as it must to test membership: the
    element hashes (``SHA-256(point) mod hash_range``) its Golomb-Rice code holds (the
    library's golomb.cpp: LSB-first bits, a unary quotient ended by a 1, then ``div``
    remainder bits; each value the delta from the previous)."""
    msg = ServerSetup()
    msg.ParseFromString(setup)
    bits = [(byte >> i) & 1 for byte in msg.gcs.bits for i in range(8)]
    out, pos, value = set(), 0, 0
    while 1 in bits[pos:]:
        one = bits.index(1, pos)
        remainder = sum(bits[one + 1 + i] << i for i in range(msg.gcs.div))
        value += ((one - pos) << msg.gcs.div) | remainder
        out.add(value)
        pos = one + 1 + msg.gcs.div
    return out


def test_the_client_cannot_link_the_servers_groups(
        registers: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    """Each group's setup and response are under their own key: no decoded hash of one
    group's set is in another's, and no response point either. Under one key for all
    groups (equal padded sizes give equal hash ranges), a server record's hash would be in
    each of its groups, telling the client every record's category and value bits."""
    tax, social = registers
    spec = PSISpec("credit_code", "district", tuple(DISTRICTS[:2]), "employees", 3)
    server_frame = social.head(120).fillna({"employees": 0}).assign(
        employees=lambda f: f["employees"] % 8)
    ids = identifiers(tax.head(80), "credit_code")
    skeys, setups = server_setup(spec, server_frame, len(ids))
    _, request = client_request(ids)
    responses = server_respond(skeys, request, min_request=10)
    assert set(setups) == set(responses) == set(spec.groups()) and len(setups) == 15
    hashes = {g: gcs_hashes(s) for g, s in setups.items()}
    assert all(len(h) == 120 for h in hashes.values())  # the decoding reads every element
    points = {}
    for g, raw in responses.items():
        resp = Response()
        resp.ParseFromString(raw)
        points[g] = set(resp.encrypted_elements)
        assert len(points[g]) == len(ids)
    for a, b in itertools.combinations(spec.groups(), 2):
        assert not hashes[a] & hashes[b], (a, b)
        assert not points[a] & points[b], (a, b)


@pytest.mark.parametrize(("total", "counts", "shown"), [
    # Nothing hidden, or only empty categories (the remainder is 0): all shown.
    (60, [20, 30, 10], [True, True, True]),
    (60, [20, 40, 0], [True, True, False]),
    # One small category and no rest: the smallest other category goes with it.
    (63, [20, 30, 10, 3], [True, True, False, False]),
    # The rest (unlisted categories) is small on its own: the same.
    (63, [20, 30, 10], [True, True, False]),
    # Two small categories together still below k: one more goes.
    (66, [20, 30, 10, 3, 3], [True, True, False, False, False]),
    # Hidden cells, with the rest, of at least k records together: nothing more goes.
    (75, [20, 30, 10, 3], [True, True, True, False]),
    (70, [20, 30, 10, 3, 4], [True, True, True, False, False]),
    (67, [20, 30, 10, 3, 4], [True, True, False, False, False]),
])
def test_secondary_suppression_over_the_category_line(total: int, counts: list[int],
                                                      shown: list[bool]) -> None:
    assert shown_cells(total, counts, 10) == (True, shown)
    if not all(shown):  # what is hidden is at least k records, or none at all
        rest = total - sum(c for c, ok in zip(counts, shown, strict=True) if ok)
        assert rest == 0 or rest >= 10
    assert shown_cells(9, counts, 10) == (False, [False] * len(counts))


def test_a_hidden_count_takes_its_sum_and_the_total_sum_keeps_nothing_apart() -> None:
    spec = PSISpec("credit_code", "district", ("A", "B", "C"), "employees", 2)
    # cat.0 = 20 records of value 1, cat.1 = 30 of 3, cat.2 = 12 of 2; 1 more of 3 unlisted.
    cards = {"all": 63, "cat.0": 20, "cat.1": 30, "cat.2": 12,
             "bit.0": 51, "bit.1": 43, "cat.0.bit.0": 20, "cat.0.bit.1": 0,
             "cat.1.bit.0": 30, "cat.1.bit.1": 30, "cat.2.bit.0": 0, "cat.2.bit.1": 12,
             "withheld": 0, "cat.0.withheld": 0, "cat.1.withheld": 0, "cat.2.withheld": 0}
    out = release(spec, cards, 10)
    assert [c["count"] for c in out["categories"]] == [20, 30, None]
    assert [c["sum"] for c in out["categories"]] == [20, 90, None]
    assert (out["intersection"], out["sum"]) == (63, 137)
    # The rest (one record, value 3) is hidden with C: 137 - 20 - 90 = 27 is 13 records.
    assert out["sum"] - 20 - 90 == 27 and out["suppressed_cells"] == 1
    assert out["values_clipped_to"] == [0, 3]


def test_a_dominated_groups_sum_is_withheld_and_the_total_with_it() -> None:
    """nk and p% on each register group (server side, before the protocol): a dominated
    category's marker holds its identifiers; the total's holds all of them when the part
    the total less the shown categories would be (dominated categories and the rest) is
    dominated, or the whole register is; an undominated group's marker is empty."""
    ints = np.array([6000, 120, 80, 90, 110, 100, 95, 85, 105, 115, 70, 60, 75, 65])
    d4 = np.arange(len(ints)) < 5
    whole = np.ones(len(ints), dtype=bool)
    markers = withheld_markers([("", whole), ("cat.0.", ~d4), ("cat.1.", d4)], ints)
    assert not markers["cat.0."].any() and markers["cat.1."].tolist() == d4.tolist()
    assert markers[""].all()
    # D4 unlisted: it is the rest, dominated, so the total goes; D1's sum stays.
    markers = withheld_markers([("", whole), ("cat.0.", ~d4)], ints)
    assert not markers["cat.0."].any() and markers[""].all()
    # The whole register dominated: every identifier.
    markers = withheld_markers([("", whole)], np.where(d4, ints, 1))
    assert markers[""].all()
    # No large value: nothing withheld.
    markers = withheld_markers([("", whole), ("cat.0.", ~d4)], np.where(d4, 100, ints))
    assert not markers["cat.0."].any() and not markers[""].any()
    assert not dominated(np.array([], dtype=np.int64))

    spec = PSISpec("credit_code", "district", ("D1", "D4"), "employees", 1)
    cards = {"all": 30, "cat.0": 20, "cat.1": 10, "bit.0": 9, "cat.0.bit.0": 5,
             "cat.1.bit.0": 4, "withheld": 30, "cat.0.withheld": 0, "cat.1.withheld": 10}
    out = release(spec, cards, 10)
    assert (out["intersection"], out["sum"]) == (30, None)
    assert [(c["count"], c["sum"]) for c in out["categories"]] == [(20, 5), (10, None)]
