"""Cell holders: how many providers hold records in each explicit cell of a joint job.

Why: ``min_providers`` bounds how many providers a joint job pools, not how many hold
records in one cell. A group only one provider has records in would be released as that
provider's own figures. Before the data round, the providers learn, per explicit cell,
how many of them hold it, and withdraw every cell fewer than ``min_providers`` hold.

How (see docs/joint-statistics.md, "Cell holders"):

1. The explicit cells the job releases (histogram and quantile bins and their missing
   cell, contingency cells and their missing cell, group cells, the groups' missing cell
   and each group value's cells split by the value's presence) are laid out by the spec
   alone, so every provider numbers them alike (:func:`layout`).
2. Round r: each provider sets I_r[c] = 1 for every cell in which it keeps a record (after
   its own small-cell withdrawal and every cell forced so far), adds its pairwise masks
   modulo 2^64 (from the job's X25519 mask keys, a fresh HKDF derivation per round: a mask
   reused across rounds would let two rounds' difference show the indicators that changed)
   and signs the masked vector with its agent key (:func:`publish`).
3. Every provider verifies every provider's signed vector of the round and adds them: the
   masks cancel, leaving H_r[c], the number of providers holding cell c (:func:`holders`).
   Each provider computes H_r itself: the relay (the controller) cannot alter a vector.
4. Cells with 0 < H_r[c] < min_providers are forced: every provider withdraws their records
   from every statistic, re-runs its own withdrawal, and round r + 1 follows. A round that
   forces nothing new ends the rounds; after ``MAX_ROUNDS`` rounds the part fails closed.

Not under differential privacy (no local withdrawal there; the noise covers a cell one
provider holds), nor with ``min_providers`` below 2, nor for a spec without explicit cells.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from compute.errors import BadSignature, Conflict, InvalidInput
from compute.local_aggregate import _bin_index, _codes, _group_cells, numeric_columns
from compute.masking import MaskSession, canonical

VECTOR_TYPE = "joint-cell-holders"
SIGN_DOMAIN = b"data-sandbox/joint-cell-holders/v1\x00"  # no signature reuse across formats
ROUND_INFO = b"data-sandbox/joint-cell-holders-mask/v1\x00"
MAX_ROUNDS = 4
MAX_CELLS = 1 << 18  # one 64-bit word each: a vector of at most 2 MiB
U64 = np.dtype("<u8")
Vector = np.ndarray[Any, np.dtype[np.uint64]]
Cells = np.ndarray[Any, np.dtype[np.int64]]


def layout(spec: Mapping[str, Any]) -> list[tuple[str, int]]:
    """Every explicit cell family of a normalized spec and its size, in the spec's order:
    fixed by the spec only, never by a provider's data, so the providers' vectors align."""
    if spec.get("dp"):
        return []
    out: list[tuple[str, int]] = []
    for c, edges in (spec.get("bins") or {}).items():
        out.append((f"hist.{c}", len(edges) + 2))  # below, bins, above, missing
    for c, q in (spec.get("quantiles") or {}).items():
        out.append((f"q.{c}", len(q["edges"]) + 2))
    if ct := spec.get("contingency"):
        out.append(("ct", (len(ct["row_categories"]) + 1) * (len(ct["col_categories"]) + 1)
                    + 1))
    if groups := spec.get("groups"):
        g = 1
        for key in groups["by"]:
            g *= len(key["edges"]) - 1 if key.get("edges") is not None \
                else len(key["categories"])
        out.append(("grp", g + 2))  # the cells, 'other', missing
        out += [(f"grp.{v}", 2 * (g + 2)) for v in groups["values"]]
    return out


def layout_size(spec: Mapping[str, Any]) -> int:
    return sum(size for _, size in layout(spec))


def needed(spec: Mapping[str, Any], min_providers: int | None) -> bool:
    """Whether the job has a cell-holders round at all (the common case stays one round
    cheaper: no explicit cells, or no per-cell provider minimum to enforce)."""
    return min_providers is not None and min_providers >= 2 and layout_size(spec) > 0


def record_cells(spec: Mapping[str, Any], df: Any) -> list[Cells]:
    """Per cell family of :func:`layout`, each record's cell, offset into the whole vector
    (every record is in exactly one cell of each family: missing is a cell)."""
    col = numeric_columns(df, {})
    out: list[Cells] = []
    offset = 0

    def add(cells: Cells, size: int) -> None:
        nonlocal offset
        out.append(cells.astype(np.int64) + offset)
        offset += size

    for c, edges in (spec.get("bins") or {}).items():
        idx = _bin_index(col(c), edges)
        add(np.where(idx < 0, len(edges) + 1, idx), len(edges) + 2)
    for c, q in (spec.get("quantiles") or {}).items():
        idx = _bin_index(col(c), q["edges"])
        add(np.where(idx < 0, len(q["edges"]) + 1, idx), len(q["edges"]) + 2)
    if ct := spec.get("contingency"):
        r = _codes(df[ct["rows"]], ct["row_categories"])
        k = _codes(df[ct["cols"]], ct["col_categories"])
        width, size = len(ct["col_categories"]) + 1, \
            (len(ct["row_categories"]) + 1) * (len(ct["col_categories"]) + 1)
        add(np.where((r < 0) | (k < 0), size, r * width + k), size + 1)
    if groups := spec.get("groups"):
        cell, g = _group_cells(groups, df, col)
        key_cell = np.where(cell < 0, g + 1, cell)
        add(key_cell, g + 2)
        for v in groups["values"]:
            add(key_cell * 2 + np.isnan(col(v)), 2 * (g + 2))
    return out


def indicators(cells: Sequence[Cells], kept: Any, size: int) -> Vector:
    """1 for every cell holding at least one kept record, else 0."""
    out = np.zeros(size, dtype=np.uint64)
    for family in cells:
        out[np.unique(family[kept])] = 1
    return out


def records_in(cells: Sequence[Cells], forced: Any, n: int) -> Any:
    """The records in any forced cell (to withdraw from every statistic)."""
    out = np.zeros(n, dtype=bool)
    for family in cells:
        out |= forced[family]
    return out


def _round_seed(s: MaskSession, peer: str, peer_key: str, rnd: int, size: int) -> bytes:
    shared = s.key.private.exchange(X25519PublicKey.from_public_bytes(bytes.fromhex(peer_key)))
    # A fresh derivation per round (and apart from the data round's seeds): one mask never
    # covers two vectors.
    info = ROUND_INFO + canonical({"job_id": s.job_id, "label": "cell-holders", "round": rnd,
                                   "pair": sorted([s.provider_id, peer]), "keys": s.digest,
                                   "cells": size})
    return HKDF(algorithm=hashes.SHA256(), length=32,
                salt=hashlib.sha256(s.job_id.encode()).digest(), info=info).derive(shared)


def round_mask(s: MaskSession, rnd: int, size: int) -> Vector:
    """This provider's mask for round ``rnd``: the sum of ± its pairwise masks mod 2^64."""
    acc = np.zeros(size, dtype=np.uint64)
    for peer, pub in sorted(s.peers.items()):
        if peer == s.provider_id:
            continue
        enc = Cipher(algorithms.ChaCha20(_round_seed(s, peer, pub, rnd, size), b"\x00" * 16),
                     mode=None).encryptor()
        m = np.frombuffer(enc.update(b"\x00" * (8 * size)), dtype=U64).astype(np.uint64)
        acc = acc + m if s.provider_id < peer else acc - m  # uint64 wraps: mod 2^64
    return acc


