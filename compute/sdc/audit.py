"""Differencing audit: compact signatures of the populations behind released cells.

Two released cells whose populations differ by a few records give those records'
contribution by subtraction (a total with and without one person). Threshold and
secondary suppression look at one table at a time; this module compares a new cell's
population with every population already released to the same requester from the same
data, and says which new cells differ from one of them by at least one but fewer than
``k`` records.

A population is kept as an invertible Bloom lookup table (Eppstein, Goodrich, Uyeda &
Varghese 2011, "What's the difference? Efficient set reconciliation without prior
context", SIGCOMM; Goodrich & Mitzenmacher 2011): ``slots`` buckets, each the record
count, the wrapping sum of the records' 64-bit identities and the wrapping sum of a
32-bit check hash of them. Each record is added to three buckets, one in each third.
The sketch is linear, so the sketch of A less the sketch of B is the sketch of the
symmetric difference, which peels (decodes) record by record while it is small: with
``slots = 4k`` buckets or more a difference of fewer than ``k`` records decodes unless a rare
collision pattern occurs, and a difference that does not decode while few buckets are
non-zero is treated as small (fail closed). Row identities are keyed hashes
(:func:`compute.sdc.identity.record_identities`) computed in the provider's domain;
nothing here ever holds a value or an identity of the data in the clear.

Pure numpy; no I/O. Sizes: ``16 × slots`` bytes per cell (1,056 bytes up to k = 16).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from compute.errors import InvalidInput
from compute.sdc.grid import encode

U64 = np.ndarray[Any, np.dtype[np.uint64]]
I64 = np.ndarray[Any, np.dtype[np.int64]]
Mask = np.ndarray[Any, np.dtype[np.bool_]]

#: Hash functions per record (one bucket in each third of the sketch).
HASHES = 3
_SALTS = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F),
          np.uint64(0x165667B19E3779F9))
_CHECK_SALT = np.uint64(0x27D4EB2F165667C5)
# Holdings: a person's own identity, and that of a set of its records (apart from rows').
_PERSON_SALT = np.uint64(0x85EBCA77C2B2AE63)
_SET_SALT = np.uint64(0xFF51AFD7ED558CCD)
KEY_CHARS = 16  # pandas' SipHash key: 16 bytes once UTF-8 encoded


def slots_for(k: int) -> int:
    """Buckets per sketch for threshold ``k``: 4k, a multiple of three, and at least 66,
    so that permits with thresholds up to 16 share one size and are compared with each
    other (sketches of different sizes cannot be subtracted)."""
    n = max(66, 4 * k)
    return n + (-n) % HASHES


def mix(x: U64) -> U64:
    """splitmix64's finalizer: a bijection on 64-bit words that spreads every bit."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64, copy=True)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return np.asarray(z ^ (z >> np.uint64(31)), dtype=np.uint64)


def row_identities(frame: pd.DataFrame, key: str) -> U64:
    """A keyed 64-bit identity per record (SipHash via pandas) from every column of the
    source as text: the identities of the ``legacy`` space, kept so that populations
    stored before typed identities can still be compared (new ones are
    :func:`compute.sdc.identity.record_identities`: a change to every row that no cell
    reads made every record new here). Identical records get distinct identities by
    their order of occurrence. Without ``key`` nobody can link an identity to a record,
    so a leaked audit store says nothing about the data."""
    if not isinstance(key, str) or len(key.encode()) != KEY_CHARS:
        raise InvalidInput("key", "length", "the audit key must be 16 ASCII characters")
    text = frame.astype(str)
    h = pd.util.hash_pandas_object(text, index=False, hash_key=key).to_numpy(np.uint64)
    occurrence = pd.Series(h).groupby(h).cumcount().to_numpy(np.uint64)
    with np.errstate(over="ignore"):
        return mix(h ^ mix(occurrence + _SALTS[0]))


