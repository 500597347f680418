"""Record identities that survive changes no release can see, and what the audit does
when identities cannot be trusted.

The differencing audit (:mod:`compute.sdc.audit`) compares released populations as sets
of keyed record identities. An identity hashed from every column of the source as text
changes on every record whenever something no cell reads changes on every row (a column
the file gains, an extract date, an integer column written ``3.0`` once a value is
missing): two editions then share no record and the audit compares nothing. So a
record's identity here is a keyed hash of the values a release can read, each parsed by
its declared type:

* the columns are the job's permitted fields (an *identity space*, named by
  :func:`space_of`). Not the columns one analysis reads: two analyses of one permit
  reading different columns would give one record two identities, and a total and a
  margin over the same records would never be compared. Not every column of the file:
  an unpermitted extract date would make every record new. Two permits of one requester
  with different fields are two spaces; the agent recomputes the identities of every
  space the requester was released populations in from the current edition, so each
  stored population is compared in its own space (``containers.audit_ids``);
* ``3``, ``3.0`` and ``03`` of a number, ``True`` and ``yes`` of a boolean, dates
  written in any format pandas reads, and text with stray spaces each hash one way.

Where identities still cannot be trusted (pseudonyms issued afresh for each extract, a
column that changes on every row and is permitted) the audit falls back on labels
(:func:`label_digest`): a released cell is also kept under a keyed digest of what it is
(its dimensions' values and the columns it needs present) with its counts, and a cell of
an edition whose identities overlap little with an earlier release's (:func:`overlap` of
:func:`signature`\\ s) is suppressed when an earlier cell of the same label differs from it
by 1 to k-1 in count. A cell of values is also kept over records identified by only the
columns its label reads (:func:`record_identities` over those columns: one space per
label, whatever the permit), so that corrections to a column it does not read leave its
records the same to the cell of the same label in the next edition. Pure; no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from compute.errors import InvalidInput
from compute.sdc.audit import KEY_CHARS, U64, mix

#: The identity space of populations kept before typed identities: every column of the
#: source as text (:func:`compute.sdc.audit.row_identities`).
LEGACY = "legacy"
#: Bottom-k sample size of an edition's signature (2 KiB): overlap within about ±0.03.
SIGNATURE = 256
#: Below this overlap of two editions' identities the audit also compares labels.
LOW_OVERLAP = 0.9

_MISSING = "\x00"
_TRUE = {"true", "1", "yes", "t", "y", "1.0"}
_FALSE = {"false", "0", "no", "f", "n", "0.0"}
_NA = {"", "nan", "none", "nat", "<na>", "null"}
_RECORD_SALT = np.uint64(0x3C6EF372FE94F82B)
_SIGNATURE_SALT = np.uint64(0xA54FF53A5F1D36F1)

Field = tuple[str, str]  # (name, declared type)
#: A released cell's label as the store keeps it: (label, units, records, and for a cell
#: of values its population over the columns it reads, as stored bytes, or None).
LabelEntry = tuple[str, int, int, bytes | None]


def space_of(fields: Iterable[Field]) -> str:
    """The name of the identity space over ``fields`` (order does not matter)."""
    body = json.dumps(sorted({(str(n), str(t)) for n, t in fields}))
    return "t1:" + hashlib.sha256(body.encode()).hexdigest()[:32]


def _uniques(series: pd.Series) -> tuple[np.ndarray[Any, Any], list[str], list[bool]]:
    """Per record the code of its distinct value (-1: missing), and per distinct value its
    text with stray spaces dropped and whether it spells a missing value. Everything
    after this works on the distinct values, not the records."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    texts = [" ".join(str(u).split()) for u in uniques]
    return np.asarray(codes), texts, [t.lower() in _NA for t in texts]


def _spread(codes: np.ndarray[Any, Any], spelled: list[str], index: pd.Index
            ) -> pd.Series:
    return pd.Series(np.array([*spelled, _MISSING], dtype=object)[codes], index=index)


