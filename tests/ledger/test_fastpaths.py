"""The fast paths (driver-level appends, append_many, the audit's layout cut, the
built-in SHA-256 for nodes) agree with the plain implementations and reject what the
plain json parse rejects."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ledger import merkle
from ledger.audit import Auditor, audit_entries, check_entries
from ledger.db import make_engine, make_session_factory
from ledger.entry import ZERO_HASH_HEX, canonical_json, decode_entry
from ledger.errors import AuditError, InvalidEntryError
from ledger.log import TransparencyLog
from ledger.store import LedgerBase, nodes_t
from tests.ledger.conftest import ORIGIN
from tests.ledger.helpers import run_finished_body

ODD_ACTORS = ['party:"q"', "party:\\", "party:\n\t\x00", "party:医院\u2028\xa0", "a" * 256]


def test_node_sha256_is_sha256() -> None:
    for data in (b"", b"\x01" + bytes(64), bytes(range(256)) * 3):
        assert merkle.node_sha256(data).digest() == hashlib.sha256(data).digest()


def _append_both_ways(factory: sessionmaker[Session], log: TransparencyLog) -> None:
    items: list[tuple[str, str, dict[str, Any]]] = [
        ("test.event", actor, {"i": i, "s": actor}) for i, actor in enumerate(ODD_ACTORS * 9)]
    with factory() as s:
        for kind, actor, body in items[:5]:
            log.append(s, kind, actor, body)
        got = log.append_many(s, items[5:21])
        s.commit()
    assert [r.index for r in got] == list(range(5, 21))
    with factory() as s:
        assert log.append_many(s, []) == []
        log.append_many(s, items[21:])
        s.commit()
    n = len(items)
    with factory() as s:
        entries = log.entries(s, 0, n)
        assert log.size(s) == n and len(entries) == n
        assert audit_entries(entries).root == log.root(s) == merkle.root_hash(entries)
        for i, data in enumerate(entries):
            obj = decode_entry(data)
            assert (obj["index"], obj["actor"], obj["body"]["i"]) == (i, items[i][1], i)
            assert obj["prev"] == (merkle.leaf_hash(entries[i - 1]).hex() if i else ZERO_HASH_HEX)
        # Every complete subtree stored, and nothing else.
        stored = {(r.level, r.idx): bytes(r.hash) for r in s.execute(select(nodes_t))}
        expected = {}
        for level in range(1, n.bit_length()):
            for j in range(n >> level):
                leaves = entries[j << level:(j + 1) << level]
                expected[(level, j)] = merkle.root_hash(leaves)
        assert stored == expected
        for i in range(0, n, 7):
            merkle.verify_inclusion(merkle.leaf_hash(entries[i]), i, n,
                                    log.inclusion_proof(s, i, n), log.root(s))


def test_append_many_sqlite(factory: sessionmaker[Session], tlog: TransparencyLog) -> None:
    _append_both_ways(factory, tlog)


@pytest.mark.postgres
def test_append_many_postgres(pg_url: str) -> None:
    eng = make_engine(pg_url)
    LedgerBase.metadata.drop_all(eng)
    LedgerBase.metadata.create_all(eng)
    _append_both_ways(make_session_factory(eng), TransparencyLog(ORIGIN))
    eng.dispose()


def test_append_many_rolls_back_with_the_caller(
    factory: sessionmaker[Session], tlog: TransparencyLog
) -> None:
    with factory() as s:
        tlog.append_many(s, [("a.b", "x", {}), ("a.c", "y", {})])
        s.rollback()
    with factory() as s:
        assert tlog.size(s) == 0


def _entry(index: int = 0, actor: str = "party:1", body: Any = None) -> dict[str, Any]:
    return {"v": 1, "index": index, "ts": "2025-03-01T10:00:00.000000Z", "kind": "a.b",
            "actor": actor, "prev": ZERO_HASH_HEX, "body": {"k": 1} if body is None else body}


def _audit_error(data: bytes) -> AuditError:
    with pytest.raises(AuditError) as info:
        audit_entries([data])
    assert info.value.index == 0
    return info.value


def test_audit_accepts_canonical_entries_with_awkward_strings() -> None:
    bodies: list[Any] = [{}, {"x": ',"index":0,"kind":"a.b"'}, {"n": [1, 2.5, None, True]},
                         {"deep": {"a": {"b": ["\u0000", '","body":']}}}]
    for actor in [*ODD_ACTORS, ',"index":0,"kind":"a.b","prev":"', '","body":{}']:
        for body in bodies:
            data = canonical_json(_entry(actor=actor, body=body))
            assert audit_entries([data]).size == 1, data
            assert check_entries(0, [data]).error is None


@pytest.mark.parametrize("mutate", [
    lambda d: d.replace(b'"body":', b'"body": '),                      # whitespace
    lambda d: d.replace(b'{"actor"', b'{ "actor"'),
    lambda d: d + b" ",
    lambda d: d.replace(b'"v":1}', b'"v":1.0}'),                         # number forms
    lambda d: d.replace(b'"index":0', b'"index":00'),
    lambda d: d.replace(b'"index":0', b'"index":-0'),
    lambda d: d.replace(b'"v":1}', b'"v":1,"v":1}'),                     # duplicate key
    lambda d: d.replace(b'{"actor":"party:1",', b'{'),                   # missing field
    lambda d: d.replace(b'{"k":1}', b'{"k":1},"extra":{}'),              # extra field
    lambda d: d.replace(b'{"k":1}', b'{"k":1}}'),                        # trailing junk
    lambda d: d.replace(b'{"k":1}', b'{"k":NaN}'),                       # not JSON
    lambda d: d.replace(b'{"k":1}', b'[1]'),                             # body not object
    lambda d: d.replace(b'party:1', b'party:\x01'),                      # raw control char
    lambda d: d.replace(b'party:1', b'party:\\x'),                       # bad escape
    lambda d: d.replace(b'party:1', b'party:1\\'),                       # escapes the quote
    lambda d: d.replace(b'party:1', b''),                                # empty actor
    lambda d: d.replace(b'party:1', b'\xff'),                            # not UTF-8
    lambda d: d.replace(b'"a.b"', b'"a.b\\n"'),                          # kind + newline
    lambda d: d.replace(b'"a.b"', b'"A.b"'),
    lambda d: d.replace(b'.000000Z', b'.000000Z\\n'),                    # ts forms
    lambda d: d.replace(b'.000000Z', b'Z'),
    lambda d: d.replace(b'"2025', b'"\\u0032025'),
    lambda d: d.replace(ZERO_HASH_HEX.encode(), b"0" * 63),              # prev forms
    lambda d: d.replace(b'"prev":"', b'"prev":"\\u0030').replace(b'0","ts"', b'","ts"', 1),
    lambda d: json.dumps(json.loads(d), sort_keys=False).encode(),      # key order
])
def test_audit_rejects_every_non_canonical_top_level(mutate: Any) -> None:
    data = canonical_json(_entry())
    assert audit_entries([data]).size == 1
    bad = mutate(data)
    assert bad != data
    _audit_error(bad)


def test_run_finished_checked_on_the_fast_path() -> None:
    body = run_finished_body(0)
    assert audit_entries([canonical_json({**_entry(), "kind": "run.finished",
                                          "body": body})]).kinds == {"run.finished": 1}
    del body["audit"]["user"]
    err = _audit_error(canonical_json({**_entry(), "kind": "run.finished", "body": body}))
    assert "audit.user" in err.reason


def test_chunked_tree_matches_for_every_split() -> None:
    entries, prev = [], ZERO_HASH_HEX
    for i in range(70):
        data = canonical_json({**_entry(i, body={"i": i}), "prev": prev})
        entries.append(data)
        prev = merkle.leaf_hash(data).hex()
    for step in (1, 3, 8, 13, 64):
        a = Auditor()
        for start in range(0, len(entries), step):
            a.merge(check_entries(start, entries[start:start + step]))
        assert a.result().root == merkle.root_hash(entries), step



def test_writer_rejects_what_the_audit_rejects(
    factory: sessionmaker[Session], tlog: TransparencyLog
) -> None:
    with factory() as s, pytest.raises(InvalidEntryError):
        tlog.append(s, "job.submitted\n", "system", {})


def test_trailing_newlines_are_rejected_by_the_decoder() -> None:
    import json

    from ledger.entry import check_run_finished, decode_entry
    from ledger.errors import MalformedEntryError

    base = {"actor": "a", "body": {}, "index": 0, "kind": "x.y", "prev": "0" * 64,
            "ts": "2026-01-01T00:00:00.000000Z", "v": 1}
    for key, value in (("kind", "x.y\n"), ("prev", "0" * 64 + "\n"),
                       ("ts", "2026-01-01T00:00:00.000000Z\n")):
        bad = json.dumps({**base, key: value}, sort_keys=True, separators=(",", ":"))
        with pytest.raises(MalformedEntryError):
            decode_entry(bad.encode())
    with pytest.raises(MalformedEntryError):
        check_run_finished({"job_id": "j", "permit_id": "p", "runner_image": "i",
                            "state": "released", "script_sha256": "a" * 64 + "\n",
                            "input_sha256": "a" * 64})
