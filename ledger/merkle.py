"""Merkle tree hashes and proofs of RFC 9162 §2.1 (identical to RFC 6962 §2.1), SHA-256.

Byte-compatible with Certificate Transparency and transparency-dev/merkle. Standard library
only: the regulator's verifier imports this module.

The optional C extension ``ledger._merkle_accel`` (OpenSSL SHA-256, built by setup.py when
a compiler and the libssl headers are present) computes the node hashes of an inclusion
proof, and the audit's leaf hashes and perfect subtrees; this module keeps every check and
the final comparison, and its pure-Python code is the reference and the fallback.
``ACCELERATED`` says which one runs; ``LEDGER_PURE_PYTHON=1`` forces the pure code.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable, Sequence
from hashlib import sha256
from typing import Protocol

from ledger.errors import MalformedProofError, VerificationError
from ledger.treemath import consistency_ranges, inclusion_ranges

HASH_SIZE = 32
EMPTY_ROOT = sha256(b"").digest()


class _Hash(Protocol):
    def digest(self) -> bytes: ...


def _small_input_sha256() -> Callable[[bytes], _Hash]:
    """The SHA-256 constructor for 65-byte node inputs: CPython's built-in one.

    Same function, same digests as ``hashlib.sha256``; it skips OpenSSL's per-call
    context set-up, which is most of the cost of hashing 65 bytes (~1.0 vs 1.2 µs on the
    development VM). ``hashlib.sha256`` (OpenSSL) stays faster for entries (~330 bytes).
    """
    for name in ("_sha2", "_sha256"):  # CPython >= 3.12, <= 3.11
        try:
            ctor: Callable[[bytes], _Hash] = importlib.import_module(name).sha256
        except (ImportError, AttributeError):
            continue
        if ctor(b"abc").digest() == sha256(b"abc").digest():
            return ctor
    return sha256


node_sha256 = _small_input_sha256()


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 §2.1.1: MTH({d0}) = HASH(0x00 || d0)."""
    return sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1: HASH(0x01 || MTH(left) || MTH(right))."""
    return node_sha256(b"\x01" + left + right).digest()


def _mth(hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH over already leaf-hashed D[lo:hi], folding the aligned perfect subtrees."""
    if hi == lo:
        return EMPTY_ROOT
    stack: list[bytes] = []
    for i in range(lo, hi):
        h = hashes[i]
        count = i - lo + 1
        while count & 1 == 0:
            h = node_hash(stack.pop(), h)
            count >>= 1
        stack.append(h)
    h = stack.pop()
    while stack:
        h = node_hash(stack.pop(), h)
    return h


def root_hash(leaves: Sequence[bytes]) -> bytes:
    """RFC 9162 §2.1.1 Merkle Tree Hash of raw entries."""
    hashes = [leaf_hash(d) for d in leaves]
    return _mth(hashes, 0, len(hashes))


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(index, D[n])."""
    if not 0 <= index < len(leaves):
        raise MalformedProofError(f"index {index} outside tree of size {len(leaves)}")
    hashes = [leaf_hash(d) for d in leaves]
    return [_mth(hashes, lo, hi) for lo, hi in inclusion_ranges(index, len(hashes))]


def consistency_proof(old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.4.1 PROOF(m, D[n]); empty when m is 0 or n."""
    if not 0 <= old_size <= len(leaves):
        raise MalformedProofError(f"old size {old_size} outside 0..{len(leaves)}")
    hashes = [leaf_hash(d) for d in leaves]
    return [_mth(hashes, lo, hi) for lo, hi in consistency_ranges(old_size, len(hashes))]


class Accelerator(Protocol):
    """The C extension's interface (see ledger/_merkle_accel.c and .pyi)."""

    def inclusion_root(
        self, leaf_hash: bytes, index: int, inner: int, proof: Sequence[bytes], /
    ) -> bytes: ...

    def perfect_root(self, hashes: Sequence[bytes], /) -> bytes: ...

    def leaf_hashes(self, entries: Sequence[bytes], /) -> list[bytes]: ...