def _numbers(series: pd.Series) -> pd.Series:
    """Numbers in one spelling (numpy's shortest round-trip form: ``3.0``, ``1234.5``),
    parsed by pandas in C: a cost column has about as many distinct values as records.
    What does not parse stays text, marked."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        nums = series.to_numpy(dtype=np.float64) + 0.0
        out = np.where(np.isfinite(nums), nums.astype(str), _MISSING).astype(object)
        return pd.Series(out, index=series.index)
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    text = pd.Series(uniques, dtype=object).astype(str).str.strip()
    nums = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64) + 0.0
    ok = np.isfinite(nums)
    spelled = nums.astype(str).astype(object)
    odd = np.flatnonzero(~ok)
    for i in odd:
        t = " ".join(str(text.iloc[i]).split())
        spelled[i] = _MISSING if t.lower() in _NA else "?" + t
    return _spread(np.asarray(codes), list(spelled), series.index)


def _boolean(v: str) -> str:
    low = v.lower()
    return "true" if low in _TRUE else "false" if low in _FALSE else "?" + v


def _dates(texts: list[str]) -> list[str]:
    text = pd.Series(texts, dtype=object)
    iso = pd.to_datetime(text, errors="coerce", format="%Y-%m-%d")
    odd = iso.isna() & text.ne("")
    if odd.any():
        # Other spellings of a date (a provider's export changed format): pandas' own
        # inference, value by value; what it cannot read stays text.
        iso[odd] = pd.to_datetime(text[odd], errors="coerce", format="mixed")
    out = iso.dt.strftime("%Y-%m-%d").astype(object)
    return [str(v) for v in out.where(iso.notna(), "?" + text)]


def canonical_column(series: pd.Series, kind: str) -> pd.Series:
    """One spelling per value of a column of declared type ``kind`` (missing: one mark)."""
    if kind in ("integer", "number"):
        return _numbers(series)
    codes, texts, missing = _uniques(series)
    if kind == "boolean":
        spelled = [_boolean(t) for t in texts]
    elif kind == "date":
        spelled = _dates(texts)
    else:
        spelled = texts
    return _spread(codes, [_MISSING if m else v for v, m in zip(spelled, missing,
                                                                  strict=True)], series.index)


def record_identities(frame: pd.DataFrame, fields: Sequence[Field], key: str) -> U64:
    """A keyed 64-bit identity per record from the values of ``fields`` (its identity
    space), each parsed by its declared type: the same record has the same identity in
    every edition where those values are the same, whatever else the file holds or how
    it spells them. Identical records get distinct identities by order of occurrence."""
    if not isinstance(key, str) or len(key.encode()) != KEY_CHARS:
        raise InvalidInput("key", "length", "the audit key must be 16 ASCII characters")
    names = sorted({n for n, _ in fields})
    kinds = dict(fields)
    text = pd.DataFrame({n: canonical_column(frame[n], kinds[n]).to_numpy()
                         for n in names}, index=range(len(frame)))
    if not names:
        h = np.zeros(len(frame), dtype=np.uint64)
    else:
        h = pd.util.hash_pandas_object(text, index=False, hash_key=key).to_numpy(np.uint64)
    occurrence = pd.Series(h).groupby(h).cumcount().to_numpy(np.uint64)
    with np.errstate(over="ignore"):
        return mix(h ^ mix(occurrence + _RECORD_SALT))


#: Besides a decimal digit (of any script), the first characters of a text ``float()``
#: reads: a sign, a point, "inf", "nan" (the texts have no leading space).
_FLOAT_SIGNS = frozenset("+-.iInN")


def identifier_text(column: pd.Series) -> tuple[pd.Series, np.ndarray[Any, Any]]:
    """An identifier column's values in one spelling (stray spaces dropped; a number
    written ``7``, ``07`` or ``7.0`` once), and which records have none."""
    codes, texts, missing = _uniques(column)

    def spell(v: str) -> str:
        if not v or not (v[0] in _FLOAT_SIGNS or v[0].isdecimal()):
            return v  # what float() refuses anyway, without the cost of its exception
        try:
            x = float(v)
        except ValueError:
            return v
        return str(int(x)) if np.isfinite(x) and x == int(x) and abs(x) < 2 ** 63 else v

    text = _spread(codes, [spell(t) for t in texts], column.index)
    absent = np.array([*missing, True], dtype=bool)[codes]
    return text.astype(str), absent


# ---- an edition's signature: how much two editions' identities overlap -----------------

def signature(ids: U64) -> U64:
    """The ``SIGNATURE`` smallest mixed identities of an edition (bottom-k sample)."""
    mixed = np.unique(mix(np.asarray(ids, dtype=np.uint64) ^ _SIGNATURE_SALT))
    return np.ascontiguousarray(mixed[:SIGNATURE])


def overlap(a: U64, n_a: int, b: U64, n_b: int) -> float:
    """Estimated share of the smaller edition's identities the other holds too: the
    Jaccard index from the two bottom-k samples, turned into ``|A ∩ B| / min(|A|, |B|)``
    (an edition that only grew overlaps fully with the one before)."""
    if not n_a or not n_b or not len(a) or not len(b):
        return 0.0
    union = np.union1d(a, b)[:SIGNATURE]
    both = np.intersect1d(np.intersect1d(a, b), union).size
    jaccard = both / len(union)
    common = jaccard * (n_a + n_b) / (1 + jaccard)
    return float(min(1.0, common / min(n_a, n_b)))


# ---- labels: what a cell is, whatever its records are called ---------------------------

def canonical_value(v: Hashable) -> str:
    """A dimension's value as a label spells it on both routes (``3`` and ``3.0`` once)."""
    s = " ".join(str(v).split())
    try:
        x = float(s)
    except ValueError:
        return s
    return repr(x + 0.0) if np.isfinite(x) else s


