from __future__ import annotations

import base64
import json
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, text, update
from sqlalchemy.orm import Session, sessionmaker

from ledger import api_payloads as api
from ledger import audit
from ledger import errors as errors_module
from ledger.audit import Checked, audit_entries, default_workers
from ledger.checkpoint import CheckpointSigner
from ledger.checkpointer import sign_checkpoint
from ledger.entry import canonical_json, decode_entry
from ledger.errors import (
    AuditError,
    AuditIncompleteError,
    CheckpointUnavailableError,
    EntryNotFoundError,
    LedgerError,
    MalformedEntryError,
    ProofRequestError,
    QuorumError,
    SequencerTimeoutError,
    VerificationError,
    WitnessError,
)
from ledger.log import TransparencyLog
from ledger.merkle import verify_consistency, verify_inclusion
from ledger.note import generate_signer
from ledger.receipt import verify_receipt
from ledger.store import entries_t, head_t
from ledger.verify_cli import check_new_checkpoint, main, run_audit
from tests.ledger.conftest import ORIGIN
from tests.ledger.helpers import fill_realistic, run_finished_body
from tests.ledger.test_http_and_schema import ROOT, TOKEN, serve_payloads

N = 30


@pytest.fixture
def filled(factory: sessionmaker[Session], tlog: TransparencyLog) -> api.LocalSource:
    fill_realistic(factory, tlog, N)
    with factory() as s:
        sign_checkpoint(tlog, s)
        s.commit()
    return api.LocalSource(tlog, factory)


def _tamper(factory: sessionmaker[Session], stmt: object) -> None:
    with factory() as s:
        s.execute(stmt)  # type: ignore[call-overload]
        s.commit()


def test_payload_shapes(filled: api.LocalSource, factory: sessionmaker[Session],
                        tlog: TransparencyLog, signer: CheckpointSigner) -> None:
    with factory() as s:
        assert api.public_key_text(tlog) == signer.vkey() + "\n"
        page = api.entries_page(tlog, s, 25, 5000)
        assert (page["start"], page["end"], page["tree_size"]) == (25, N, N)
        assert page["entries"][0]["index"] == 25
        inc = api.inclusion_payload(tlog, s, N, index=3)
        by_hash = api.inclusion_payload(tlog, s, N, leaf_hash_hex=inc["leaf_hash"])
        assert inc == by_hash and inc["tree_size"] == N
        verify_inclusion(bytes.fromhex(inc["leaf_hash"]), 3, N,
                         [base64.b64decode(p) for p in inc["proof"]], tlog.root(s))
        con = api.consistency_payload(tlog, s, 7, N)
        verify_consistency(7, N, tlog.root(s, 7), tlog.root(s),
                           [base64.b64decode(p) for p in con["proof"]])
        json.dumps([page, inc, con, api.receipt_payload(tlog, s, 0)])
        with pytest.raises(ProofRequestError):
            api.inclusion_payload(tlog, s, N)
        with pytest.raises(ProofRequestError):
            api.inclusion_payload(tlog, s, N, leaf_hash_hex="zz")
        with pytest.raises(EntryNotFoundError):
            api.inclusion_payload(tlog, s, N, leaf_hash_hex="00" * 32)
        with pytest.raises(CheckpointUnavailableError):
            api.receipt_payload(tlog, s, N)
        with pytest.raises(ProofRequestError):
            api.entries_page(tlog, s, -1, 3)


def test_receipt_roundtrip_and_tamper(filled: api.LocalSource, factory: sessionmaker[Session],
                                      tlog: TransparencyLog, signer: CheckpointSigner) -> None:
    with factory() as s:
        receipt = api.receipt_payload(tlog, s, 5)
    entry = verify_receipt(json.dumps(receipt), signer.vkey())
    assert entry["index"] == 5 and entry["kind"] == "run.finished"
    other_key = CheckpointSigner(generate_signer(ORIGIN)).vkey()
    mutations: list[dict[str, Any]] = [
        {"index": 6}, {"tree_size": N + 1}, {"entry": base64.b64encode(b"{}").decode()},
        {"inclusion_proof": receipt["inclusion_proof"][:-1]}, {"inclusion_proof": [1]},
        {"checkpoint": receipt["checkpoint"].replace(f"\n{N}\n", f"\n{N - 1}\n")},
        {"format": "x"}, {"index": "5"}, {"leaf_hash": "00" * 32},
    ]
    for m in mutations:
        with pytest.raises(VerificationError):
            verify_receipt({**receipt, **m}, signer.vkey())
    with pytest.raises(VerificationError):
        verify_receipt(receipt, other_key)
    with pytest.raises(VerificationError):
        verify_receipt("not json", signer.vkey())
    with pytest.raises(VerificationError):
        verify_receipt(receipt, signer.vkey(), [], k=1)


