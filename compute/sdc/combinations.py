"""Differencing by combination: a new cell near the union or difference of two released ones.

The pairwise audit (:func:`compute.sdc.audit.near_duplicates`) compares a new cell with
each released population alone. An analyst can also go round it in two steps: with B
and C released (two diagnoses), a cell over "B or C, except one person" differs from
each by hundreds of records, yet sum(B) + sum(C) − sum(A') is that person's value; with
A and B ⊂ A released, a cell over "A but not B, except one person" gives it as
sum(A) − sum(B) − sum(A'). Here a new cell X is compared with every P_i + P_j and
P_i − P_j of two released populations: when the (multiset) difference has at least one
but fewer than k records, X is a difference (rule ``differencing``). Sums of sketches are
sketches of multisets: if B and C overlap, X = B ∪ C is flagged when the overlap is under
k records, since sum(B) + sum(C) − sum(X) is then the sum over that overlap.

Search, without trying every pair: let D = X − P_i ∓ P_j have d < k records. Each record
lies in one bucket of the sketch's first third, so at least ``third − d`` of those
buckets are untouched by D, and in each of them X − P_i equals ±P_j exactly (wrapping
identity sums). So every released population is indexed by (bucket, identity sum) for
its non-empty buckets of the first third; for each new cell and each P_i, the buckets of
T = X − P_i are looked up (first in a bitmap, then exactly), and each pair found is
screened by record counts and decoded as in the pairwise audit (a difference that
screens small and does not decode counts as small: fail closed). Each pair is looked
up from both sides (for P_a − P_b also by X + P_b against P_a), so it is missed only
when D touches every non-empty first-third bucket of both populations: two released
populations, 2k records or more, would have to occupy at most k − 1 of the ``third``
buckets, and the few records of D land in exactly those; with keyed identities the
analyst can neither arrange nor see that.

Cost: new × released × ``third`` lookups (vectorised), so quadratic in the number of
populations; combinations of three or more populations are not searched
(docs/threat-model.md says what that leaves).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from compute.sdc.audit import HASHES, Mask, Sketches, _peel, near_duplicates

_BITS = 20  # the smallest bitmap; its false matches are resolved exactly
_SALT = np.uint64(0x5851F42D4C957F2D)
#: New cells per vectorised block (bounds memory: block × released × third words).
_BLOCK_WORDS = 1 << 22


def _bucket_salts(third: int) -> np.ndarray[Any, np.dtype[np.uint64]]:
    with np.errstate(over="ignore"):
        return (np.arange(1, third + 1, dtype=np.uint64) * _SALT) | np.uint64(1)


def near_combinations(new: Sketches, prior: Sketches, k: int) -> Mask:
    """For each new cell: is it within 1 to k-1 records of P_i + P_j or P_i - P_j for
    two distinct released populations?"""
    hit = np.zeros(len(new), dtype=bool)
    m = len(prior)
    if m < 2 or not len(new) or k <= 1:
        return hit
    slots = new.slots
    third = slots // HASHES
    salts = _bucket_salts(third)
    first = prior.ids[:, :third]
    with np.errstate(over="ignore"):
        keys = first * salts[None, :]
    present = first != 0
    flat = keys[present]
    owner = np.nonzero(present)[0]
    order = np.argsort(flat, kind="stable")
    sorted_keys, sorted_owner = flat[order], owner[order]
    # About 64 bits per indexed bucket: few false matches, and small enough for a cache.
    bits = max(_BITS, int(len(flat) * 64).bit_length())
    shift = np.uint64(64 - bits)
    bitmap = np.zeros(1 << bits, dtype=bool)
    bitmap[sorted_keys >> shift] = True
    sizes = np.sort(prior.n)
    block = max(1, _BLOCK_WORDS // max(1, m * third))
    for start in range(0, len(new), block):
        stop = min(len(new), start + block)
        with np.errstate(over="ignore"):
            x = new.ids[start:stop, :third] * salts[None, :]
        # Three probes, each looking up P_j by a bucket of: X - P_i (X near P_i + P_j),
        # P_i - X (X near P_i - P_j) and X + P_i (X near P_j - P_i). The third finds a
        # difference through the larger population's buckets too, so a difference is
        # missed only if D covers the non-empty buckets of both.
        for probe_sign, x_sign in ((1, 1), (-1, 1), (1, -1)):
            # Pairs (X, P_i) for which some P_j has a fitting record count; only those
            # are looked up.
            want = probe_sign * (new.n[start:stop, None] - x_sign * prior.n[None, :])
            fits = (np.searchsorted(sizes, want + k - 1, side="right")
                    > np.searchsorted(sizes, want - (k - 1), side="left"))
            c_pair, i_pair = np.nonzero(fits)
            if not c_pair.size:
                continue
            with np.errstate(over="ignore"):
                # The key is linear: key(X - P_i) = key(X) - key(P_i), and so on.
                probe = x[c_pair] - keys[i_pair] if x_sign == 1 else x[c_pair] + keys[i_pair]
                if probe_sign == -1:
                    probe = np.uint64(0) - probe
            maybe = bitmap[probe >> shift]
            maybe &= probe != 0
            p_at, b_at = np.nonzero(maybe)
            if not p_at.size:
                continue
            c_at, i_at = c_pair[p_at], i_pair[p_at]
            wanted = probe[p_at, b_at]
            lo = np.searchsorted(sorted_keys, wanted, side="left")
            hi = np.searchsorted(sorted_keys, wanted, side="right")
            found = hi > lo  # the bitmap's false matches drop out here
            c_at, i_at, lo, hi = c_at[found], i_at[found], lo[found], hi[found]
            # Every j holding that (bucket, identity sum), then the record-count screen,
            # all vectorised: most matches are exact sub-structure (a cell asked again,
            # a cell inside a margin) that the counts rule out.
            reps = hi - lo
            first_at = np.repeat(np.cumsum(reps) - reps, reps)
            j_at = sorted_owner[np.repeat(lo, reps) + np.arange(int(reps.sum())) - first_at]
            c_at, i_at = np.repeat(c_at, reps) + start, np.repeat(i_at, reps)
            # As X - P_a - sign * P_b: (i, j, +1), (i, j, -1), or (j, i, -1).
            a_at, b_at = (i_at, j_at) if x_sign == 1 else (j_at, i_at)
            sign = 1 if (probe_sign, x_sign) == (1, 1) else -1
            gap = new.n[c_at] - prior.n[a_at] - sign * prior.n[b_at]
            keep = (np.abs(gap) <= k - 1) & (j_at != i_at) & ~hit[c_at]
            triples = np.unique(np.stack([c_at[keep], a_at[keep], b_at[keep]]), axis=1)
            for cell, pa, pb in triples.T:
                if not hit[cell] and _near(new, int(cell), prior, int(pa), int(pb), sign,
                                           k, slots):
                    hit[cell] = True
    return hit


def _near(new: Sketches, cell: int, prior: Sketches, i: int, j: int, sign: int, k: int,
          slots: int) -> bool:
    """Does X - P_i - sign * P_j hold 1 to k-1 records (or screen small and not decode)?"""
    gap = int(new.n[cell]) - int(prior.n[i]) - sign * int(prior.n[j])
    if abs(gap) > k - 1 or int(new.n[cell]) == 0:
        return False
    with np.errstate(over="ignore"):
        dc = (new.count[cell].astype(np.int64) - prior.count[i].astype(np.int64)
              - sign * prior.count[j].astype(np.int64))
        pj = prior.ids[j] if sign == 1 else np.uint64(0) - prior.ids[j]
        di = new.ids[cell] - prior.ids[i] - pj
        dk = (new.check[cell].astype(np.int64) - prior.check[i].astype(np.int64)
              - sign * prior.check[j].astype(np.int64)) % (1 << 32)
    busy = int(((dc != 0) | (di != 0) | (dk != 0)).sum())
    if busy == 0 or busy > HASHES * (k - 1):
        return False
    d = _peel(dc, di, dk, slots, k)
    return d is None or 0 < d < k


#: The most (new cell, released population) pairs the combination search takes on (a
#: couple of minutes at most on a loaded 2-core host, well inside a job's lease). Beyond
#: it the remaining cells count as differences: withheld, never released unchecked.
MAX_PAIRS = 20_000_000


def differenced(new: Sketches, prior: Sketches, k: int) -> Mask:
    """Per new cell: a difference of 1 to k-1 records from one released population, or
    from the union or difference of two (the differencing audit's rule)."""
    hit = near_duplicates(new, prior, k)
    rest = np.flatnonzero(~hit & (new.n > 0))
    if rest.size and len(prior) >= 2:
        if rest.size * len(prior) > MAX_PAIRS:
            hit[rest] = True  # fail closed: too large to search
        else:
            hit[rest] = near_combinations(new.take(rest), prior, k)
    return hit
