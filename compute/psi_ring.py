"""Private set intersection among two or more providers: a ring of commutative blinding.

Scenario 3 with more registers: a bank asks how many firms are in the tax bureau's
register, file social insurance *and* hold an account at the credit bureau, and per
district how many employees they declare, while no party sees another's identifiers or
learns which records matched.

Protocol (Huberman, Franklin & Hogg 1999, for n parties; the cipher is OpenMined
``openmined-psi``'s own: ``H(x)^k`` on P-256, no elliptic-curve code here). Providers
``0..n-1`` stand in a ring; each non-holder draws a fresh key ``k_i`` for the job, the
*holder* (the provider with the category and value columns) one fresh key ``k_{h,g}`` per
group g of ``spec.groups()`` (``all``, ``cat.i``, ``bit.j``, ``cat.i.bit.j``).

1. Hop 0: provider ``i`` hashes and blinds its own sets (the library's client
   ``CreateRequest``) and shuffles them. A non-holder has one set, its identifiers
   (``ids``), under ``k_i``. The holder has one set per group, each padded with random
   identifiers (128 bits: they match nothing) to the size of its identifier set, as the
   two-party protocol pads (compute/psi.py ``server_groups``), group g under ``k_{h,g}``.
2. Hops 1..n-1 (``route``): a set travels every other non-holder first, each raising every
   point to its own key (the library's server ``ProcessRequest``, whose answer comes back
   sorted: the order no longer follows the sender's). A non-holder's set reaches the holder
   last: it re-blinds the set once per group, with ``k_{h,g}``, into one sorted version per
   group. Every point is then ``H(x)^(k_{h,g} · prod of the non-holders' keys)`` in group
   g's sets, the same for the same identifier whoever holds it, and no single party can link
   a point back to a record.
3. The *counter* (one designated non-holder) receives every fully blinded set and computes,
   per group g, ``|(∩ of the non-holders' version-g sets) ∩ G_g|``. It releases what the
   two-party protocol releases (compute/psi.py ``release``): the cardinality, per-category
   counts and sums, each suppressed below the minimum count, with secondary suppression
   so that no hidden count is the cardinality less the shown ones.

What each party learns (honest-but-curious, no collusion): the controller relays blinded
points only and holds no key; every party that blinds a set learns its size. The counter
learns, per group g, ``|I ∩ G_g|`` (I: the identifiers every non-holder holds), the padded
group sizes (all equal to the holder's identifier count), the sizes of the non-holders' sets
and of their intersections with one another. It cannot link groups: under ``k_{h,g}`` the
same identifier is a different point in every group, so no holder record's categories or
value bits can be read from which groups hold its point (one key for all groups would give
the counter the holder's whole (category, value) distribution). Nobody learns an identifier
or which records matched. The cost: the holder's sets and the non-holders' last hop carry
one set per group.
"""

from __future__ import annotations

import re
import secrets
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from private_set_intersection.python import Request, client, server

from compute.errors import InvalidInput, PolicyViolation
from compute.psi import PSISpec, identifiers, release, server_groups

POINT_BYTES = 33  # a compressed P-256 point, as the library encodes it
MAGIC = b"PSR1"
MAX_PARTIES = 16
OWN_SET = "ids"
SET_NAME_RX = re.compile(r"ids|all|cat\.\d{1,2}|(cat\.\d{1,2}\.)?(bit\.\d{1,2}|withheld)")
Sets = dict[str, list[bytes]]
# The controller's limit on a relayed message (authz/psi_relay.py), which travels in
# chunks: about 8 million points.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


def new_key() -> bytes:
    """A fresh P-256 key for one job; it never leaves the provider's agent."""
    return bytes(client.CreateWithNewKey(False).GetPrivateKeyBytes())


def own_sets(spec: PSISpec, frame: pd.DataFrame, *, holder: bool) -> dict[str, list[str]]:
    """The identifier sets a provider sends round the ring (see the module docstring)."""
    if holder:
        return server_groups(spec, frame)
    return {OWN_SET: identifiers(frame, spec.id_column)}


def holder_keys(spec: PSISpec) -> dict[str, bytes]:
    """The holder's keys, one per group: under one key for all, the same identifier would
    be the same point in every group and the counter could link its groups."""
    return {g: new_key() for g in spec.groups()}


def route(n: int, holder: int, origin: int) -> list[int]:
    """The positions that blind the set of ``origin`` after it, hop 1 to n-1, in order:
    the other non-holders round the ring, then, for a non-holder's set, the holder (which
    re-blinds it once per group)."""
    others = [(origin + h) % n for h in range(1, n)]
    return [p for p in others if p != holder] + ([holder] if origin != holder else [])


def blind_own(key: bytes | Mapping[str, bytes], sets: Mapping[str, list[str]]) -> Sets:
    """Hop 0: ``H(x)^k`` for each identifier, every set shuffled; ``key`` is one key for
    every set, or the holder's key per set."""
    shuffle = secrets.SystemRandom().shuffle
    out: Sets = {}
    for name, ids in sets.items():
        k = key if isinstance(key, bytes) else key[name]
        points = [bytes(p) for p in client.CreateFromKey(k, False).CreateRequest(ids)
                  .encrypted_elements]
        shuffle(points)
        out[name] = points
    return out