def test_clean_audit_passes(filled: api.LocalSource, signer: CheckpointSigner) -> None:
    cp, result = run_audit(filled, signer.verifier, page=7)
    assert cp.size == result.size == N and result.kinds["run.finished"] == 4


def _audit_fails(src: api.LocalSource, signer: CheckpointSigner) -> AuditError:
    with pytest.raises(AuditError) as info:
        run_audit(src, signer.verifier, page=7)
    return info.value


def test_editing_any_field_is_caught(filled: api.LocalSource, factory: sessionmaker[Session],
                                     tlog: TransparencyLog, signer: CheckpointSigner) -> None:
    with factory() as s:
        original = tlog.entries(s, 0, N)
    for index in (0, 5, 17, N - 1):
        obj = decode_entry(original[index])
        for field, value in [("actor", "party:evil"), ("ts", "2030-01-01T00:00:00.000000Z"),
                             ("kind", "run.hidden"), ("body", {"id": "forged"}),
                             ("index", index + 1), ("prev", "f" * 64), ("v", 2)]:
            forged = canonical_json({**obj, field: value})
            _tamper(factory, update(entries_t).where(entries_t.c.idx == index)
                    .values(data=forged))
            err = _audit_fails(filled, signer)
            assert err.index in (index, index + 1, -1), (field, err)
        _tamper(factory, update(entries_t).where(entries_t.c.idx == index)
                .values(data=original[index]))
    run_audit(filled, signer.verifier)


def test_run_finished_audit_fields_are_checked(factory: sessionmaker[Session],
                                               tlog: TransparencyLog) -> None:
    bad = run_finished_body(1)
    del bad["audit"]["authorizing_operator"]
    with factory() as s:
        tlog.append(s, "run.finished", "agent:a1", run_finished_body(0))
        tlog.append(s, "run.finished", "agent:a1", bad)
        s.commit()
        entries = tlog.entries(s, 0, 2)
    with pytest.raises(AuditError) as info:
        audit_entries(entries)
    assert info.value.index == 1
    with pytest.raises(MalformedEntryError):
        decode_entry(entries[1])


@pytest.mark.parametrize("attack", ["delete", "reorder", "truncate", "append_unsigned"])
def test_structural_tampering_is_caught(attack: str, filled: api.LocalSource,
                                        factory: sessionmaker[Session],
                                        tlog: TransparencyLog, signer: CheckpointSigner) -> None:
    with factory() as s:
        e3, e4 = tlog.entries(s, 3, 5)
    if attack == "delete":
        _tamper(factory, delete(entries_t).where(entries_t.c.idx == 12))
    elif attack == "reorder":
        _tamper(factory, update(entries_t).where(entries_t.c.idx == 3).values(data=e4))
        _tamper(factory, update(entries_t).where(entries_t.c.idx == 4).values(data=e3))
    elif attack == "truncate":
        _tamper(factory, delete(entries_t).where(entries_t.c.idx >= 20))
        _tamper(factory, update(head_t).values(size=20))
    else:
        with factory() as s:
            tlog.append(s, "output.released", "system", {})
            s.commit()
        # Signed checkpoint still says N; entries past it are simply not covered yet.
        run_audit(filled, signer.verifier)
        return
    err = _audit_fails(filled, signer)
    assert err.index in {"delete": (12,), "reorder": (3, 4), "truncate": (20,)}[attack]


