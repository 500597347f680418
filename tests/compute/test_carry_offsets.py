"""Carry offsets (issue 15, item 1 residue): pairwise zero-sum offsets added to every value
before its limb split, so the requester's limb sums depend on the total alone.

compute/masking.py ``total_offset`` derives them, compute/layout.py ``pack`` and ``carry``
apply them, ``unpack`` removes them (the total's residue modulo the limbs' modulus).
"""

from __future__ import annotations

import hashlib
import random
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from compute.errors import InvalidInput, LayoutMismatch
from compute.layout import (
    COUNT_LIMBS,
    COUNT_MODULUS,
    FRAC_BITS,
    LIMB_BITS,
    LIMBS,
    MAX_COUNT,
    MAX_REAL,
    REAL_MODULUS,
    build_layout,
    carry,
    centred,
    from_int_limbs,
    int_limbs,
    pack,
    unpack,
)
from compute.masking import (
    MASK_MODULUS,
    MAX_PROVIDERS,
    OFFSET_INFO,
    SEED_INFO,
    MaskSession,
    announce,
    canonical,
    local_sessions,
    new_mask_key,
    reduce,
    total_mask,
    total_offset,
    verify_announcements,
)
from compute.spec import parse_spec
from tests.compute.conftest import SCHEMA

JOB = "jnt-carry"
AGENTS = {f"p{i}": Ed25519PrivateKey.generate() for i in range(4)}
HALF = 1 << (LIMB_BITS - 1)


def _sessions(job: str = JOB, agents: dict[str, Ed25519PrivateKey] = AGENTS
              ) -> dict[str, MaskSession]:
    return local_sessions(job, agents)[0]


def _by_hand(s: MaskSession, peer: str, digest: str, domain: bytes, n: int, bits: int
             ) -> np.ndarray[Any, Any]:
    """One pair's stream derived from first principles (X25519, HKDF-SHA256, ChaCha20):
    pins what each stream means, independently of compute/masking.py's helpers."""
    shared = s.key.private.exchange(X25519PublicKey.from_public_bytes(
        bytes.fromhex(s.peers[peer])))
    info = domain + canonical({"pair": sorted([s.provider_id, peer]), "keys": s.digest,
                               "layout": digest})
    seed = HKDF(algorithm=hashes.SHA256(), length=32,
                salt=hashlib.sha256(s.job_id.encode()).digest(), info=info).derive(shared)
    enc = Cipher(algorithms.ChaCha20(seed, b"\x00" * 16), mode=None).encryptor()
    words = np.frombuffer(enc.update(b"\x00" * (4 * n)), dtype="<u4").astype(np.int64)
    return words & ((1 << bits) - 1)


def _both(vectors: tuple[list[list[float]], list[list[float]]]) -> list[list[float]]:
    return vectors[0] + vectors[1]


def test_offsets_sum_to_zero_over_all_providers_only() -> None:
    masks = _sessions()
    n = 6000
    offsets = {p: total_offset(s, n, "layout", LIMB_BITS) for p, s in masks.items()}
    # Exactly zero (integers, not residues): every pair's digit is added once, taken once.
    assert not np.any(sum(offsets.values()))
    # Each provider's sum of +- digits stays far inside int64 and the slot arithmetic.
    assert max(int(np.abs(o).max()) for o in offsets.values()) < (len(masks) - 1) << LIMB_BITS
    # A strict subset keeps the others' offsets: almost every slot is off.
    part = sum(o for p, o in offsets.items() if p != "p3")
    assert np.count_nonzero(part) > n * 0.99
    # Fresh keys (a new job, or a retried one with new keys) give unrelated offsets.
    again = total_offset(_sessions()["p0"], n, "layout", LIMB_BITS)
    assert np.mean(again == offsets["p0"]) < 0.01


def test_offsets_are_domain_separated_from_the_slot_masks() -> None:
    masks = _sessions(agents={p: AGENTS[p] for p in ("p0", "p1")})
    s, n, digest = masks["p0"], 5000, "layout-digest"
    # The slot masks mean what they meant: HKDF info SEED_INFO, 30 bits a slot, added by
    # the provider that sorts first.
    assert np.array_equal(total_mask(s, n, digest),
                          _by_hand(s, "p1", digest, SEED_INFO, n, 30) % MASK_MODULUS)
    # The offsets come from the same agreement under their own HKDF info, 20 bits a slot.
    offsets = total_offset(s, n, digest, LIMB_BITS)
    assert np.array_equal(offsets, _by_hand(s, "p1", digest, OFFSET_INFO, n, LIMB_BITS))
    assert OFFSET_INFO != SEED_INFO
    # Neither stream is the other (nor its low bits): independent outputs.
    low = total_mask(s, n, digest) & ((1 << LIMB_BITS) - 1)
    assert np.mean(low == offsets) < 0.01
    rho = np.corrcoef(low, offsets)[0, 1]
    assert abs(rho) < 0.1
    # Bound to the layout like the masks.
    assert np.mean(total_offset(s, n, "other", LIMB_BITS) == offsets) < 0.01


