"""Private set intersection among two or more providers: a ring of commutative blinding.

Scenario 3 with more registers: a bank asks how many firms are in the tax bureau's
register, file social insurance *and* hold an account at the credit bureau, and per
district how many employees they declare, while no party sees another's identifiers or
learns which records matched.

Protocol (Huberman, Franklin & Hogg 1999, for n parties; the cipher is OpenMined
``openmined-psi``'s own: ``H(x)^k`` on P-256, no elliptic-curve code here). Providers
``0..n-1`` stand in a ring; each draws a fresh key ``k_i`` for the job.

1. Hop 0: provider ``i`` hashes and blinds its own sets with ``k_i`` (the library's
   client ``CreateRequest``) and shuffles them. A non-holder has one set, its identifiers
   (``ids``). The *holder* (the provider with the category and value columns) has one set
   per base group: ``all``, ``cat.i`` (identifiers of category i) and ``bit.j``
   (identifiers whose value has bit j set), padded with *dummy records* (``holder_sets``):
   random identifiers, each with a category and value bits and in exactly the groups a
   real record with those would be in, so that every category (and the "other" one, in
   ``all`` only) holds M records and every bit is set in M/2 of each category, M being a
   power of two at least twice the largest category (``dummy_quota``).
2. Hops 1..n-1: the set of provider ``o`` goes to provider ``o+h``, which raises every
   point to its own key (the library's server ``ProcessRequest``, whose answer comes back
   sorted: the order no longer follows the sender's) and passes it on. After hop n-1 every
   point is ``H(x)^(k_0...k_{n-1})``, the same for the same identifier whichever provider
   holds it, and no single party can link a point back to a record.
3. The *counter* (one designated non-holder) receives every fully blinded set and
   intersects them: ``I`` = the points in every non-holder's set; per group g,
   ``|I ∩ G_g|``, deriving ``cat.i.bit.j`` as ``cat.i ∩ bit.j`` (the same identifier is
   the same point in every group). It releases what the two-party protocol releases
   (compute/psi.py ``release``): the cardinality, per-category counts and sums, each
   suppressed below the minimum count.

What each party learns (honest-but-curious, no collusion): the controller relays blinded
points only and holds no key; every party that blinds a set learns its size. The counter
learns the size of every set and of every intersection of the sets it compares, not only
the released ones: the sizes of the non-holders' sets and of their sub-intersections, and
from the holder's groups, their sizes and intersections with one another (a category with
a bit, with ``all`` or with another category), M and the number of categories only. As
the same identifier is the same point in every group, though, it can still read each of
the holder's points' category and value bits: the holder's (category, value) histogram
mixed with the dummies', which hides its counts and whole-set sums but not, for instance,
a value many records share. Nobody learns an identifier or which records matched.
"""

from __future__ import annotations

import re
import secrets
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from private_set_intersection.python import Request, client, server

from compute.errors import InvalidInput, PolicyViolation
from compute.psi import PSISpec, identifiers, normalize, release, server_rows

POINT_BYTES = 33  # a compressed P-256 point, as the library encodes it
MAGIC = b"PSR1"
MAX_PARTIES = 16
OWN_SET = "ids"
SET_NAME_RX = re.compile(r"ids|all|cat\.\d{1,2}|bit\.\d{1,2}")
Sets = dict[str, list[bytes]]
# The controller's limit on one relayed message (authz/psi_relay.py): about 380,000 points.
MAX_MESSAGE_BYTES = 12 * 1024 * 1024


def new_key() -> bytes:
    """A fresh P-256 key for one job; it never leaves the provider's agent."""
    return bytes(client.CreateWithNewKey(False).GetPrivateKeyBytes())


def own_sets(spec: PSISpec, frame: pd.DataFrame, *, holder: bool, min_size: int = 1
             ) -> dict[str, list[str]]:
    """The identifier sets a provider sends round the ring (see the module docstring)."""
    if holder:
        return holder_sets(spec, frame, min_size=min_size)
    return {OWN_SET: identifiers(frame, spec.id_column)}


def dummy_quota(largest: int, *, value: bool, min_size: int = 1) -> int:
    """M: the records every category holds once padded with dummies. A power of two at least
    the largest category (twice it with a value column, so that every bit can be set in
    exactly half of each category) and at least ``min_size`` (so that no hop refuses a
    category's set), hence a bound on the holder's data that tells little about it."""
    need = max(2 * largest if value else largest, min_size, 2 if value else 1)
    return 1 << (need - 1).bit_length()


