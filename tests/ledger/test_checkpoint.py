from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from ledger.checkpoint import (
    Checkpoint,
    CheckpointSigner,
    generate_key_file,
    parse_checkpoint_body,
    verify_checkpoint,
)
from ledger.checkpointer import Checkpointer, checkpoint_history
from ledger.cosignature import (
    add_signature_lines,
    cosign,
    require_cosignatures,
    verified_cosigners,
)
from ledger.db import make_engine, make_session_factory
from ledger.errors import KeyConfigError, MalformedNoteError, VerificationError
from ledger.log import TransparencyLog
from ledger.note import (
    ALG_COSIGNATURE_V1,
    NoteSignature,
    generate_signer,
    key_id,
    parse_skey,
    parse_vkey,
    sign_note,
    verify_note,
)
from tests.ledger.conftest import ORIGIN, fill

ROOT = bytes(range(32))


def test_key_formats_roundtrip(tmp_path: Path) -> None:
    s = generate_signer("example.com/log")
    v = parse_vkey(s.verifier.vkey())
    assert v == s.verifier
    assert parse_skey(s.skey()) == s
    assert v.key_id == key_id("example.com/log", 1, v.public_key)
    _name, hexid, blob = v.vkey().split("+", 2)
    assert base64.b64decode(blob)[0] == 1 and len(hexid) == 8
    path = tmp_path / "log.key"
    vkey = generate_key_file(path, ORIGIN)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert CheckpointSigner.from_file(path).vkey() == vkey
    assert CheckpointSigner.from_env({"SANDBOX_LOG_KEY_FILE": str(path)}).vkey() == vkey
    assert CheckpointSigner.from_env({"SANDBOX_LOG_KEY": path.read_text()}).vkey() == vkey
    with pytest.raises(KeyConfigError):
        generate_key_file(path, ORIGIN)  # never overwrites
    with pytest.raises(KeyConfigError):
        CheckpointSigner.from_env({})
    for bad in ["", "a+b", "name+00000000+AAAA", v.vkey().replace("+", "+f", 1),
                "name with space+00+AA=="]:
        with pytest.raises(KeyConfigError):
            parse_vkey(bad)


def test_keys_with_plus_in_base64() -> None:
    for _ in range(40):  # '+' shows up in ~half of all 44-char base64 keys
        s = generate_signer("example.com/log")
        assert parse_vkey(s.verifier.vkey()) == s.verifier
        assert parse_skey(s.skey()) == s


def test_interop_with_go_sumdb_note_example() -> None:
    """The example keys and note from golang.org/x/mod/sumdb/note's documentation."""
    skey = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
    vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    text = ("If you think cryptography is the answer to your problem,\n"
            "then you don't know what your problem is.\n")
    note = text + ("\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1"
                   "FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n")
    signer = parse_skey(skey)
    assert signer.verifier == parse_vkey(vkey) and signer.verifier.vkey() == vkey
    assert signer.skey() == skey
    assert sign_note(text, signer) == note  # Ed25519 is deterministic (RFC 8032)
    assert verify_note(note, parse_vkey(vkey))[0] == text
    with pytest.raises(VerificationError):
        verify_note(note.replace("cryptography", "cryptographY"), parse_vkey(vkey))


def test_checkpoint_sign_verify_and_tamper(signer: CheckpointSigner) -> None:
    cp = Checkpoint(ORIGIN, 42, ROOT)
    note = signer.sign(cp)
    lines = note.split("\n")
    assert lines[:3] == [ORIGIN, "42", base64.b64encode(ROOT).decode()]
    assert lines[4].startswith("\u2014 " + ORIGIN + " ")
    assert verify_checkpoint(note, signer.verifier, ORIGIN) == cp
    with pytest.raises(VerificationError):
        verify_checkpoint(note, signer.verifier, "other/origin")
    with pytest.raises(VerificationError):
        verify_checkpoint(note.replace("\n42\n", "\n43\n"), signer.verifier)
    other = CheckpointSigner(generate_signer(ORIGIN))
    with pytest.raises(VerificationError):
        verify_checkpoint(note, other.verifier)  # swapped key
    for bad in ["", "no signature\n", note.replace("\u2014", "-"), note + "garbage\n",
                note.replace("\n\n", "\n"), "a\n\n\u2014 a !!!\n", "o\n01\nAAAA\n"]:
        with pytest.raises(VerificationError):
            verify_checkpoint(bad, signer.verifier)
    for body in ["o\n1\n", "o\n-1\n" + base64.b64encode(ROOT).decode() + "\n",
                 "o\n1\nAAAA\n", "o\n1\n" + base64.b64encode(ROOT).decode(),
                 "\n1\n" + base64.b64encode(ROOT).decode() + "\n"]:
        with pytest.raises(MalformedNoteError):
            parse_checkpoint_body(body)


def test_cosignature_v1(signer: CheckpointSigner) -> None:
    w = generate_signer("witness.test/w1", ALG_COSIGNATURE_V1)
    note = signer.sign(Checkpoint(ORIGIN, 7, ROOT))
    body, _ = verify_note(note, signer.verifier)
    line = cosign(body, w, timestamp=1679315147)
    raw = base64.b64decode(line.split(" ")[2])
    assert len(raw) == 4 + 8 + 64 and raw[4:12] == (1679315147).to_bytes(8, "big")
    cosigned = add_signature_lines(note, [line, line])
    assert cosigned.count("witness.test/w1") == 1
    assert verified_cosigners(cosigned, [w.verifier]) == {"witness.test/w1"}
    verify_checkpoint(cosigned, signer.verifier)  # log signature still found
    stranger = generate_signer("witness.test/w1", ALG_COSIGNATURE_V1)
    assert verified_cosigners(cosigned, [stranger.verifier]) == set()
    forged = cosigned.replace(line.strip(), line.strip()[:-8] + "AAAAAAA=")
    with pytest.raises(VerificationError):  # a known key's line fails: reject the note
        verified_cosigners(forged, [w.verifier])
    with pytest.raises(MalformedNoteError):
        cosign(body, generate_signer("not-a-witness"))