@pytest.mark.parametrize(("width", "modulus"), [(COUNT_LIMBS, COUNT_MODULUS),
                                                (LIMBS, REAL_MODULUS)])
def test_carry_splits_the_residue_into_balanced_limbs(width: int, modulus: int) -> None:
    rng, draw = np.random.default_rng(15), random.Random(15)
    # Every value a submission may hold (a noised count down to -MAX_COUNT).
    top = MAX_COUNT if width == COUNT_LIMBS else int(MAX_REAL) << FRAC_BITS
    values = [0, 1, -1, top, -top, *(draw.randint(-top, top) for _ in range(300))]
    limbs = np.array([d for v in values for d in int_limbs(v, width)], dtype=np.int64)
    # Offset digits as total_offset gives them: sums of +- digits, up to 499 of them.
    digits = rng.integers(-(MAX_PROVIDERS - 1) << LIMB_BITS, (MAX_PROVIDERS - 1) << LIMB_BITS,
                          len(limbs), dtype=np.int64)
    out = carry(limbs + digits, width)
    assert int(out.min()) >= -HALF and int(out.max()) < HALF
    for i, v in enumerate(values):
        own = [int(x) for x in out[i * width:(i + 1) * width]]
        offset = from_int_limbs([int(x) for x in digits[i * width:(i + 1) * width]])
        # The balanced digits of W = V + O modulo M: exactly what splitting W gives.
        assert (from_int_limbs(own) - v - offset) % modulus == 0


@pytest.mark.parametrize(("width", "modulus", "top"), [
    (COUNT_LIMBS, COUNT_MODULUS, MAX_COUNT), (LIMBS, REAL_MODULUS, int(MAX_REAL) << FRAC_BITS)])
def test_totals_are_exact_up_to_the_provider_bound(width: int, modulus: int, top: int) -> None:
    """MAX_PROVIDERS submissions at the per-submission bound, up and down: the limb sums fit
    the unmasking range and the residue of the recombined sum is the total. One provider
    more than 511 at the top would wrap: why MAX_PROVIDERS is below 512."""
    rng = np.random.default_rng(500)
    for sign in (1, -1):
        n = MAX_PROVIDERS
        # Zero-sum offset digits (any integers: carry() normalises them).
        offs = rng.integers(-(1 << 28), 1 << 28, (n, width), dtype=np.int64)
        offs[-1] = -offs[:-1].sum(axis=0)
        own = [carry(np.array(int_limbs(sign * top, width), dtype=np.int64) + offs[p], width)
               for p in range(n)]
        limb_sums = np.sum(own, axis=0)
        assert int(np.abs(limb_sums).max()) < MASK_MODULUS // 2
        assert [reduce(int(x)) for x in limb_sums] == [int(x) for x in limb_sums]
        total = centred(from_int_limbs([int(x) for x in limb_sums]), modulus)
        assert total == sign * n * top
    assert centred(512 * top, modulus) != 512 * top


def test_pack_with_offsets_round_trips_through_unpack() -> None:
    """Three providers pack with their offsets; the plain sum of their vectors (what the
    masked ciphertexts add up to, masks removed) unpacks to the exact pooled sums."""
    spec = parse_spec({"statistics": ["count", "sum"], "columns": ["cost"]}, SCHEMA)
    layout = build_layout(spec)
    n_slots = layout.n_slots("count") + layout.n_slots("real")
    masks = _sessions(agents={p: AGENTS[p] for p in ("p0", "p1", "p2")})
    values = {"p0": (600_000, 0.75), "p1": (600_000, -1e15), "p2": (3, 2.0**-40)}
    got: list[tuple[list[list[float]], list[list[float]]]] = []
    for pid, (n, x) in values.items():
        agg = {"version": 1, "counts": {"rows": [n], "disclosure.suppressed": [0],
                                        "col.cost.n": [n], "col.cost.missing": [0]},
               "reals": {"col.cost.s1": [x]}}
        cv, rv = pack(layout, agg, offsets=total_offset(masks[pid], n_slots, layout.digest,
                                                         LIMB_BITS))
        assert all(-HALF <= d < HALF for v in cv + rv for d in v[1:])
        got.append((cv, rv))
        with pytest.raises(LayoutMismatch, match="carry offsets"):
            pack(layout, agg, offsets=np.zeros(n_slots - 1, dtype=np.int64))
    total_c = np.sum([np.array(cv) for cv, _ in got], axis=0).tolist()
    total_r = np.sum([np.array(rv) for _, rv in got], axis=0).tolist()
    sums = unpack(layout, total_c, total_r, 3)
    assert sums.counts["col.cost.n"] == [1_200_003]
    assert sums.reals["col.cost.s1"] == [Fraction(3, 4) - 10**15 + Fraction(1, 1 << 40)]