def _signed(vec: Mapping[str, Any]) -> bytes:
    return SIGN_DOMAIN + canonical({k: vec.get(k) for k in
                                    ("type", "job_id", "provider_id", "round", "cells",
                                     "masked_b64")})


def publish(s: MaskSession, rnd: int, held: Vector, signing_key: Ed25519PrivateKey
            ) -> dict[str, Any]:
    """The provider's signed, masked indicator vector of round ``rnd``."""
    masked = (held.astype(np.uint64) + round_mask(s, rnd, len(held))).astype(U64)
    vec: dict[str, Any] = {"type": VECTOR_TYPE, "job_id": s.job_id,
                           "provider_id": s.provider_id, "round": rnd, "cells": len(held),
                           "masked_b64": base64.b64encode(masked.tobytes()).decode("ascii")}
    vec["signature"] = base64.b64encode(signing_key.sign(_signed(vec))).decode("ascii")
    return vec


def verify_vector(vec: Mapping[str, Any], job_id: str, rnd: int, size: int,
                  agent_key: Ed25519PublicKey | bytes) -> tuple[str, Vector]:
    """Check one signed vector (type, job, round, length, signature); its provider and
    masked values."""
    pid = vec.get("provider_id")
    if vec.get("type") != VECTOR_TYPE or not isinstance(pid, str):
        raise InvalidInput("type", "value", f"type: must be {VECTOR_TYPE!r}")
    if vec.get("job_id") != job_id:
        raise Conflict("a cell-holders vector of another joint job")
    if vec.get("round") != rnd:
        raise InvalidInput("round", "value", "round: not the round asked for")
    if vec.get("cells") != size:
        raise InvalidInput("cells", "layout", "cells: not the number of the job's cells")
    try:
        raw = base64.b64decode(str(vec.get("masked_b64")), validate=True)
        sig = base64.b64decode(str(vec.get("signature")), validate=True)
    except (ValueError, binascii.Error) as exc:
        raise InvalidInput("masked_b64", "format", "masked_b64: not base64") from exc
    if len(raw) != 8 * size:
        raise InvalidInput("masked_b64", "length",
                           "masked_b64: not one 64-bit word per cell of the job")
    vk = agent_key if isinstance(agent_key, Ed25519PublicKey) else \
        Ed25519PublicKey.from_public_bytes(agent_key)
    try:
        vk.verify(sig, _signed(vec))
    except InvalidSignature as exc:
        raise BadSignature(f"{pid}: cell-holders vector does not verify") from exc
    return pid, np.frombuffer(raw, dtype=U64).astype(np.uint64)


