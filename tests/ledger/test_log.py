from __future__ import annotations

import json

import pytest
from sqlalchemy.orm import Session, sessionmaker

from ledger import merkle
from ledger.entry import ZERO_HASH_HEX, decode_entry
from ledger.errors import EntryNotFoundError, InvalidEntryError, ProofRequestError
from ledger.log import TransparencyLog
from tests.ledger.conftest import fill


def test_append_returns_result_and_builds_chain(
    factory: sessionmaker[Session], tlog: TransparencyLog
) -> None:
    with factory() as s:
        r0 = tlog.append(s, "party.created", "system", {"party_id": "p1", "name": "医院"})
        r1 = tlog.append(s, "dataset.registered", "p1", {"dataset_id": "d1"})
        s.commit()
    assert (r0.index, r1.index) == (0, 1)
    assert r0.timestamp <= r1.timestamp and r0.timestamp.endswith("Z")
    with factory() as s:
        e0, e1 = tlog.entries(s, 0, 2)
        assert merkle.leaf_hash(e0) == r0.leaf_hash
        d0, d1 = decode_entry(e0), decode_entry(e1)
        assert d0["prev"] == ZERO_HASH_HEX and d1["prev"] == r0.leaf_hash.hex()
        assert d0["body"]["name"] == "医院" and d1["kind"] == "dataset.registered"
        assert tlog.find_index(s, r1.leaf_hash) == 1
        assert tlog.size(s) == 2
        assert e0 == json.dumps(d0, sort_keys=True, separators=(",", ":"),
                                ensure_ascii=False).encode()


def test_append_does_not_commit(factory: sessionmaker[Session], tlog: TransparencyLog) -> None:
    with factory() as s:
        tlog.append(s, "job.submitted", "u1", {"job_id": "j1"})
        s.rollback()
    with factory() as s:
        assert tlog.size(s) == 0
        tlog.append(s, "job.submitted", "u1", {"job_id": "j1"})
        s.commit()
    with factory() as s:
        assert tlog.size(s) == 1


def test_proofs_match_in_memory_tree(factory: sessionmaker[Session], tlog: TransparencyLog) -> None:
    fill(factory, tlog, 37)
    with factory() as s:
        leaves = tlog.entries(s, 0, 37)
        for size in range(38):
            assert tlog.root(s, size) == merkle.root_hash(leaves[:size])
            for index in range(size):
                assert tlog.inclusion_proof(s, index, size) == merkle.inclusion_proof(
                    index, leaves[:size])
            for old in range(size + 1):
                assert tlog.consistency_proof(s, old, size) == merkle.consistency_proof(
                    old, leaves[:size])
        assert tlog.root(s) == merkle.root_hash(leaves)


def test_bad_requests_raise_ledger_errors(
    factory: sessionmaker[Session], tlog: TransparencyLog
) -> None:
    fill(factory, tlog, 3)
    with factory() as s:
        with pytest.raises(ProofRequestError):
            tlog.inclusion_proof(s, 3, 3)
        with pytest.raises(ProofRequestError):
            tlog.inclusion_proof(s, 0, 4)
        with pytest.raises(ProofRequestError):
            tlog.consistency_proof(s, 3, 2)
        with pytest.raises(ProofRequestError):
            tlog.root(s, 5)
        with pytest.raises(ProofRequestError):
            tlog.entries(s, 2, 1)
        with pytest.raises(EntryNotFoundError):
            tlog.find_index(s, bytes(32))
        for kind, actor, body in [("Bad Kind", "a", {}), ("a.b", "", {}),
                                  ("a.b", "a", {"x": float("nan")}), ("a.b", "a", {"x": {1}})]:
            with pytest.raises(InvalidEntryError):
                tlog.append(s, kind, actor, body)  # type: ignore[arg-type]


def test_timestamps_never_decrease(factory: sessionmaker[Session], tlog: TransparencyLog,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    fill(factory, tlog, 2)
    import ledger.log as logmod

    monkeypatch.setattr(logmod, "now_ts", lambda: "2000-01-01T00:00:00.000000Z")
    with factory() as s:
        r = tlog.append(s, "clock.skewed", "system", {})
        s.commit()
        first = decode_entry(tlog.entries(s, 1, 2)[0])["ts"]
    assert r.timestamp == first
