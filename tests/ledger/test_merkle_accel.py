"""The optional C accelerator (ledger/_merkle_accel.c) agrees with the pure-Python
reference: same roots, and the same errors for every tampered or malformed proof.

Both paths run in one process: ``merkle.accel`` is switched between the extension and
None, which is what ``LEDGER_PURE_PYTHON=1`` does at import.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import audit, merkle
from ledger.entry import ZERO_HASH_HEX, canonical_json
from ledger.errors import VerificationError
from ledger.treemath import inclusion_ranges, split_point

try:
    from ledger import _merkle_accel as _accel_module
except ImportError:  # pragma: no cover - depends on the build
    pytest.skip("ledger._merkle_accel is not built (no C compiler or OpenSSL headers "
                "at install time); the pure-Python path is tested by test_merkle.py",
                allow_module_level=True)

ACCEL: ModuleType = _accel_module
ROOT_DIR = Path(__file__).resolve().parents[2]


@contextmanager
def _using(accel: ModuleType | None) -> Iterator[None]:
    old = merkle.accel
    merkle.accel = accel
    try:
        yield
    finally:
        merkle.accel = old


def _outcome(accel: ModuleType | None, *args: Any) -> str:
    """'ok' or the class name of the ledger error verify_inclusion raised."""
    with _using(accel):
        try:
            merkle.verify_inclusion(*args)
        except VerificationError as exc:
            return type(exc).__name__
    return "ok"


def _agree(*args: Any) -> str:
    """Run both paths; they must give the same outcome, which is returned."""
    fast, pure = _outcome(ACCEL, *args), _outcome(None, *args)
    assert fast == pure, (fast, pure, args[1:3])
    return fast


class _Tree:
    """A tree of ``size`` leaves with memoised subtree hashes (RFC 9162 §2.1.1)."""

    def __init__(self, size: int) -> None:
        self.leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
        self.mth = cache(self._mth)
        self.root = self.mth(0, size)

    def _mth(self, lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return self.leaves[lo]
        k = lo + split_point(hi - lo)
        return merkle.node_hash(self.mth(lo, k), self.mth(k, hi))

    def proof(self, index: int) -> list[bytes]:
        return [self.mth(lo, hi) for lo, hi in inclusion_ranges(index, len(self.leaves))]


class _BytesSub(bytes):
    pass


# Each is refused in a proof by both paths (exact type bytes, exactly 32 long).
BAD_HASHES: list[Any] = [b"\x00" * 31, b"\x00" * 33, b"", bytearray(32), memoryview(bytes(32)),
                         "0" * 32, None, 0, _BytesSub(bytes(32))]


def test_accelerator_is_active_unless_forced_pure() -> None:
    expected = os.environ.get("LEDGER_PURE_PYTHON", "") in ("", "0")
    assert merkle.ACCELERATED is expected
    assert (merkle.accel is ACCEL) is expected


@pytest.mark.parametrize(("env", "active"), [("1", False), ("0", True), ("", True)])
def test_env_var_selects_the_path(env: str, active: bool) -> None:
    out = subprocess.run(
        [sys.executable, "-c", "from ledger import merkle; print(merkle.ACCELERATED)"],
        env={**os.environ, "LEDGER_PURE_PYTHON": env}, cwd=ROOT_DIR,
        capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(active)


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.integers(min_value=0, max_value=255))
def test_paths_agree_on_every_index(size: int, bit: int) -> None:
    tree = _Tree(size)
    root = tree.root
    if size <= 64:
        assert root == merkle.root_hash([i.to_bytes(4, "big") for i in range(size)])
    for index in range(size):
        lh, proof = tree.leaves[index], tree.proof(index)
        assert _agree(lh, index, size, proof, root) == "ok"
        assert _agree(lh, index, size, tuple(proof), root) == "ok"
        # A flipped bit anywhere: a valid shape that leads elsewhere.
        for j in range(len(proof)):
            bad = list(proof)
            bad[j] = bytes([bad[j][0] ^ (1 << (bit % 8))]) + bad[j][1:]
            assert _agree(lh, index, size, bad, root) == "VerificationError"
        flipped = bytearray(lh)
        flipped[bit % 32] ^= 1 << (bit % 8)
        assert _agree(bytes(flipped), index, size, proof, root) == "VerificationError"
        if index + 1 < size:
            assert _agree(tree.leaves[index + 1], index, size, proof, root) \
                == "VerificationError"
        # Malformed proofs: one hash too many or too few, a bad hash at some position.
        assert _agree(lh, index, size, [*proof, root], root) == "MalformedProofError"
        if proof:
            assert _agree(lh, index, size, proof[:-1], root) == "MalformedProofError"
            j = index % len(proof)
            for value in BAD_HASHES:
                bad = list(proof)
                bad[j] = value
                assert _agree(lh, index, size, bad, root) == "MalformedProofError"
    lh = tree.leaves[0]
    for index in (size, size + 1, -1):
        assert _agree(lh, index, size, tree.proof(0), root) == "MalformedProofError"


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=2, max_value=300), st.data())
def test_paths_agree_on_wrong_positions(size: int, data: st.DataObject) -> None:
    """A real proof presented for another index is refused by both; for another size
    both agree (a size with the same proof shape, e.g. index 0 of 129 or 130 leaves,
    leads to the same root: the signed checkpoint is what binds the size)."""
    tree = _Tree(size)
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    other = data.draw(st.integers(min_value=0, max_value=size - 1))
    new_size = data.draw(st.integers(min_value=1, max_value=2 * size))
    lh, proof = tree.leaves[index], tree.proof(index)
    if other != index:
        assert _agree(lh, other, size, proof, tree.root) != "ok"
    _agree(lh, index, new_size, proof, tree.root)


def test_bad_leaf_or_root_refused_by_both() -> None:
    tree = _Tree(5)
    proof = tree.proof(2)
    for value in BAD_HASHES[:-1]:  # a bytes subclass passes isinstance, as before
        assert _agree(value, 2, 5, proof, tree.root) == "MalformedProofError"
        assert _agree(tree.leaves[2], 2, 5, proof, value) == "MalformedProofError"
    sub = _BytesSub(tree.leaves[2])
    assert _agree(sub, 2, 5, proof, tree.root) == "ok"
    assert _agree(tree.leaves[2], 2, 0, [], tree.root) == "MalformedProofError"


def test_index_beyond_64_bits_falls_back_to_python() -> None:
    """The C code takes a 64-bit index; bigger ones (no such log exists) stay exact."""
    lh = merkle.leaf_hash(b"x")
    for index, size in ((2**66 + 5, 2**70), (2**64 - 1, 2**64), (3, 2**65 + 1)):
        inner = (index ^ (size - 1)).bit_length()
        n = inner + bin(index >> inner).count("1")
        proof = [merkle.leaf_hash(bytes([i])) for i in range(n)]
        root = merkle._inclusion_root_py(lh, index, inner, proof)
        assert _agree(lh, index, size, proof, root) == "ok"
        assert _agree(lh, index, size, proof, lh) == "VerificationError"


def test_inclusion_root_validates_its_arguments() -> None:
    h = merkle.leaf_hash(b"x")
    assert ACCEL.inclusion_root(h, 0, 0, []) == h
    bad_calls: list[tuple[type[Exception], tuple[Any, ...]]] = [
        (TypeError, (h, 0, 0)),
        (TypeError, (h, 0, 0, [], None)),
        (TypeError, ("h" * 32, 0, 0, [])),
        (ValueError, (h[:31], 0, 0, [])),
        (TypeError, (h, "0", 0, [])),
        (OverflowError, (h, -1, 0, [])),
        (OverflowError, (h, 2**64, 0, [])),
        (ValueError, (h, 0, 2, [h])),
        (ValueError, (h, 0, -1, [h])),
        (TypeError, (h, 0, 0, 5)),
        (TypeError, (h, 0, 0, [h, bytearray(h)])),
        (ValueError, (h, 0, 0, [h, h + b"\x00"])),
    ]
    for exc, args in bad_calls:
        with pytest.raises(exc):
            ACCEL.inclusion_root(*args)


def _perfect_root_py(hashes: Sequence[bytes]) -> bytes:
    with _using(None):
        return audit._perfect_root(list(hashes))


def test_perfect_root_matches_reference() -> None:
    for n in (1, 2, 4, 8, 64, 256, 1024):
        leaves = [i.to_bytes(4, "big") for i in range(n)]
        hashes = [merkle.leaf_hash(d) for d in leaves]
        assert ACCEL.perfect_root(hashes) == _perfect_root_py(hashes) \
            == merkle.root_hash(leaves)
        assert ACCEL.perfect_root(tuple(hashes)) == merkle.root_hash(leaves)
    h = merkle.leaf_hash(b"")
    for bad in ([], [h] * 3, [h] * 6):
        with pytest.raises(ValueError, match="power of two"):
            ACCEL.perfect_root(bad)
    for value in BAD_HASHES:
        exc = ValueError if type(value) is bytes else TypeError
        with pytest.raises(exc):
            ACCEL.perfect_root([h, value])
    with pytest.raises(TypeError):
        ACCEL.perfect_root(None)


def test_leaf_hashes_match_reference() -> None:
    entries = [b"", b"\x00", bytes(range(256)) * 9, *(i.to_bytes(3, "big") for i in range(50))]
    assert ACCEL.leaf_hashes(entries) == [merkle.leaf_hash(d) for d in entries]
    assert ACCEL.leaf_hashes(()) == []
    for bad in (bytearray(b"x"), "x", None, _BytesSub(b"x")):
        with pytest.raises(TypeError):
            ACCEL.leaf_hashes([b"a", bad])


def _log(n: int) -> list[bytes]:
    entries, prev = [], ZERO_HASH_HEX
    for i in range(n):
        data = canonical_json({"v": 1, "index": i, "ts": f"2025-03-01T10:00:{i // 60:02d}."
                               f"{i % 60:06d}Z", "kind": "a.b", "actor": "party:1",
                               "prev": prev, "body": {"i": i}})
        entries.append(data)
        prev = merkle.leaf_hash(data).hex()
    return entries


def test_audit_checks_agree_on_both_paths() -> None:
    entries = _log(70)
    broken = list(entries)
    broken[37] = broken[37].replace(b'"i":37', b'"i":38')  # breaks entry 38's prev
    for start, run in ((0, entries), (0, broken), (5, entries[5:40]), (64, entries[64:])):
        with _using(ACCEL):
            fast = audit.check_entries(start, run)
        with _using(None):
            pure = audit.check_entries(start, run)
        assert fast == pure
    assert pure.subtrees == [(2, merkle.root_hash(entries[64:68])),
                             (1, merkle.root_hash(entries[68:70]))]
    with _using(ACCEL):
        assert audit.audit_entries(entries).root == merkle.root_hash(entries)
        assert audit.check_entries(0, broken).error == (
            38, "prev does not match the previous entry's hash")


def test_audit_non_bytes_entry_fails_the_same_on_both_paths() -> None:
    run: list[Any] = [*_log(9), "not bytes"]
    for accel in (ACCEL, None):
        with _using(accel), pytest.raises(AttributeError):  # as before the accelerator
            audit.check_entries(0, run)