def _raise(key: bytes, points: Sequence[bytes], min_size: int) -> list[bytes]:
    if len(points) < min_size:
        raise PolicyViolation("another provider's identifier set is smaller than the "
                              "minimum count: no intersection is computed")
    req = Request()
    req.reveal_intersection = False
    req.encrypted_elements.extend(points)
    return [bytes(p) for p in server.CreateFromKey(key, False).ProcessRequest(req)
            .encrypted_elements]


def reblind(key: bytes, sets: Mapping[str, Sequence[bytes]], *, min_size: int) -> Sets:
    """A later hop: every point raised to ``k``, each set sorted (so unlinkable by order).

    A set smaller than ``min_size`` is refused: it would be a probe of a few identifiers.
    """
    return {name: _raise(key, points, min_size) for name, points in sets.items()}


def reblind_per_group(keys: Mapping[str, bytes], sets: Mapping[str, Sequence[bytes]], *,
                      min_size: int) -> Sets:
    """The holder's hop on a non-holder's set (its last): one version of the set per group
    g, raised to ``k_{h,g}`` and sorted, so the versions cannot be linked to each other."""
    if set(sets) != {OWN_SET}:
        raise InvalidInput("data_b64", "psi_ring_sets", "the message does not hold the sets "
                           "its origin sends")
    return {g: _raise(key, sets[OWN_SET], min_size) for g, key in keys.items()}


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
                           "256 MiB a relayed message may hold: fewer categories, no "
                           "sums, or smaller datasets, would fit")
    return data


def _bad(why: str) -> InvalidInput:
    return InvalidInput("data_b64", "psi_ring_message", f"not a PSI ring message: {why}")


def layout(data: bytes) -> dict[str, tuple[int, int]]:
    """Each set of a hop's message: its (offset, point count), the message checked whole
    (header, names, lengths, every point compressed, nothing trailing) without copying a
    point: the controller checks messages of millions of points."""
    if data[:4] != MAGIC or len(data) < 6:
        raise _bad("header")
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
                raise _bad("set name or length")
            # Every point's first byte, in one slice: 2 or 3 for a compressed point.
            prefixes = data[pos:end:POINT_BYTES]
            if prefixes.count(2) + prefixes.count(3) != size:
                raise _bad("not compressed points")
            out[name] = (pos, size)
            pos = end
    except (struct.error, UnicodeDecodeError):
        raise _bad("truncated") from None
    if pos != len(data):
        raise _bad("trailing bytes")
    return out


def unpack(data: bytes) -> Sets:
    """The sets of a hop's message; anything malformed is refused (InvalidInput)."""
    return {name: [data[p:p + POINT_BYTES]
                   for p in range(pos, pos + size * POINT_BYTES, POINT_BYTES)]
            for name, (pos, size) in layout(data).items()}


def layout_sizes(data: bytes) -> dict[str, int]:
    """Each set's point count, the message checked as :func:`unpack` checks it."""
    return {name: size for name, (_, size) in layout(data).items()}


def set_sizes(sets: Mapping[str, Sequence[bytes]]) -> dict[str, int]:
    return {name: len(points) for name, points in sets.items()}


def expected_set_names(spec: PSISpec, *, holder: bool) -> set[str]:
    """The sets a message holds: a non-holder's ``ids`` until the holder's hop; the
    holder's groups, and a non-holder's set once the holder re-blinded it per group."""
    return set(spec.groups()) if holder else {OWN_SET}


def cardinalities(spec: PSISpec, members: Sequence[Mapping[str, Sequence[bytes]]],
                  holder: Mapping[str, Sequence[bytes]]) -> dict[str, int]:
    """The counter's step: per group g of ``spec.groups()``, ``|(∩ of the non-holders'
    version-g sets) ∩ G_g|``, every set fully blinded."""
    cards = {}
    for g in spec.groups():
        common = set(holder[g])
        for m in members:
            common &= set(m[g])
        cards[g] = len(common)
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
    hkeys = holder_keys(spec)
    # held[o]: the sets that started at o, as they travel
    held = [blind_own(hkeys if i == holder else keys[i],
                      own_sets(spec, frames[i], holder=i == holder)) for i in range(n)]
    sizes = {"hop0": sum(len(message(s)) for s in held), "relayed": 0}
    for h in range(1, n):
        for o in range(n):
            at = route(n, holder, o)[h - 1]
            held[o] = reblind_per_group(hkeys, held[o], min_size=min_count) if at == holder \
                else reblind(keys[at], held[o], min_size=min_count)
            sizes["relayed"] += len(message(held[o]))
    cards = cardinalities(spec, [held[o] for o in range(n) if o != holder], held[holder])
    return release(spec, cards, min_count), sizes