def test_swapped_key_and_fork_are_caught(filled: api.LocalSource, factory: sessionmaker[Session],
                                         tlog: TransparencyLog, signer: CheckpointSigner,
                                         tmp_path: Path) -> None:
    trusted = filled.checkpoint()
    # A new key, even with the same origin, is not the key the regulator pinned.
    impostor = TransparencyLog(ORIGIN, CheckpointSigner(generate_signer(ORIGIN)))
    with factory() as s:
        sign_checkpoint(impostor, s)  # same size: ON CONFLICT keeps the genuine note
        s.execute(text("delete from ledger_checkpoints"))
        sign_checkpoint(impostor, s)
        s.commit()
    with pytest.raises(VerificationError):
        run_audit(filled, signer.verifier)
    # Fork: rewrite history from entry 10 and re-sign with the genuine key.
    with factory() as s:
        s.execute(text("delete from ledger_checkpoints"))
        s.execute(delete(entries_t).where(entries_t.c.idx >= 10))
        s.execute(text("delete from ledger_nodes"))
        s.execute(delete(head_t))
        s.commit()
    with factory() as s:
        from ledger.log import bulk_load

        kept = tlog.entries(s, 0, 10)
        s.execute(delete(entries_t))
        s.commit()
        bulk_load(s.connection(), kept)
        s.commit()
    fill_realistic(factory, tlog, N - 5)
    with factory() as s:
        sign_checkpoint(tlog, s)
        s.commit()
    run_audit(filled, signer.verifier)  # the fork is internally consistent...
    with pytest.raises(VerificationError, match="fork"):
        check_new_checkpoint(filled, signer.verifier, trusted)  # ...but not with history
    state = tmp_path / "state"
    state.write_text(trusted)
    assert main(["checkpoint", "--url", "http://unused", "--log-key", signer.vkey(),
                 "--state", str(state)], source=filled) == 1
    assert state.read_text() == trusted


def test_rollback_is_caught(filled: api.LocalSource, factory: sessionmaker[Session],
                            tlog: TransparencyLog, signer: CheckpointSigner,
                            tmp_path: Path) -> None:
    old = filled.checkpoint()
    with factory() as s:
        tlog.append(s, "job.submitted", "u", {})
        s.commit()
        sign_checkpoint(tlog, s)
        s.commit()
    newer = filled.checkpoint()
    state = tmp_path / "state"
    argv = ["checkpoint", "--url", "http://x", "--log-key", signer.vkey(), "--state", str(state)]
    state.write_text(old)
    assert main(argv, source=filled) == 0 and state.read_text() == newer
    with factory() as s:
        s.execute(text(f"delete from ledger_checkpoints where size = {N + 1}"))
        s.commit()
    with pytest.raises(VerificationError, match="rollback"):
        check_new_checkpoint(filled, signer.verifier, newer)
    assert main(argv, source=filled) == 1 and state.read_text() == newer


def test_cli_receipt_and_audit(filled: api.LocalSource, factory: sessionmaker[Session],
                               tlog: TransparencyLog, signer: CheckpointSigner,
                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with factory() as s:
        receipt = api.receipt_payload(tlog, s, 4)
    rfile = tmp_path / "r.json"
    rfile.write_text(json.dumps(receipt))
    kfile = tmp_path / "log.vkey"
    kfile.write_text(signer.vkey())
    assert main(["receipt", str(rfile), "--log-key", str(kfile)]) == 0
    assert "OK: receipt verified: entry 4" in capsys.readouterr().out
    rfile.write_text(json.dumps({**receipt, "index": 3}))
    assert main(["receipt", str(rfile), "--log-key", signer.vkey()]) == 1
    assert main(["receipt", str(rfile), "--log-key", "garbage"]) == 2
    assert main(["audit", "--url", "http://x", "--log-key", signer.vkey()], source=filled) == 0
    assert f"audited {N} entries" in capsys.readouterr().out
    _tamper(factory, update(entries_t).where(entries_t.c.idx == 9).values(data=b"{}"))
    assert main(["audit", "--url", "http://x", "--log-key", signer.vkey()], source=filled) == 1
    assert "first bad index 9" in capsys.readouterr().err


def test_errors_are_ledger_errors() -> None:
    assert issubclass(AuditError, VerificationError)
    assert issubclass(VerificationError, LedgerError)


@pytest.mark.parametrize("workers", [1, 2])
def test_chunked_audit_reports_first_bad_index(
    workers: int, filled: api.LocalSource, factory: sessionmaker[Session],
    tlog: TransparencyLog, signer: CheckpointSigner,
) -> None:
    cp, result = run_audit(filled, signer.verifier, page=3, workers=workers, chunk=8)
    assert result.size == N and result.root == cp.root
    with factory() as s:
        original = tlog.entries(s, 0, N)
    for bad in (8, 13, 16, 29):  # chunk starts and middles
        forged = canonical_json({**decode_entry(original[bad]), "actor": "party:evil"})
        _tamper(factory, update(entries_t).where(entries_t.c.idx == bad).values(data=forged))
        with pytest.raises(AuditError) as info:
            run_audit(filled, signer.verifier, page=3, workers=workers, chunk=8)
        assert info.value.index in (bad + 1, -1)  # chain breaks at the next entry
        _tamper(factory, update(entries_t).where(entries_t.c.idx == bad)
                .values(data=b"not json"))
        with pytest.raises(AuditError) as info:
            run_audit(filled, signer.verifier, page=3, workers=workers, chunk=8)
        assert info.value.index == bad
        _tamper(factory, update(entries_t).where(entries_t.c.idx == bad)
                .values(data=original[bad]))


def test_errors_survive_pickle() -> None:
    """Worker processes send errors back pickled; each must come back whole."""
    cases: list[LedgerError] = [
        AuditError(7, "prev does not match"), AuditError(-1, "root differs"),
        WitnessError("conflict", 409), QuorumError("1 of 2", 0),
        SequencerTimeoutError("timed out", True), AuditIncompleteError("worker died"),
    ]
    cases += [cls("message") for cls in vars(errors_module).values()
              if isinstance(cls, type) and issubclass(cls, LedgerError)
              and cls not in (AuditError, SequencerTimeoutError)]
    for exc in cases:
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc)
        assert vars(back) == vars(exc), type(exc)