def is_dummy_layout(sizes: Mapping[str, int]) -> bool:
    """Whether a holder's set sizes are those its dummy records give (``holder_sets``):
    M a power of two in every ``cat.i``, C·M in ``all`` (C the categories with "other",
    1 without a category set) and C·M/2 in every ``bit.j``. The relay refuses other sizes:
    sets padded otherwise could tell the counter the holder's histogram."""
    cats = [n for name, n in sizes.items() if name.startswith("cat.")]
    bits = [n for name, n in sizes.items() if name.startswith("bit.")]
    c = len(cats) + 1 if cats else 1
    m = cats[0] if cats else sizes.get("all", 0)
    return m > 0 and m & (m - 1) == 0 and all(n == m for n in cats) and \
        sizes.get("all") == c * m and all(2 * n == c * m for n in bits)


def _random_order(n: int) -> np.ndarray:
    """A uniformly random permutation of ``range(n)`` from the OS's CSPRNG (one call)."""
    return np.argsort(np.frombuffer(secrets.token_bytes(8 * n), dtype=np.uint64),
                      kind="stable")


def holder_sets(spec: PSISpec, frame: pd.DataFrame, *, min_size: int = 1
                ) -> dict[str, list[str]]:
    """The holder's base groups ``all``, ``cat.i`` and ``bit.j`` with dummy records.

    Each dummy is a random identifier (128 bits: it matches no provider's) given a category
    and value bits, and it is in exactly the groups a real record with those would be in. The
    dummies bring every category, and the implicit "other" one (records in none of the spec's
    categories, which are in ``all`` only), to the same size M (``dummy_quota``), and set
    every value bit in exactly M/2 records of each category: M - n_i dummies for category i
    with n_i records, M/2 - b_ij of them with bit j set when b_ij records have it (feasible
    as M/2 >= n_i). The sizes of the groups and of their intersections with one another that
    the counter needs then depend on M and the spec alone."""
    ids, keys, ints = server_rows(spec, frame)
    slot_of = {k: s for s, k in enumerate(dict.fromkeys(normalize(c) for c in spec.categories))}
    n_slots = len(slot_of) + 1 if keys is not None else 1  # the last is "other"
    cats = np.zeros(len(ids), dtype=np.int64) if keys is None else np.array(
        [slot_of.get(k, n_slots - 1) for k in keys], dtype=np.int64)
    vals = np.zeros(len(ids), dtype=np.int64) if ints is None else ints
    sizes = np.bincount(cats, minlength=n_slots)
    m = dummy_quota(int(sizes.max()), value=ints is not None, min_size=min_size)
    all_ids, all_cats, all_vals = [ids], [cats], [vals]
    for slot in range(n_slots):
        extra = m - int(sizes[slot])
        dummy_vals = np.zeros(extra, dtype=np.int64)
        if ints is not None:
            real = vals[cats == slot]
            for j in range(spec.value_bits):
                wanted = m // 2 - int(((real >> j) & 1).sum())
                dummy_vals[_random_order(extra)[:wanted]] |= 1 << j
        all_ids.append([f"dummy:{secrets.token_hex(16)}" for _ in range(extra)])
        all_cats.append(np.full(extra, slot, dtype=np.int64))
        all_vals.append(dummy_vals)
    members = np.array([i for part in all_ids for i in part], dtype=object)
    cat_of, val_of = np.concatenate(all_cats), np.concatenate(all_vals)
    groups = {"all": members.tolist()}
    for i, c in enumerate(spec.categories):
        groups[f"cat.{i}"] = members[cat_of == slot_of[normalize(c)]].tolist()
    if ints is not None:
        for j in range(spec.value_bits):
            groups[f"bit.{j}"] = members[((val_of >> j) & 1).astype(bool)].tolist()
    return groups


def blind_own(key: bytes, sets: Mapping[str, list[str]]) -> Sets:
    """Hop 0: ``H(x)^k`` for each identifier, every set shuffled."""
    psi_client = client.CreateFromKey(key, False)
    shuffle = secrets.SystemRandom().shuffle
    out: Sets = {}
    for name, ids in sets.items():
        points = [bytes(p) for p in psi_client.CreateRequest(ids).encrypted_elements]
        shuffle(points)
        out[name] = points
    return out


def reblind(key: bytes, sets: Mapping[str, list[bytes]], *, min_size: int) -> Sets:
    """A later hop: every point raised to ``k``, each set sorted (so unlinkable by order).

    A set smaller than ``min_size`` is refused: it would be a probe of a few identifiers.
    """
    psi_server = server.CreateFromKey(key, False)
    out: Sets = {}
    for name, points in sets.items():
        if len(points) < min_size:
            raise PolicyViolation("another provider's identifier set is smaller than the "
                                  "minimum count: no intersection is computed")
        req = Request()
        req.reveal_intersection = False
        req.encrypted_elements.extend(points)
        out[name] = [bytes(p) for p in psi_server.ProcessRequest(req).encrypted_elements]
    return out


