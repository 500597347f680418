from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.errors import LedgerError, VerificationError

h = bytes.fromhex

# RFC 6962 test tree as used by transparency-dev/merkle and Go certificate-transparency.
LEAVES = [h(x) for x in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                         "606162636465666768696a6b6c6d6e6f"]]
ROOTS = [h(x) for x in [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]]
INCLUSION = [  # (leaf index, tree size, path)
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (0, 1, []),
]
CONSISTENCY = [  # (old size, new size, path)
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (1, 1, []),
]


def test_roots_match_reference() -> None:
    for n in range(9):
        assert merkle.root_hash(LEAVES[:n]) == ROOTS[n]


def test_leaf_and_node_hash() -> None:
    assert merkle.leaf_hash(b"") == ROOTS[1]
    assert merkle.node_hash(merkle.leaf_hash(LEAVES[0]), merkle.leaf_hash(LEAVES[1])) == ROOTS[2]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_inclusion_vectors(index: int, size: int, path: list[str]) -> None:
    proof = merkle.inclusion_proof(index, LEAVES[:size])
    assert proof == [h(p) for p in path]
    merkle.verify_inclusion(merkle.leaf_hash(LEAVES[index]), index, size, proof, ROOTS[size])


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY)
def test_consistency_vectors(old: int, new: int, path: list[str]) -> None:
    proof = merkle.consistency_proof(old, LEAVES[:new])
    assert proof == [h(p) for p in path]
    merkle.verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)


def _inclusion_mutations(index: int, size: int, proof: list[bytes], root: bytes, lh: bytes
                         ) -> Iterator[tuple[int, int, list[bytes], bytes, bytes]]:
    yield index + 1, size, proof, root, lh
    if index:
        yield index - 1, size, proof, root, lh
    yield index ^ 2, size, proof, root, lh
    yield index, size * 2, proof, root, lh
    yield index, size // 2, proof, root, lh
    yield index, size, proof, root, merkle.leaf_hash(b"wrong")
    yield index, size, proof, ROOTS[0], lh
    yield index, size, [*proof, root], root, lh
    yield index, size, [root, *proof], root, lh
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 8]) + bad[i][1:]
        yield index, size, bad, root, lh
    if proof:
        yield index, size, proof[:-1], root, lh


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_inclusion_rejects_mutations(index: int, size: int, path: list[str]) -> None:
    proof = [h(p) for p in path]
    lh = merkle.leaf_hash(LEAVES[index])
    for i, n, p, r, leaf in _inclusion_mutations(index, size, proof, ROOTS[size], lh):
        if (i, n, p, r, leaf) == (index, size, proof, ROOTS[size], lh):
            continue
        with pytest.raises(VerificationError):
            merkle.verify_inclusion(leaf, i, n, p, r)


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY[:4])
def test_consistency_rejects_mutations(old: int, new: int, path: list[str]) -> None:
    proof = [h(p) for p in path]
    r1, r2 = ROOTS[old], ROOTS[new]
    cases = [
        (old - 1, new, r1, r2, proof), (old + 1, new, r1, r2, proof),
        (old, new * 2, r1, r2, proof), (old, new // 2, r1, r2, proof),
        (old, new, r2, r1, proof), (old, new, ROOTS[0], r2, proof),
        (old, new, r1, r2, []), (old, new, r1, r2, [*proof, r1]),
        (old, new, r1, r2, [r2, *proof]), (old, new, r1, r2, proof[:-1]),
    ]
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 16]) + bad[i][1:]
        cases.append((old, new, r1, r2, bad))
    for o, n, a, b, p in cases:
        with pytest.raises(VerificationError):
            merkle.verify_consistency(o, n, a, b, p)


def test_malformed_inputs_raise_ledger_errors() -> None:
    lh = merkle.leaf_hash(b"x")
    for args in [
        (lh[:31], 0, 1, [], lh), (lh, 0, 1, [], b"short"), (lh, 1, 1, [], lh),
        (lh, -1, 1, [], lh), (lh, 0, 0, [], lh), (lh, 0, 2, [b"x" * 31], lh),
    ]:
        with pytest.raises(VerificationError):
            merkle.verify_inclusion(*args)
    with pytest.raises(VerificationError):
        merkle.verify_consistency(2, 1, lh, lh, [])
    with pytest.raises(VerificationError):
        merkle.verify_consistency(1, 1, lh, lh, [lh])
    with pytest.raises(VerificationError):
        merkle.verify_consistency(0, 3, lh, lh, [lh])
    with pytest.raises(VerificationError):
        merkle.verify_consistency(1, 2, lh, lh, ["not bytes"])  # type: ignore[list-item]
    with pytest.raises(LedgerError):
        merkle.inclusion_proof(3, LEAVES[:3])
    with pytest.raises(LedgerError):
        merkle.consistency_proof(4, LEAVES[:3])


def _naive_mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 written literally, as an independent oracle."""
    if not leaves:
        return merkle.EMPTY_ROOT
    if len(leaves) == 1:
        return merkle.leaf_hash(leaves[0])
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return merkle.node_hash(_naive_mth(leaves[:k]), _naive_mth(leaves[k:]))


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.data())
def test_property_inclusion(size: int, data: st.DataObject) -> None:
    leaves = [i.to_bytes(4, "big") for i in range(size)]
    root = merkle.root_hash(leaves)
    assert root == _naive_mth(leaves)
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    proof = merkle.inclusion_proof(index, leaves)
    merkle.verify_inclusion(merkle.leaf_hash(leaves[index]), index, size, proof, root)
    other = data.draw(st.integers(min_value=0, max_value=size - 1))
    if other != index:
        with pytest.raises(VerificationError):
            merkle.verify_inclusion(merkle.leaf_hash(leaves[other]), index, size, proof, root)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.data())
def test_property_consistency(size: int, data: st.DataObject) -> None:
    leaves = [i.to_bytes(4, "big") for i in range(size)]
    old = data.draw(st.integers(min_value=0, max_value=size))
    proof = merkle.consistency_proof(old, leaves)
    old_root, new_root = merkle.root_hash(leaves[:old]), merkle.root_hash(leaves)
    merkle.verify_consistency(old, size, old_root, new_root, proof)
    if 0 < old < size:
        forked = list(leaves)
        forked[data.draw(st.integers(min_value=0, max_value=old - 1))] = b"fork"
        with pytest.raises(VerificationError):
            merkle.verify_consistency(old, size, merkle.root_hash(forked[:old]), new_root, proof)


def test_all_small_sizes_exhaustively() -> None:
    for size in range(1, 34):
        leaves = [bytes([i]) for i in range(size)]
        root = merkle.root_hash(leaves)
        for i in range(size):
            merkle.verify_inclusion(merkle.leaf_hash(leaves[i]), i, size,
                                    merkle.inclusion_proof(i, leaves), root)
        for old in range(size + 1):
            merkle.verify_consistency(old, size, merkle.root_hash(leaves[:old]), root,
                                      merkle.consistency_proof(old, leaves))