def _truncate(factory: sessionmaker[Session], size: int) -> None:
    """The served log loses its tail; the signed checkpoint still claims N entries."""
    _tamper(factory, delete(entries_t).where(entries_t.c.idx >= size))
    _tamper(factory, update(head_t).values(size=size))


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["default", "two"])
def test_audit_of_short_log_fails_promptly(
    workers: list[str], filled: api.LocalSource, factory: sessionmaker[Session],
    tlog: TransparencyLog, signer: CheckpointSigner,
) -> None:
    """A log shorter than its checkpoint fails the audit in any worker setting, never hangs."""
    assert workers or default_workers() > 1 or os.cpu_count() == 1
    _truncate(factory, 20)
    server = serve_payloads(tlog, factory)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        t0 = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-m", "ledger.verify_cli", "audit", "--url", url, "--token", TOKEN,
             "--log-key", signer.vkey(), *workers],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
        elapsed = time.monotonic() - t0
    finally:
        server.shutdown()
        server.server_close()
    assert out.returncode == 1, out.stderr
    assert "FAIL (first bad index 20)" in out.stderr
    assert f"log stops at 20 entries; checkpoint claims {N}" in out.stderr
    print(f"short-log audit failed in {elapsed:.2f} s")


class _TwoArgError(Exception):
    """Pickles, but cannot be rebuilt from its args: unpickling it raises TypeError."""

    def __init__(self, a: int, b: str) -> None:
        super().__init__(f"{a}: {b}")


def _worker_exits(start: int, entries: list[bytes]) -> Checked:
    os._exit(70)


def _worker_raises_unpicklable(start: int, entries: list[bytes]) -> Checked:
    raise _TwoArgError(start, "bug")


def _worker_raises_audit_error(start: int, entries: list[bytes]) -> Checked:
    raise AuditError(start + 1, "raised in a worker")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("worker", [_worker_exits, _worker_raises_unpicklable])
def test_failing_worker_fails_the_audit(
    worker: Any, filled: api.LocalSource, signer: CheckpointSigner,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(audit, "check_entries", worker)  # inherited by the forked workers
    with pytest.raises(AuditIncompleteError, match="audit stopped: the worker checking"):
        run_audit(filled, signer.verifier, page=7, workers=2, chunk=8)
    assert main(["audit", "--url", "http://unused", "--log-key", signer.vkey(),
                 "--workers", "2"], source=filled) == 1
    assert "FAIL: audit stopped: the worker checking entries from 0" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_ledger_error_in_worker_is_reported(
    filled: api.LocalSource, signer: CheckpointSigner, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(audit, "check_entries", _worker_raises_audit_error)
    with pytest.raises(AuditError) as info:
        run_audit(filled, signer.verifier, page=7, workers=2, chunk=8)
    assert (info.value.index, info.value.reason) == (1, "raised in a worker")


def test_bad_entry_before_short_tail_is_reported_first(
    filled: api.LocalSource, factory: sessionmaker[Session], signer: CheckpointSigner,
) -> None:
    """The log stops at 20, but entry 3 is bad: 3 is the first bad index, as with 1 worker."""
    _truncate(factory, 20)
    _tamper(factory, update(entries_t).where(entries_t.c.idx == 3).values(data=b"not json"))
    for workers in (1, 2):
        with pytest.raises(AuditError) as info:
            run_audit(filled, signer.verifier, page=3, workers=workers, chunk=8)
        assert info.value.index == 3
