"""Which subtrees RFC 9162 §2.1 proofs name, as leaf ranges [lo, hi).

Shared by the in-memory prover (``ledger.merkle``) and the stored-tree prover
(``ledger.log``), so both emit byte-identical proofs. Standard library only.
"""

from __future__ import annotations


def split_point(n: int) -> int:
    """The k of RFC 9162 §2.1.1: the largest power of two strictly below n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Ranges whose MTH form PATH(index, D[0:size]) of RFC 9162 §2.1.3.1, in proof order."""
    out: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = split_point(hi - lo)
        if index < lo + k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
    out.reverse()
    return out


def consistency_ranges(old: int, new: int) -> list[tuple[int, int]]:
    """Ranges whose MTH form PROOF(old, D[0:new]) of RFC 9162 §2.1.4.1, in proof order."""
    if old in (0, new):
        return []
    out: list[tuple[int, int]] = []
    lo, hi, m, complete = 0, new, old, True
    while m != hi - lo:
        k = split_point(hi - lo)
        if m <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
            m -= k
            complete = False
    if not complete:
        out.append((lo, hi))
    out.reverse()
    return out


def perfect_subtrees(lo: int, hi: int) -> list[tuple[int, int]]:
    """Split an MTH range into aligned perfect subtrees, as (level, index at that level).

    Left to right; folding their hashes right to left gives MTH(D[lo:hi]) because every
    range a proof or root names starts at a multiple of its largest left subtree.
    """
    out: list[tuple[int, int]] = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        while lo & ((1 << level) - 1):
            level -= 1
        out.append((level, lo >> level))
        lo += 1 << level
    return out