def label_digest(key: str, filters: Iterable[tuple[str, Hashable]],
                 present: Iterable[str]) -> str:
    """Keyed digest of a cell's definition: the value each fixed dimension takes
    (``filters``) and the columns its records must hold (``present``). Keyed, as the
    identities are: without the key nobody can tell a category from its digest."""
    body = json.dumps([sorted((str(d), canonical_value(v)) for d, v in filters),
                       sorted({str(c) for c in present})], ensure_ascii=True)
    return hmac.new(key.encode(), body.encode(), hashlib.sha256).hexdigest()


def relabelled(labels: Sequence[str | None], units: np.ndarray[Any, Any],
               records: np.ndarray[Any, Any],
               prior: dict[str, list[tuple[int, int]]], k: int) -> np.ndarray[Any, Any]:
    """Per cell: a cell of the same label released from a little-overlapping edition
    (``prior``: label to its (units, records) counts) differs from it by 1 to k-1 in
    units or in records."""
    hit = np.zeros(len(labels), dtype=bool)
    for i, label in enumerate(labels):
        for u, r in prior.get(label, []) if label is not None else []:
            du, dr = abs(int(units[i]) - u), abs(int(records[i]) - r)
            if 0 < du < k or 0 < dr < k:
                hit[i] = True
                break
    return hit


def blind_hits(counts: np.ndarray[Any, Any], blind: np.ndarray[Any, Any], k: int
               ) -> np.ndarray[Any, Any]:
    """Per cell: some population whose identities cannot be matched any more (``blind``:
    their counts) differs from it by 1 to k-1 in count (fail closed)."""
    if not len(blind) or not len(counts):
        return np.zeros(len(counts), dtype=bool)
    b = np.sort(np.asarray(blind, dtype=np.int64))
    c = np.asarray(counts, dtype=np.int64)
    lo = np.searchsorted(b, c - (k - 1), side="left")
    at = np.searchsorted(b, c, side="left")
    after = np.searchsorted(b, c, side="right")
    hi = np.searchsorted(b, c + (k - 1), side="right")
    return np.asarray(((at - lo) + (hi - after) > 0) & (c > 0), dtype=bool)