def holders(vectors: Sequence[Mapping[str, Any]], job_id: str, rnd: int, size: int,
            agent_keys: Mapping[str, Ed25519PublicKey | bytes]) -> Vector:
    """H_r: per cell, how many providers hold it -- every provider's vector verified, one
    per provider, the whole set (a missing vector would leave its masks in the sum)."""
    total = np.zeros(size, dtype=np.uint64)
    seen: set[str] = set()
    for vec in vectors:
        pid = str(vec.get("provider_id"))
        if pid not in agent_keys:
            raise BadSignature(f"no registered agent key for provider {pid!r}")
        pid, masked = verify_vector(vec, job_id, rnd, size, agent_keys[pid])
        if pid in seen:
            raise Conflict("two cell-holders vectors of one provider in a round")
        seen.add(pid)
        total += masked
    if seen != set(agent_keys):
        raise Conflict("the round's cell-holders vectors are not every provider's")
    if (total > len(seen)).any():
        # Masks that did not cancel (keys not the announced set): never read as counts.
        raise Conflict("the cell-holders vectors do not unmask")
    return total


def vectors_digest(vectors: Sequence[Mapping[str, Any]]) -> str:
    """Names a round's vector set for the ledger (no values in the clear)."""
    items = sorted([str(v["provider_id"]), str(v["masked_b64"])] for v in vectors)
    return hashlib.sha256(canonical(items)).hexdigest()


class CellHolderRounds:
    """One provider's side of the rounds: what it publishes, what it withdraws.

    ``kept_after`` gives the records the provider keeps after its own withdrawal, given
    the records withdrawn before it (``compute.local_aggregate.withdraw_small_cells``)."""

    def __init__(self, spec: Mapping[str, Any], df: Any, min_providers: int,
                 session: MaskSession, kept_after: Any) -> None:
        self.size = layout_size(spec)
        if self.size > MAX_CELLS:
            raise InvalidInput("spec", "too_many_cells",
                               f"more than {MAX_CELLS} explicit cells in one joint job")
        self.min_providers = min_providers
        self.session = session
        self.kept_after = kept_after
        self.cells = record_cells(spec, df)
        self.round = 0
        self.forced = np.zeros(self.size, dtype=bool)
        self.withdrawn = np.zeros(len(df), dtype=bool)
        self.kept = kept_after(self.withdrawn)

    def publish(self, signing_key: Ed25519PrivateKey) -> dict[str, Any]:
        return publish(self.session, self.round,
                       indicators(self.cells, self.kept, self.size), signing_key)

    def settle(self, vectors: Sequence[Mapping[str, Any]],
               agent_keys: Mapping[str, Ed25519PublicKey | bytes]) -> bool:
        """Take the round's vectors: True once no cell is newly forced (the rounds end),
        else withdraw the newly forced cells and move to the next round."""
        held = holders(vectors, self.session.job_id, self.round, self.size, agent_keys)
        new = (held > 0) & (held < self.min_providers) & ~self.forced
        if not new.any():
            return True
        if self.round + 1 >= MAX_ROUNDS:
            raise Conflict(f"the cell-holders rounds did not settle within {MAX_ROUNDS} "
                           "rounds: nothing was submitted")
        self.forced |= new
        self.withdrawn = records_in(self.cells, self.forced, len(self.withdrawn))
        self.kept = self.kept_after(self.withdrawn)
        self.round += 1
        return False