def _buckets(ids: U64, slots: int) -> I64:
    """(records, 3) bucket of each record, one per third."""
    third = np.uint64(slots // HASHES)
    with np.errstate(over="ignore"):
        return np.stack([(mix(ids ^ s) % third + np.uint64(j) * third).astype(np.int64)
                         for j, s in enumerate(_SALTS)], axis=1)


def _check(ids: U64) -> np.ndarray[Any, np.dtype[np.uint32]]:
    return (mix(ids ^ _CHECK_SALT) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def _wrapping_sum(index: I64, values: U64, length: int) -> U64:
    """Per-index sum modulo 2^64, exactly: 16-bit limbs summed by bincount in float64
    (exact below 2^53, i.e. for up to 2^37 records), then recombined with wrap-around."""
    out = np.zeros(length, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for shift in (0, 16, 32, 48):
            limb = ((values >> np.uint64(shift)) & np.uint64(0xFFFF)).astype(np.float64)
            part = np.bincount(index, weights=limb, minlength=length).astype(np.uint64)
            out += part << np.uint64(shift)
    return out


@dataclass(frozen=True, eq=False)
class Sketches:
    """One population sketch per cell: ``n`` records, ``count``/``ids``/``check`` per slot."""

    n: I64
    count: np.ndarray[Any, np.dtype[np.int32]]
    ids: U64
    check: np.ndarray[Any, np.dtype[np.uint32]]

    @property
    def slots(self) -> int:
        return int(self.count.shape[1])

    def __len__(self) -> int:
        return int(self.n.shape[0])

    def take(self, which: Mask | I64) -> Sketches:
        return Sketches(self.n[which], self.count[which], self.ids[which], self.check[which])

    @staticmethod
    def empty(slots: int) -> Sketches:
        return Sketches(np.zeros(0, np.int64), np.zeros((0, slots), np.int32),
                        np.zeros((0, slots), np.uint64), np.zeros((0, slots), np.uint32))

    @staticmethod
    def concat(parts: Sequence[Sketches], slots: int) -> Sketches:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Sketches.empty(slots)
        return Sketches(np.concatenate([p.n for p in parts]),
                        np.concatenate([p.count for p in parts]),
                        np.concatenate([p.ids for p in parts]),
                        np.concatenate([p.check for p in parts]))

    def to_bytes(self, i: int) -> bytes:
        """Cell ``i`` as stored: counts, identity sums, checks (little-endian)."""
        return b"".join([self.count[i].astype("<i4").tobytes(),
                         self.ids[i].astype("<u8").tobytes(),
                         self.check[i].astype("<u4").tobytes()])

    def digest(self, i: int) -> str:
        """Cell ``i``'s digest as the store keys it (equal digests: equal populations)."""
        return hashlib.sha256(self.to_bytes(i)).hexdigest()

    @staticmethod
    def from_rows(rows: Sequence[tuple[int, bytes]], slots: int) -> Sketches:
        if not rows:
            return Sketches.empty(slots)
        raw = np.frombuffer(b"".join(blob for _, blob in rows), dtype=np.uint8)
        raw = raw.reshape(len(rows), 16 * slots)
        return Sketches(np.array([n for n, _ in rows], dtype=np.int64),
                        raw[:, :4 * slots].copy().view("<i4").astype(np.int32),
                        raw[:, 4 * slots:12 * slots].copy().view("<u8").astype(np.uint64),
                        raw[:, 12 * slots:].copy().view("<u4").astype(np.uint32))


def _pairs(cells: I64, ids: U64) -> tuple[I64, I64, U64]:
    """Each (cell, identity) pair once, by hashing (no sort of the pairs): each entry's
    pair, and each pair's cell and identity."""
    codes, uniques = pd.factorize(ids)
    span = max(1, len(uniques))
    which, keys = pd.factorize(cells.astype(np.int64) * span + codes)
    keys = np.asarray(keys, dtype=np.int64)
    return (np.asarray(which, dtype=np.int64), keys // span,
            np.ascontiguousarray(np.asarray(uniques, dtype=np.uint64)[keys % span]))


def _distinct(cells: I64, ids: U64) -> tuple[I64, U64]:
    """Each (cell, identity) pair once: a person's records count once per population."""
    if not len(ids):
        return cells, ids
    _, cell, ident = _pairs(cells, ids)
    return cell, ident


def sketch_cells(cells: I64, ids: U64, size: int, slots: int,
                 distinct: bool = False) -> Sketches:
    """Sketches of ``size`` cells, each record (``ids[i]``) in cell ``cells[i]``.
    ``distinct``: the identities are persons' (several records may share one), and each
    is added to a cell once however many of its records the cell holds."""
    if distinct:
        cells, ids = _distinct(cells, ids)
    buckets = _buckets(ids, slots)
    flat = (cells[:, None] * slots + buckets).ravel()
    count = np.bincount(flat, minlength=size * slots).astype(np.int64)
    idsum = _wrapping_sum(flat, np.repeat(ids, HASHES), size * slots)
    chk = _wrapping_sum(flat, np.repeat(_check(ids).astype(np.uint64), HASHES),
                        size * slots)
    return Sketches(np.bincount(cells, minlength=size).astype(np.int64),
                    count.reshape(size, slots).astype(np.int32),
                    idsum.reshape(size, slots),
                    (chk & np.uint64(0xFFFFFFFF)).astype(np.uint32).reshape(size, slots))


def _with_margins(a: np.ndarray[Any, Any], ndim: int) -> np.ndarray[Any, Any]:
    """Totals appended along each of the first ``ndim`` axes (sums wrap for uint64, as
    the sketches' do): the sketch of a union of disjoint cells is the sum of theirs."""
    with np.errstate(over="ignore"):
        for axis in range(ndim):
            a = np.concatenate([a, a.sum(axis=axis, keepdims=True, dtype=a.dtype)],
                               axis=axis)
    return a


def holding_slots(k: int) -> int:
    """Buckets per holdings sketch (:func:`holding_sketches`) for threshold ``k``: room
    to decode a difference of ``2k - 2`` identities, shared by thresholds up to 16."""
    return slots_for(holding_limit(max(k, 16)))


def holding_limit(k: int) -> int:
    """The differencing threshold on holdings sketches: two identities per person, so
    fewer than ``k`` persons whose records differ is a difference below ``2k - 1``."""
    return 2 * k - 1


def holding_sketches(cells: I64, persons: U64, records: U64, size: int,
                     slots: int) -> Sketches:
    """Sketches of ``size`` cells' holdings, record ``i`` (``records[i]``, of person
    ``persons[i]``) in cell ``cells[i]``: per person of a cell two identities, the
    person's own and that of the set of its records the cell holds. Two cells' holdings
    therefore differ by exactly two identities per person whose records in them differ
    (a person added or removed, or one of its records added, removed or edited) and by
    none for everyone else: where a person population stays the same while one record
    changes, the holdings still count that person."""
    if not len(persons):
        return sketch_cells(cells, persons, size, slots)
    which, cell, person = _pairs(cells, persons)
    # A set's identity: the wrapping sum of its members' mixed identities (a record is
    # in a cell once), mixed again with the person's, so no two persons' sets coincide.
    held = _wrapping_sum(which, mix(records ^ _SET_SALT), len(cell))
    with np.errstate(over="ignore"):
        sets = mix(person ^ mix(held + _SET_SALT))
    return sketch_cells(np.concatenate([cell, cell]),
                        np.concatenate([mix(person ^ _PERSON_SALT), sets]), size, slots)


def _margined_cells(codes: list[I64], shape: tuple[int, ...], rows: int
                    ) -> tuple[I64, I64]:
    """Each record's cell in every pattern of margins (its interior cell, and each
    total it is in): the cells, and which record each entry is."""
    d = len(shape)
    full = tuple(s + 1 for s in shape)
    parts = []
    for pattern in range(1 << d):  # which axes are totalled (their index is the last)
        cell = np.zeros(rows, dtype=np.int64)
        for axis in range(d):
            code = (np.full(rows, shape[axis], dtype=np.int64) if pattern >> axis & 1
                    else codes[axis])
            cell += code * int(np.prod(full[axis + 1:], dtype=np.int64))
        parts.append(cell)
    return np.concatenate(parts), np.tile(np.arange(rows, dtype=np.int64), 1 << d)


def _margined_sketches(codes: list[I64], shape: tuple[int, ...], ids: U64,
                       slots: int, records: U64 | None = None) -> Sketches:
    """Every cell of the margined table sketched directly from distinct persons: a
    margin's population is the union of its interior cells', and a person in two of
    them must count once (adding their sketches would count it twice). ``records``:
    the persons' holdings instead (:func:`holding_sketches`)."""
    cells, which = _margined_cells(codes, shape, len(ids))
    size = int(np.prod([s + 1 for s in shape], dtype=np.int64))
    if records is not None:
        return holding_sketches(cells, ids[which], records[which], size, slots)
    return sketch_cells(cells, ids[which], size, slots, distinct=True)


def table_sketches(frame: pd.DataFrame, dims: Sequence[str], ids: U64, slots: int,
                   value: str | None = None, complete: Sequence[str] = (),
                   distinct: bool = False, records: U64 | None = None) -> Sketches:
    """Per cell of the full (margined) table over ``dims``, in the engine's cell order
    (C order of the margined array, as :class:`~compute.sdc.CheckedTable` lists them):
    the records it counts. ``value``: only records where it is present (a magnitude
    table); ``complete``: only records with every listed column present (a model).
    The interior is sketched from the records, the margins by adding sketches.
    ``distinct``: ``ids`` are persons' identities, each counted once per cell (margins
    included: they are sketched from the persons, not added); with ``records`` (each
    record's own identity) too, the persons' holdings (:func:`holding_sketches`)."""
    grid = encode(frame, tuple(dims), None)
    rows = grid.present() if dims else np.ones(len(frame), dtype=bool)
    for col in ([value] if value is not None else []) + list(complete):
        rows &= frame[col].notna().to_numpy()
    shape = grid.shape
    if distinct or records is not None:
        return _margined_sketches([c[rows].astype(np.int64) for c in grid.codes],
                                  tuple(int(s) for s in shape), ids[rows], slots,
                                  None if records is None else records[rows])
    cells = np.zeros(int(rows.sum()), dtype=np.int64)
    for axis, codes in enumerate(grid.codes):
        cells += codes[rows] * int(np.prod(shape[axis + 1:], dtype=np.int64))
    inner = sketch_cells(cells, ids[rows], int(np.prod(shape, dtype=np.int64)), slots)
    d = len(shape)
    n = _with_margins(inner.n.reshape(shape), d).ravel()
    count = _with_margins(inner.count.astype(np.int64).reshape(*shape, slots), d)
    idsum = _with_margins(inner.ids.reshape(*shape, slots), d)
    chk = _with_margins(inner.check.astype(np.uint64).reshape(*shape, slots), d)
    size = int(n.shape[0])
    return Sketches(n, count.reshape(size, slots).astype(np.int32),
                    idsum.reshape(size, slots),
                    (chk.reshape(size, slots) & np.uint64(0xFFFFFFFF)).astype(np.uint32))


def _peel(count: I64, idsum: U64, chk: I64, slots: int, limit: int) -> int | None:
    """Records in a difference sketch (at most ``limit``), or None if it does not decode."""
    count, idsum, chk = count.copy(), idsum.copy(), chk.copy()
    found = 0
    with np.errstate(over="ignore"):
        while True:
            pure = np.flatnonzero(np.abs(count) == 1)
            progressed = False
            for s in pure:
                if abs(int(count[s])) != 1:
                    continue
                sign = int(count[s])
                x = idsum[s] if sign == 1 else np.uint64(0) - idsum[s]
                xs = np.array([x], dtype=np.uint64)
                c = int(_check(xs)[0])
                if (int(chk[s]) * sign) % (1 << 32) != c:
                    continue
                where = _buckets(xs, slots)[0]
                if s not in where:
                    continue
                count[where] -= sign
                idsum[where] -= xs[0] if sign == 1 else np.uint64(0) - xs[0]
                chk[where] = (chk[where] - sign * c) % (1 << 32)
                found += 1
                progressed = True
                if found >= limit:
                    return found
            if not progressed:
                break
    done = not count.any() and not idsum.any() and not chk.any()
    return found if done else None


def near_duplicates(new: Sketches, prior: Sketches, k: int) -> Mask:
    """For each new cell: does some prior population differ from it by 1 to k-1 records?

    Screened by record counts (the difference is at least the gap between them), then
    by the first third of the buckets (each differing record lands in exactly one of
    them, so k or more differing buckets there prove k or more records: exact, no
    population is passed over wrongly), then by all buckets (each record touches at most
    three), then decoded; a difference that screens small but does not decode counts as
    small (fail closed)."""
    hit = np.zeros(len(new), dtype=bool)
    if not len(prior) or not len(new) or k <= 1:
        return hit
    slots = new.slots
    third = slots // HASHES
    order = np.argsort(prior.n, kind="stable")
    pn = prior.n[order]
    p_ids = prior.ids[order]
    lows = np.searchsorted(pn, new.n - (k - 1), side="left")
    highs = np.searchsorted(pn, new.n + (k - 1), side="right")
    for i in np.flatnonzero((new.n > 0) & (highs > lows)):
        lo, hi = int(lows[i]), int(highs[i])
        first = (p_ids[lo:hi, :third] != new.ids[i, :third]).sum(axis=1)
        near = order[lo + np.flatnonzero(first < k)]
        if not near.size:
            continue
        with np.errstate(over="ignore"):
            dc = new.count[i].astype(np.int64)[None, :] - prior.count[near].astype(np.int64)
            di = new.ids[i][None, :] - prior.ids[near]
            dk = (new.check[i].astype(np.int64)[None, :]
                  - prior.check[near].astype(np.int64)) % (1 << 32)
        busy = ((dc != 0) | (di != 0) | (dk != 0)).sum(axis=1)
        for j in np.flatnonzero((busy > 0) & (busy <= HASHES * (k - 1))):
            d = _peel(dc[j], di[j], dk[j], slots, k)
            if d is None or 0 < d < k:
                hit[i] = True
                break
    return hit