def pack(sets: Mapping[str, Sequence[bytes]]) -> bytes:
    """A hop's message: named sets of fixed-size points, length-prefixed."""
    parts = [MAGIC, struct.pack(">H", len(sets))]
    for name, points in sets.items():
        raw = name.encode()
        parts += [struct.pack(">B", len(raw)), raw, struct.pack(">I", len(points)), *points]
    return b"".join(parts)


def message(sets: Mapping[str, Sequence[bytes]]) -> bytes:
    """``pack``, refusing a message the controller would refuse as too large, with the
    reason (no figure: a set's size is derived from the provider's data)."""
    data = pack(sets)
    if len(data) > MAX_MESSAGE_BYTES:
        raise InvalidInput("psi", "message_size", "the PSI ring's blinded sets exceed the "
                           "12 MiB a relayed message may hold: fewer categories or value "
                           "bits, or smaller datasets, would fit")
    return data


def unpack(data: bytes) -> Sets:
    """The sets of a hop's message; anything malformed is refused (InvalidInput)."""
    def bad(why: str) -> InvalidInput:
        return InvalidInput("data_b64", "psi_ring_message", f"not a PSI ring message: {why}")

    if data[:4] != MAGIC or len(data) < 6:
        raise bad("header")
    (count,), pos, out = struct.unpack_from(">H", data, 4), 6, {}
    try:
        for _ in range(count):
            (n,) = struct.unpack_from(">B", data, pos)
            name = data[pos + 1:pos + 1 + n].decode("ascii")
            pos += 1 + n
            (size,) = struct.unpack_from(">I", data, pos)
            pos += 4
            end = pos + size * POINT_BYTES
            if not SET_NAME_RX.fullmatch(name) or name in out or end > len(data):
                raise bad("set name or length")
            points = [data[p:p + POINT_BYTES] for p in range(pos, end, POINT_BYTES)]
            if any(p[0] not in (2, 3) for p in points):
                raise bad("not compressed points")
            out[name] = points
            pos = end
    except (struct.error, UnicodeDecodeError):
        raise bad("truncated") from None
    if pos != len(data):
        raise bad("trailing bytes")
    return out


def set_sizes(sets: Mapping[str, Sequence[bytes]]) -> dict[str, int]:
    return {name: len(points) for name, points in sets.items()}


def expected_set_names(spec: PSISpec, *, holder: bool) -> set[str]:
    if not holder:
        return {OWN_SET}
    return {"all", *(f"cat.{i}" for i in range(len(spec.categories))),
            *((f"bit.{j}" for j in range(spec.value_bits)) if spec.value_column else ())}


def cardinalities(spec: PSISpec, members: Sequence[Mapping[str, Sequence[bytes]]],
                  holder: Mapping[str, Sequence[bytes]]) -> dict[str, int]:
    """The counter's step: ``|I ∩ G_g|`` for every group of ``spec.groups()``, where ``I``
    is the intersection of every non-holder's fully blinded identifiers."""
    common = set(members[0][OWN_SET])
    for m in members[1:]:
        common &= set(m[OWN_SET])
    base = {name: common & set(points) for name, points in holder.items()}
    cards = {}
    for g in spec.groups():
        cat, _, bit = g.partition(".bit.") if g.startswith("cat.") else (g, "", "")
        cards[g] = len(base[cat] & base[f"bit.{bit}"]) if bit else len(base[g])
    return cards


def run_ring_psi(spec: PSISpec, frames: Sequence[pd.DataFrame], *, holder: int,
                 counter: int, min_count: int = 10) -> tuple[dict[str, Any], dict[str, int]]:
    """Every provider's part in one process (tests, benchmarks), hop by hop as the agents
    run it: the counter's release and the bytes each kind of message carried."""
    n = len(frames)
    if not 2 <= n <= MAX_PARTIES or holder == counter or not 0 <= holder < n or \
            not 0 <= counter < n:
        raise InvalidInput("providers", "ring", "2-16 providers, a holder and a counter")
    keys = [new_key() for _ in range(n)]
    # held[o]: the sets that started at o, as they travel
    held = [blind_own(keys[i], own_sets(spec, frames[i], holder=i == holder,
                                        min_size=min_count)) for i in range(n)]
    sizes = {"hop0": sum(len(message(s)) for s in held), "relayed": 0}
    for h in range(1, n):
        for o in range(n):
            held[o] = reblind(keys[(o + h) % n], held[o], min_size=min_count)
            sizes["relayed"] += len(message(held[o]))
    cards = cardinalities(spec, [held[o] for o in range(n) if o != holder], held[holder])
    return release(spec, cards, min_count), sizes