def _load_accelerator() -> Accelerator | None:
    """The C extension if it is built, allowed and agrees with this module on a sample."""
    if os.environ.get("LEDGER_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from ledger import _merkle_accel  # optional C extension: may not be built
    except ImportError:
        return None
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    ab = node_hash(a, b)
    c = node_hash(ab, ab)
    try:  # both placements of a sibling, the border part and a perfect root
        agrees = (_merkle_accel.perfect_root([a, b, a, b]) == c
                  and _merkle_accel.inclusion_root(a, 0, 2, [b, ab]) == c
                  and _merkle_accel.inclusion_root(b, 3, 2, [a, ab]) == c
                  and _merkle_accel.inclusion_root(b, 1, 1, [a, ab]) == c)
    except Exception:
        agrees = False
    if not agrees:
        warnings.warn("ledger._merkle_accel disagrees with ledger.merkle; not using it",
                      RuntimeWarning, stacklevel=2)
        return None
    return _merkle_accel


accel = _load_accelerator()
ACCELERATED = accel is not None


def _check_hash(h: bytes, what: str) -> None:
    if not isinstance(h, bytes) or len(h) != HASH_SIZE:
        raise MalformedProofError(f"{what} is not a {HASH_SIZE}-byte hash")


def _inclusion_root_py(leaf_hash: bytes, index: int, inner: int, proof: Sequence[bytes]
                       ) -> bytes:
    """The root ``proof`` leads to: the reference for ``_merkle_accel.inclusion_root``.

    The first ``inner`` hashes are siblings below the point where the paths to index and
    size-1 part, left or right as index's bits say; the rest are left siblings on the
    right border. Each hash is checked (exactly ``bytes``, 32 long) before it is used.
    """
    sha, one, r, bits, size = node_sha256, b"\x01", leaf_hash, index, HASH_SIZE
    for p in proof[:inner]:
        if type(p) is not bytes or len(p) != size:
            raise MalformedProofError("proof hash is not a 32-byte hash")
        r = sha(one + p + r).digest() if bits & 1 else sha(one + r + p).digest()
        bits >>= 1
    for p in proof[inner:]:
        if type(p) is not bytes or len(p) != size:
            raise MalformedProofError("proof hash is not a 32-byte hash")
        r = sha(one + p + r).digest()
    return r


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 §2.1.3.2: check that ``leaf_hash`` sits at ``index`` in the tree ``root``."""
    _check_hash(leaf_hash, "leaf hash")
    _check_hash(root, "root")
    if index < 0 or index >= size:
        raise MalformedProofError(f"index {index} outside tree of size {size}")
    # The proof length is fixed by (index, size): check it up front so the hashing need
    # not (this function is on the regulator's hot path). ``inner``: see _inclusion_root_py.
    inner = (index ^ (size - 1)).bit_length()
    expected = inner + (index >> inner).bit_count()
    if len(proof) != expected:
        raise MalformedProofError(f"inclusion proof has {len(proof)} hashes, needs {expected}")
    if accel is None:
        r = _inclusion_root_py(leaf_hash, index, inner, proof)
    else:
        try:  # the C code checks each proof hash as _inclusion_root_py does
            r = accel.inclusion_root(leaf_hash, index, inner, proof)
        except (TypeError, ValueError) as exc:
            raise MalformedProofError(str(exc)) from None
        except OverflowError:  # index >= 2**64 does not fit the C code; stay exact
            r = _inclusion_root_py(leaf_hash, index, inner, proof)
    if r != root:
        raise VerificationError("inclusion proof does not lead to the root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2: check that the tree ``old_root`` is a prefix of ``new_root``."""
    _check_hash(old_root, "old root")
    _check_hash(new_root, "new root")
    for p in proof:
        _check_hash(p, "proof hash")
    if old_size < 0 or new_size < old_size:
        raise MalformedProofError(f"sizes {old_size} -> {new_size} go backwards")
    if old_size == new_size:
        if proof:
            raise MalformedProofError("proof between equal sizes must be empty")
        if old_root != new_root:
            raise VerificationError("same size, different roots: the log forked")
        return
    if old_size == 0:
        # Every tree extends the empty tree; RFC 9162 §2.1.4 defines no proof for it.
        if proof:
            raise MalformedProofError("proof from the empty tree must be empty")
        return
    if not proof:
        raise MalformedProofError("empty consistency proof")
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise MalformedProofError("consistency proof too long")
        if fn & 1 or fn == sn:
            fr = node_sha256(b"\x01" + c + fr).digest()
            sr = node_sha256(b"\x01" + c + sr).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_sha256(b"\x01" + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MalformedProofError("consistency proof too short")
    if fr != old_root or sr != new_root:
        raise VerificationError("consistency proof does not match the roots")