def test_limb_sums_depend_on_the_total_alone() -> None:
    """Without encryption, many jobs: the limb sums of two splits of one total (their own
    digits wrap differently) have the same distribution, where the plain limb sums differ
    every time. Not uniform: slot k is the total's digit plus 2^20 times a small random
    carry count (the offset digits' carries), whose law depends on the total and the
    number of providers only. Checked per slot (two-sample Kolmogorov-Smirnov) and by the
    attack that names the split."""
    spec = parse_spec({"statistics": ["count", "sum"], "columns": ["cost"]}, SCHEMA)
    layout = build_layout(spec)
    n_slots = layout.n_slots("count") + layout.n_slots("real")
    agents = {p: AGENTS[p] for p in ("p0", "p1", "p2")}
    splits = {"A": ([600_000, 600_000, 100], [0.75, 0.75, 0.5]),
              "B": ([300_000, 300_000, 600_100], [1.25, 0.25, 0.5])}
    trials = 300
    seen: dict[str, list[list[float]]] = {"A": [], "B": []}
    plain: dict[str, list[float]] = {}
    for split, (ns, xs) in splits.items():
        aggs = {f"p{i}": {"version": 1, "counts": {"rows": [n], "disclosure.suppressed": [0],
                                                   "col.cost.n": [n], "col.cost.missing": [0]},
                          "reals": {"col.cost.s1": [x]}} for i, (n, x) in enumerate(zip(
                              ns, xs, strict=True))}
        plain[split] = np.sum([[d for v in _both(pack(layout, a)) for d in v[1:]]
                               for a in aggs.values()], axis=0).tolist()
        for t in range(trials):
            masks = _sessions(f"{JOB}-{split}-{t}", agents)
            vecs = [pack(layout, a, offsets=total_offset(masks[p], n_slots, layout.digest,
                                                         LIMB_BITS)) for p, a in aggs.items()]
            seen[split].append(np.sum([[d for v in _both(cr) for d in v[1:]]
                                       for cr in vecs], axis=0).tolist())
    assert plain["A"] != plain["B"]
    a, b = np.array(seen["A"]), np.array(seen["B"])
    # alpha = 1e-5 a slot (c = sqrt(-ln(alpha / 2) / 2) = 2.47): 14 slots, so a false alarm
    # once in 7,000 runs.
    critical = 2.47 * np.sqrt(2 / trials)
    for k in range(n_slots):
        grid = np.union1d(a[:, k], b[:, k])
        cdf_a = np.searchsorted(np.sort(a[:, k]), grid, side="right") / trials
        cdf_b = np.searchsorted(np.sort(b[:, k]), grid, side="right") / trials
        assert float(np.max(np.abs(cdf_a - cdf_b))) < critical, f"slot {k}"
    # The old attack (name the split whose plain limb sums lie nearest) is a coin toss:
    # right 50 % in expectation, here within 4.4 standard deviations (0.4 to 0.6 of 600).
    def nearest(sums: np.ndarray[Any, Any]) -> str:
        return min(plain, key=lambda k: float(np.abs(sums - np.array(plain[k])).sum()))

    right = sum(nearest(x) == "A" for x in a) + sum(nearest(x) == "B" for x in b)
    assert 0.4 < right / (2 * trials) < 0.6


def test_more_providers_than_the_bound_are_refused() -> None:
    spec = parse_spec({"statistics": ["count"], "columns": ["cost"]}, SCHEMA)
    layout = build_layout(spec)
    # The requester's decoder refuses an aggregate claiming more providers than decode
    # exactly (the check slot would say the same; this names why).
    with pytest.raises(InvalidInput, match=f"at most {MAX_PROVIDERS}"):
        unpack(layout, [], [], MAX_PROVIDERS + 1)
    # The controller's combine (and every agent) refuses a key set beyond the bound.
    agents = {f"p{i}": Ed25519PrivateKey.generate() for i in range(MAX_PROVIDERS + 1)}
    anns = [announce(new_mask_key(), job_id=JOB, provider_id=p, signing_key=k)
            for p, k in agents.items()]
    pubs = {p: k.public_key() for p, k in agents.items()}
    with pytest.raises(InvalidInput, match=f"at most {MAX_PROVIDERS} providers"):
        verify_announcements(anns, JOB, pubs)
    assert verify_announcements(anns[:MAX_PROVIDERS], JOB, pubs)
