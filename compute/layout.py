"""Slot layout: which sufficient statistic lives in which CKKS slot, and exact fixed-point limbs.

Two slot families (CKKS encoding error grows with the largest slot of a ciphertext,
measured in docs/joint-statistics.md; since the masks, every data slot of either family holds
a digit masked into [-2^29, 2^29), so the families share ciphertexts: the count slots then
the real slots, one stream, compute.protocol._one_stream):

* **count** ciphertexts hold integer counts (<= 2^30 per submission) as ``COUNT_LIMBS``
  balanced base-2^20 digits;
* **real** ciphertexts hold every real sum as a signed fixed-point integer
  ``V = round(v * 2^40)`` split into ``LIMBS`` balanced base-2^20 digits, one per slot.

Every data slot thus holds a digit below 2^19 in magnitude, which the pairwise masks
(compute/masking.py) shift uniformly modulo 2^30. After decryption each slot is rounded to
the nearest integer (CKKS noise is ~1e-6 absolute at 2^29, far below 0.5) and reduced
modulo 2^30, which recovers the exact integer sum of the providers' digits, and
``sum(d_i * 2^(20 i))`` recombines, modulo M = 2^(20 * limbs), the exact sum of the
providers' values: the homomorphic path adds no error beyond each provider's 2^-41
quantization.

Limbs add without carries, so the limb sums alone would show how the total splits among
the providers (whose own digits wrapped). Each provider therefore offsets every value by
its share of pairwise zero-sum offsets (compute.masking.total_offset) before the split: it
encodes W = V + O modulo M, as balanced digits whose carry out of the top limb is dropped.
The requester's limb sums then depend on the total alone, not on how it splits among the
providers, and the recombined sum reduced modulo M into [-M/2, M/2) is the total exactly,
which the bound below (MAX_PROVIDERS) keeps inside.

Slot 0 of every ciphertext is a check slot holding 1.0: the aggregate's check slot must
decrypt to the number of providers, which catches ciphertexts under another key.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from compute.errors import InvalidInput, KeyMismatch, LayoutMismatch, MagnitudeOverflow
from compute.masking import MASK_BITS, MAX_PROVIDERS, reduce
from compute.spec import MAX_CIPHERTEXTS, MOMENT_STATS, NUMERIC_UNIVARIATE, JointSpec

# 2: counts as limbs, slots masked modulo 2^30; 3: carry offsets; 4: count and real slots
# share ciphertexts (compute.protocol._one_stream)
LAYOUT_VERSION = 4
SLOTS = 4096  # N/2 for N = 8192
DATA_SLOTS = SLOTS - 1  # slot 0 is the check slot
FRAC_BITS = 40  # fixed-point resolution 2^-40 ~ 9.1e-13 per sum
LIMB_BITS = 20
LIMBS = 6  # 120 bits of signed fixed point
COUNT_LIMBS = 2  # counts <= 2^30 need 31 bits; two balanced digits hold 40
MAX_REAL = 2.0**70  # |sum| bound; 2^110 fixed-point fits 6 balanced limbs with room
MAX_COUNT = 2**30  # per submission; keeps encoding error < 1e-5 (docs: magnitude guard)
COUNT_MODULUS = 1 << (LIMB_BITS * COUNT_LIMBS)  # a count's limbs hold its residue mod 2^40
REAL_MODULUS = 1 << (LIMB_BITS * LIMBS)  # a real's limbs hold its residue mod 2^120
# The requester recovers each total from its residue, exact while -M/2 <= total < M/2:
# MAX_PROVIDERS submissions at the per-submission bounds must fit (arithmetic in masking.py).
assert MAX_PROVIDERS * MAX_COUNT < COUNT_MODULUS // 2
assert MAX_PROVIDERS * (int(MAX_REAL) << FRAC_BITS) < REAL_MODULUS // 2
CHECK_TOLERANCE = 0.01
INTEGRAL_TOLERANCE = 0.05


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # "count" | "real"
    length: int
    governor: str | None = None  # count entry whose suppression zeroes this real entry
    elementwise: bool = False  # governor cell i governs cell i (else governor[0] governs all)


@dataclass(frozen=True)
class Layout:
    entries: tuple[Entry, ...]

    def of_kind(self, kind: str) -> list[Entry]:
        return [e for e in self.entries if e.kind == kind]

    def n_values(self, kind: str) -> int:
        return sum(e.length for e in self.of_kind(kind))

    def n_slots(self, kind: str) -> int:
        return self.n_values(kind) * (LIMBS if kind == "real" else COUNT_LIMBS)

    def n_ciphertexts(self, kind: str) -> int:
        return math.ceil(self.n_slots(kind) / DATA_SLOTS)

    def slot_lengths(self, kind: str) -> list[int]:
        total = self.n_slots(kind)
        return [1 + min(DATA_SLOTS, total - i) for i in range(0, total, DATA_SLOTS)]

    @property
    def digest(self) -> str:
        body = {
            "version": LAYOUT_VERSION, "slots": SLOTS, "frac_bits": FRAC_BITS,
            "limb_bits": LIMB_BITS, "limbs": LIMBS, "count_limbs": COUNT_LIMBS,
            "mask_bits": MASK_BITS, "carry_offsets": True,
            "entries": [[e.name, e.kind, e.length] for e in self.entries],
        }
        return hashlib.sha256(canonical_json(body)).hexdigest()

    def entry(self, name: str) -> Entry:
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(name)


def canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def build_layout(spec: JointSpec) -> Layout:
    st = spec.statistics
    es: list[Entry] = [Entry("rows", "count", 1), Entry("disclosure.suppressed", "count", 1)]
    if st & (NUMERIC_UNIVARIATE | {"count"}):
        for c in spec.columns:
            es += [Entry(f"col.{c}.n", "count", 1), Entry(f"col.{c}.missing", "count", 1)]
            if st & NUMERIC_UNIVARIATE:
                es.append(Entry(f"col.{c}.s1", "real", 1, f"col.{c}.n"))
            if st & {"variance", "std"}:
                es.append(Entry(f"col.{c}.s2", "real", 1, f"col.{c}.n"))
    blocks = []
    if st & MOMENT_STATS:
        blocks.append(("mom", len(spec.columns)))
    if "ols" in st:
        blocks.append(("ols", 1 + len(spec.ols_x)))
    for name, k in blocks:
        es += [Entry(f"{name}.n", "count", 1), Entry(f"{name}.s1", "real", k, f"{name}.n"),
               Entry(f"{name}.s2", "real", k * (k + 1) // 2, f"{name}.n")]
    for c, edges in spec.bins.items():
        es += [Entry(f"hist.{c}", "count", len(edges) + 1), Entry(f"hist.{c}.missing", "count", 1)]
    if spec.contingency is not None:
        _, _, rc, cc = spec.contingency
        es += [Entry("ct", "count", (len(rc) + 1) * (len(cc) + 1)),
               Entry("ct.missing", "count", 1)]
    if spec.group_keys:
        g = spec.group_cells + 1
        es += [Entry("grp.rows", "count", g), Entry("grp.missing", "count", 1)]
        for v in spec.group_values:
            es += [Entry(f"grp.{v}.n", "count", g),
                   Entry(f"grp.{v}.s1", "real", g, f"grp.{v}.n", elementwise=True)]
            if spec.dp_epsilon is None:  # within-group variance: second moments, no DP
                es.append(Entry(f"grp.{v}.s2", "real", g, f"grp.{v}.n", elementwise=True))
    for c, (_, edges) in spec.quantiles.items():
        es += [Entry(f"q.{c}", "count", len(edges) + 1), Entry(f"q.{c}.missing", "count", 1)]
    if spec.glm is not None:
        # One IRLS round's weighted cross-products at the round's coefficients, plus the
        # deviance and log-likelihood there (compute/glm.py); all governed by glm.n.
        k = 1 + len(spec.glm.x)
        es += [Entry("glm.n", "count", 1), Entry("glm.missing", "count", 1),
               Entry("glm.xwx", "real", k * (k + 1) // 2, "glm.n"),
               Entry("glm.xwz", "real", k, "glm.n"), Entry("glm.deviance", "real", 1, "glm.n"),
               Entry("glm.loglik", "real", 1, "glm.n")]
    layout = Layout(tuple(es))
    for kind in ("count", "real"):
        if layout.n_ciphertexts(kind) > MAX_CIPHERTEXTS:
            raise InvalidInput("spec", "too_many_slots",
                               f"spec: {layout.n_slots(kind)} {kind} slots exceed "
                               f"{MAX_CIPHERTEXTS} ciphertexts of {DATA_SLOTS}")
    return layout


def to_limbs(value: float, field: str) -> list[int]:
    """Balanced base-2^20 digits of round(value * 2^40); exact (scaling by 2^k is exact)."""
    if not math.isfinite(value) or abs(value) > MAX_REAL:
        # Never the value itself: it is derived from a provider's data.
        raise MagnitudeOverflow(field, f"{field}: too large to encode exactly (beyond "
                                f"{MAX_REAL:.3g} in magnitude) or not finite. A sum of squares "
                                "overflows when values sit far from zero: give the column a "
                                "public `shift` near its typical value; a sum overflows when "
                                "values are large in themselves: rescale the column")
    return int_limbs(round(math.ldexp(value, FRAC_BITS)), LIMBS)


def int_limbs(v: int, n: int) -> list[int]:
    """Balanced base-2^20 digits of the integer v (each in [-2^19, 2^19))."""
    half, base = 1 << (LIMB_BITS - 1), 1 << LIMB_BITS
    out = []
    for _ in range(n):
        d = v & (base - 1)
        if d >= half:
            d -= base
        out.append(d)
        v = (v - d) >> LIMB_BITS
    assert v == 0
    return out


def from_int_limbs(limbs: Sequence[int]) -> int:
    return sum(d << (LIMB_BITS * i) for i, d in enumerate(limbs))


def from_limbs(limbs: Sequence[int]) -> Fraction:
    return Fraction(from_int_limbs(limbs), 1 << FRAC_BITS)


def _chunks(values: list[float]) -> list[list[float]]:
    return [[1.0, *values[i:i + DATA_SLOTS]] for i in range(0, len(values), DATA_SLOTS)]


Digits = np.ndarray[Any, np.dtype[np.int64]]


def carry(digits: Digits, width: int) -> Digits:
    """Balanced base-2^20 digits of each value's ``sum_k digits[v, k] * 2^(20 k)`` modulo
    2^(20 * width) (``digits`` flat, ``width`` digits a value): carries move up and the one
    out of the top limb, a multiple of the modulus, is dropped. Any integer digits go in
    (a value's limbs plus its offset digits); each digit out lies in [-2^19, 2^19)."""
    half, base = 1 << (LIMB_BITS - 1), 1 << LIMB_BITS
    grid = digits.reshape(-1, width)
    out = np.empty_like(grid)
    up = np.zeros(len(grid), dtype=np.int64)
    for k in range(width):
        x = grid[:, k] + up
        d = ((x + half) & (base - 1)) - half  # two's complement: & is the residue mod 2^20
        out[:, k] = d
        up = (x - d) >> LIMB_BITS  # exact: x - d is a multiple of 2^20
    return out.reshape(-1)


def pack(layout: Layout, aggregates: Mapping[str, object], *, noised: bool = False,
         offsets: Digits | None = None) -> tuple[list[list[float]], list[list[float]]]:
    """Flatten checked local aggregates into (count vectors, real-limb vectors). ``noised``
    (a DP job's aggregates, compute/dp.py): counts may be negative, down to -MAX_COUNT.

    ``offsets`` (compute.masking.total_offset over the count slots then the real slots,
    what every submission carries): each value V is encoded as W = V + O modulo M, O its
    offset digits read as one integer; the limbs are those of W's residue (:func:`carry`),
    exactly what splitting ``(V + O) mod M`` gives, so no digit of V's own split (nor its
    carries) survives. Without offsets, a value's plain limbs (the providers' truth, for
    tests)."""
    counts = _family(aggregates, "counts")
    reals = _family(aggregates, "reals")
    low = -MAX_COUNT if noised else 0
    cvals: list[int] = []
    for e in layout.of_kind("count"):
        for i, x in enumerate(_values(counts, e)):
            if not (isinstance(x, int) and not isinstance(x, bool) and low <= x <= MAX_COUNT):
                raise MagnitudeOverflow(f"{e.name}[{i}]", f"{e.name}[{i}]: a count that is not "
                                        f"an integer in [{low}, {MAX_COUNT}]")
            cvals.extend(int_limbs(x, COUNT_LIMBS))
    rvals: list[int] = []
    for e in layout.of_kind("real"):
        for i, x in enumerate(_values(reals, e)):
            if isinstance(x, bool) or not isinstance(x, int | float):
                raise LayoutMismatch(f"{e.name}[{i}] is not a number")
            rvals.extend(to_limbs(float(x), f"{e.name}[{i}]"))
    if extra := (set(counts) | set(reals)) - {e.name for e in layout.entries}:
        raise LayoutMismatch(f"aggregates carry entries outside the layout: {sorted(extra)}")
    if offsets is None:
        return _chunks([float(d) for d in cvals]), _chunks([float(d) for d in rvals])
    if len(offsets) != len(cvals) + len(rvals):
        raise LayoutMismatch("carry offsets do not match the layout's slot counts")
    cw = carry(np.asarray(cvals, dtype=np.int64) + offsets[:len(cvals)], COUNT_LIMBS)
    rw = carry(np.asarray(rvals, dtype=np.int64) + offsets[len(cvals):], LIMBS)
    return (_chunks(cw.astype(np.float64).tolist()), _chunks(rw.astype(np.float64).tolist()))


def _family(aggregates: Mapping[str, object], key: str) -> Mapping[str, Sequence[object]]:
    fam = aggregates.get(key)
    if not isinstance(fam, Mapping):
        raise LayoutMismatch(f"aggregates lack the {key!r} family")
    return fam


def _values(fam: Mapping[str, Sequence[object]], e: Entry) -> Sequence[object]:
    vals = fam.get(e.name)
    if not isinstance(vals, list) or len(vals) != e.length:
        raise LayoutMismatch(f"entry {e.name} must be a list of {e.length} values")
    return vals


@dataclass(frozen=True)
class Sums:
    """Exact pooled sufficient statistics recovered from an aggregate."""

    n_providers: int
    counts: dict[str, list[int]]
    reals: dict[str, list[Fraction]]


def _integral(slots: Sequence[float], n_providers: int, where: str) -> list[int]:
    if abs(slots[0] - n_providers) > CHECK_TOLERANCE:
        raise KeyMismatch(f"{where}: the check slot does not decrypt to the number of "
                          "providers: a ciphertext is under another key or corrupted")
    out = []
    for x in slots[1:]:
        r = round(x)
        if abs(x - r) > INTEGRAL_TOLERANCE:
            raise KeyMismatch(f"{where}: a slot is not near an integer: wrong key, "
                              "corrupted ciphertext or magnitude overflow")
        out.append(reduce(int(r)))
    return out


def centred(value: int, modulus: int) -> int:
    """The representative of ``value`` modulo ``modulus`` in [-modulus/2, modulus/2)."""
    return (value + modulus // 2) % modulus - modulus // 2


def unpack(layout: Layout, count_slots: Sequence[Sequence[float]],
           real_slots: Sequence[Sequence[float]], n_providers: int) -> Sums:
    """Round decrypted slots to integers (this is the release precision), remove the sum of
    the pairwise masks (a multiple of 2^30), recombine limbs and remove the sum of the carry
    offsets (a multiple of the limbs' modulus)."""
    if n_providers > MAX_PROVIDERS:
        # Beyond it a total may leave [-M/2, M/2) and its residue would not be the total.
        raise InvalidInput("aggregate.n_providers", "too_many",
                           f"at most {MAX_PROVIDERS} providers decode exactly")
    if [len(s) for s in count_slots] != layout.slot_lengths("count") or \
            [len(s) for s in real_slots] != layout.slot_lengths("real"):
        raise LayoutMismatch("decrypted vectors do not match the layout's slot counts")
    cint = [v for i, s in enumerate(count_slots) for v in _integral(s, n_providers, f"count[{i}]")]
    rint = [v for i, s in enumerate(real_slots) for v in _integral(s, n_providers, f"real[{i}]")]
    counts: dict[str, list[int]] = {}
    pos = 0
    for e in layout.of_kind("count"):
        counts[e.name] = [centred(from_int_limbs(cint[pos + i * COUNT_LIMBS:
                                                      pos + (i + 1) * COUNT_LIMBS]),
                                  COUNT_MODULUS) for i in range(e.length)]
        pos += e.length * COUNT_LIMBS
    reals: dict[str, list[Fraction]] = {}
    pos = 0
    for e in layout.of_kind("real"):
        reals[e.name] = [Fraction(centred(from_int_limbs(rint[pos + i * LIMBS:
                                                              pos + (i + 1) * LIMBS]),
                                          REAL_MODULUS), 1 << FRAC_BITS)
                         for i in range(e.length)]
        pos += e.length * LIMBS
    return Sums(n_providers, counts, reals)
