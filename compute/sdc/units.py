"""Contributors from a provider's identifier columns: which records are one person.

A dataset of episodes holds several records per patient; the threshold and the nk and
p% rules are about persons, so the statistics route counts a cell's contributors as the
distinct persons behind its records, and sums a person's records before the dominance
rules (``unit`` of :func:`~compute.sdc.frequency_table` and
:func:`~compute.sdc.magnitude_table`). This module turns the declared identifier
columns into one contributor number per record, in the provider's domain: identifier
values are hashed under a key the caller draws, and only the numbers are kept.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from compute.errors import InvalidInput
from compute.sdc.audit import U64, mix
from compute.sdc.grid import IntArray
from compute.sdc.identity import identifier_text

KEY_CHARS = 16


def _codes(column: pd.Series, key: str) -> IntArray:
    """Per record, the number of its keyed identifier value; -1 where it has none."""
    # One spelling per identifier: a patient written `` R-000005`` or ``7.0`` in one
    # extract and ``R-000005`` or ``7`` in the next is one person (identifier_text).
    text, missing = identifier_text(column)
    hashed = pd.util.hash_pandas_object(text, index=False, hash_key=key).to_numpy(np.uint64)
    codes, _ = pd.factorize(hashed)
    out = np.asarray(codes, dtype=np.int64)
    out[missing] = -1
    return out


def contributor_codes(identifiers: pd.DataFrame, key: str) -> IntArray:
    """One contributor number per record (0, 1, ... in order of first occurrence).

    With one identifier column a contributor is one of its values. With several, records
    that share a value of any of them are one contributor (connected components): a
    patient number and an insurance number of the same person must not make two
    contributors of one, and a column unique per record (an episode number) then merges
    nothing. The cost of the wrong guess is lopsided: merging two persons suppresses
    more, splitting one releases a person as several. A record with no identifier value
    is a contributor of its own (nothing links it to others).
    """
    if not isinstance(key, str) or len(key.encode()) != KEY_CHARS:
        raise InvalidInput("key", "length", "the unit key must be 16 ASCII characters")
    n = len(identifiers)
    columns = [_codes(identifiers[c], key) for c in identifiers.columns]
    labels = np.arange(n, dtype=np.int64)
    if columns:
        # Minimum-label propagation with pointer jumping: each record's label is the
        # smallest record index known to be the same contributor; a fixpoint is reached
        # in about log(component size) rounds, each a few vectorised passes.
        while True:
            before = labels
            for codes in columns:
                has = codes >= 0
                if not has.any():
                    continue
                smallest = pd.Series(labels[has]).groupby(codes[has]).min()
                labels = labels.copy()
                labels[has] = smallest.reindex(codes[has]).to_numpy(np.int64)
            labels = labels[labels]
            if np.array_equal(labels, before):
                break
    out, _ = pd.factorize(labels)
    return np.asarray(out, dtype=np.int64)


_PERSON_SALT = np.uint64(0x5851F42D4C957F2D)
_NONE = np.iinfo(np.uint64).max


def person_identities(identifiers: pd.DataFrame, key: str, rows: U64) -> U64:
    """Per record, a keyed 64-bit identity of its person that is the same in every job
    (the differencing audit compares persons across jobs; the contributor numbers of
    :func:`contributor_codes` are drawn per job and do not compare).

    A person is a contributor of :func:`contributor_codes` (records linked by a value of
    any identifier column), named by the smallest keyed hash of the identifier values
    its records hold (each value hashed with its column's name: the same text in two
    columns is not one person). ``key`` is the audit store's persistent row key, so
    nobody without it can link an identity to a person. A record with no identifier
    value is a person of its own, named by its row identity (``rows``)."""
    labels = contributor_codes(identifiers, key)
    smallest = np.full(len(identifiers), _NONE, dtype=np.uint64)
    for name in identifiers.columns:
        text, missing = identifier_text(identifiers[name])
        hashed = pd.util.hash_pandas_object(f"{name}\x1f" + text, index=False,
                                            hash_key=key).to_numpy(np.uint64)
        hashed[missing] = _NONE
        smallest = np.minimum(smallest, hashed)
    person = pd.Series(smallest).groupby(labels).transform("min").to_numpy(np.uint64)
    named = person != _NONE
    with np.errstate(over="ignore"):
        return np.where(named, mix(person ^ _PERSON_SALT), rows).astype(np.uint64)