def _bad_line(name: str, kid: bytes, length: int = 64) -> str:
    """A signature line naming key (name, kid) whose signature bytes are garbage."""
    return NoteSignature(name, kid, b"\x5a" * length).line()


def test_failing_signature_by_known_key_rejects_note(signer: CheckpointSigner) -> None:
    """signed-note "Signatures": a line that names a known key and fails rejects the note,
    even next to a valid line by that key; lines by unknown keys are ignored."""
    v = signer.verifier
    note = signer.sign(Checkpoint(ORIGIN, 7, ROOT))
    bad = _bad_line(v.name, v.key_id)
    for forged in (note + bad, note.replace("\n\n", "\n\n" + bad, 1),
                   note + _bad_line(v.name, v.key_id, 10)):
        with pytest.raises(VerificationError, match="fails to verify"):
            verify_note(forged, v)
        with pytest.raises(VerificationError):
            verify_checkpoint(forged, v)
    other_id = bytes(b ^ 0xFF for b in v.key_id)
    ignored = note + _bad_line(v.name, other_id) + _bad_line("other.test/key", v.key_id)
    assert verify_checkpoint(ignored, v) == Checkpoint(ORIGIN, 7, ROOT)


def test_failing_cosignature_by_known_witness_rejects_note(signer: CheckpointSigner) -> None:
    w1 = generate_signer("witness.test/w1", ALG_COSIGNATURE_V1)
    w2 = generate_signer("witness.test/w2", ALG_COSIGNATURE_V1)
    note = signer.sign(Checkpoint(ORIGIN, 7, ROOT))
    body, _ = verify_note(note, signer.verifier)
    cosigned = add_signature_lines(note, [cosign(body, w1), cosign(body, w2)])
    keys = [w1.verifier, w2.verifier]
    assert require_cosignatures(cosigned, keys, 2) == {"witness.test/w1", "witness.test/w2"}
    forged = cosigned + _bad_line(w1.name, w1.verifier.key_id, 72)
    with pytest.raises(VerificationError, match="fails to verify"):
        verified_cosigners(forged, keys)
    with pytest.raises(VerificationError):
        require_cosignatures(forged, keys, 1)
    # A line by a key the verifier does not know (same name, other ID) is ignored.
    stranger = generate_signer("witness.test/w1", ALG_COSIGNATURE_V1)
    ignored = cosigned + _bad_line(stranger.name, stranger.verifier.key_id, 72)
    assert require_cosignatures(ignored, keys, 2) == {"witness.test/w1", "witness.test/w2"}


def test_checkpointer_signs_within_a_second(
    factory: sessionmaker[Session], tlog: TransparencyLog, signer: CheckpointSigner
) -> None:
    cp = Checkpointer(factory, tlog, interval_s=0.05)
    cp.start()
    try:
        fill(factory, tlog, 3)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with factory() as s:
                latest = tlog.latest_checkpoint(s)
            if latest and latest[0] == 3:
                break
            time.sleep(0.02)
        assert latest is not None and latest[0] == 3
        with factory() as s:
            assert verify_checkpoint(latest[1], signer.verifier).root == tlog.root(s)
    finally:
        cp.stop()
    fill(factory, tlog, 2, start=3)
    note = cp.sign_now()
    assert verify_checkpoint(note, signer.verifier).size == 5
    with factory() as s:
        assert [size for size, _ in checkpoint_history(s)][:2] == [5, 3]
    with pytest.raises(KeyConfigError):
        Checkpointer(factory, TransparencyLog(ORIGIN))


def test_checkpointer_looks_at_the_log_without_the_write_lock(
    engine: Engine, factory: sessionmaker[Session], tlog: TransparencyLog
) -> None:
    """The tick's look at the log's size (five times a second) goes through a read-only
    session: on SQLite it never queues for the single writer lock that requests need."""
    fill(factory, tlog, 2)
    url = engine.url.render_as_string(hide_password=False)
    # The signer's writer gives up on a held lock at once (not after 30 s) if it is asked.
    impatient = make_engine(url)
    event.listen(impatient, "connect",
                 lambda conn, _: conn.execute("PRAGMA busy_timeout=100"))
    reading = make_engine(url, read_only=True)
    try:
        cp = Checkpointer(make_session_factory(impatient), tlog,
                          readers=make_session_factory(reading))
        cp.sign_now()
        with factory() as writer:
            writer.execute(text("SELECT 1"))  # BEGIN IMMEDIATE: another writer's lock
            cp._tick()  # nothing new since the last checkpoint: no signing, no lock
            writer.rollback()
        fill(factory, tlog, 1, start=2)
        cp._tick()  # something new: signed through the writer
        with factory() as s:
            latest = tlog.latest_checkpoint(s)
        assert latest is not None and latest[0] == 3
    finally:
        impatient.dispose()
        reading.dispose()
