from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from ledger.checkpoint import (
    Checkpoint,
    CheckpointSigner,
    generate_key_file,
    parse_size,
    verify_checkpoint,
)
from ledger.checkpointer import sign_checkpoint, store_cosigned
from ledger.cosignature import require_cosignatures, verified_cosigners
from ledger.errors import MalformedNoteError, QuorumError, WitnessError
from ledger.log import TransparencyLog
from ledger.note import (
    ALG_COSIGNATURE_V1,
    NoteSignature,
    NoteSigner,
    generate_signer,
    sign_note,
)
from ledger.receipt import verify_receipt
from ledger.witness import (
    MAX_BODY,
    SIZE_TYPE,
    Witness,
    WitnessConfig,
    collect_cosignatures,
    fetch_cosigned_checkpoint,
    make_server,
    origin_hash,
    request_cosignature,
)
from tests.ledger.conftest import ORIGIN, fill


class Running:
    def __init__(self, signer: NoteSigner, log_key: CheckpointSigner, state: Path) -> None:
        self.signer, self.state = signer, state
        self.witness = Witness(signer, [log_key.verifier], state)
        self.server = make_server(self.witness)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def config(self) -> WitnessConfig:
        return WitnessConfig(self.url, self.signer.verifier.vkey())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def witnesses(tmp_path: Path, signer: CheckpointSigner) -> Iterator[list[Running]]:
    ws = [Running(generate_signer(f"witness.test/w{i}", ALG_COSIGNATURE_V1), signer,
                  tmp_path / f"w{i}.json") for i in range(2)]
    yield ws
    for w in ws:
        w.close()


def _signed(factory: sessionmaker[Session], log: TransparencyLog) -> str:
    with factory() as s:
        _, note = sign_checkpoint(log, s)
        s.commit()
    return note


def _proof_fn(factory: sessionmaker[Session], log: TransparencyLog):  # type: ignore[no-untyped-def]
    def fn(old: int, new: int) -> list[bytes]:
        with factory() as s:
            return log.consistency_proof(s, old, new)
    return fn


def test_collect_and_receipt(factory: sessionmaker[Session], tlog: TransparencyLog,
                             signer: CheckpointSigner, witnesses: list[Running]) -> None:
    configs = [w.config for w in witnesses]
    keys = [w.signer.verifier for w in witnesses]
    for n in (3, 9, 9, 20):
        with factory() as s:
            need = n - tlog.size(s)
        fill(factory, tlog, need, start=n - need)
        cosigned = collect_cosignatures(_signed(factory, tlog), configs, 2,
                                        _proof_fn(factory, tlog))
        assert verified_cosigners(cosigned, keys) == {"witness.test/w0", "witness.test/w1"}
    with factory() as s:
        store_cosigned(tlog, s, cosigned)
        s.commit()
        from ledger.api_payloads import checkpoint_text, receipt_payload

        assert checkpoint_text(tlog, s) == cosigned
        receipt = receipt_payload(tlog, s, 4)
    verify_receipt(receipt, signer.vkey(), [w.config.vkey for w in witnesses], k=2)
    with pytest.raises(QuorumError):
        collect_cosignatures(cosigned, [*configs, WitnessConfig("http://127.0.0.1:9",
                             configs[0].vkey)], 3, _proof_fn(factory, tlog), timeout=1)


def test_cosign_latest(factory: sessionmaker[Session], tlog: TransparencyLog,
                       signer: CheckpointSigner, witnesses: list[Running]) -> None:
    from ledger.api_payloads import checkpoint_text
    from ledger.checkpointer import cosign_latest

    for n in (4, 11):
        with factory() as s:
            have = tlog.size(s)
        fill(factory, tlog, n - have, start=have)
        note = cosign_latest(tlog, factory, [w.config for w in witnesses], 2)
        with factory() as s:
            assert checkpoint_text(tlog, s) == note
    assert verified_cosigners(note, [w.signer.verifier for w in witnesses]) == {
        "witness.test/w0", "witness.test/w1"}
    with pytest.raises(QuorumError):
        cosign_latest(tlog, factory, [witnesses[0].config], 2)


def test_protocol_errors_leave_state_unchanged(
    factory: sessionmaker[Session], tlog: TransparencyLog, signer: CheckpointSigner,
    witnesses: list[Running],
) -> None:
    w = witnesses[0]
    fill(factory, tlog, 10)
    note10 = _signed(factory, tlog)
    request_cosignature(w.url, note10, 0, [])
    state = w.state.read_bytes()
    with factory() as s:
        root5 = tlog.root(s, 5)
        proof_5_10 = tlog.consistency_proof(s, 5, 10)
    note5 = signer.sign(Checkpoint(ORIGIN, 5, root5))

    def status(note: str, old: int, proof: list[bytes]) -> tuple[int, str]:
        with pytest.raises(WitnessError) as info:
            request_cosignature(w.url, note, old, proof)
        return info.value.status, str(info.value)

    assert status(note5, 0, []) == (409, "10")  # rollback
    assert status(note5, 10, []) == (400, status(note5, 10, [])[1])  # old > size
    forked = signer.sign(Checkpoint(ORIGIN, 10, b"\x07" * 32))
    assert status(forked, 10, [])[0] == 422  # same size, other root
    fill(factory, tlog, 4, start=10)
    note14 = _signed(factory, tlog)
    assert status(note14, 10, proof_5_10)[0] == 422  # proof that does not fit
    forked14 = signer.sign(Checkpoint(ORIGIN, 14, b"\x07" * 32))
    with factory() as s:
        assert status(forked14, 10, tlog.consistency_proof(s, 10, 14))[0] == 422
    stranger = CheckpointSigner(generate_signer(ORIGIN))
    assert status(stranger.sign(Checkpoint(ORIGIN, 14, root5)), 10, [])[0] == 403
    other = CheckpointSigner(generate_signer("other.test/log"))
    assert status(other.sign(Checkpoint("other.test/log", 1, root5)), 0, [])[0] == 404
    assert status("garbage", 0, [])[0] == 400
    assert w.state.read_bytes() == state
    with factory() as s:
        lines = request_cosignature(w.url, note14, 10, tlog.consistency_proof(s, 10, 14))
    assert lines.startswith("\u2014 witness.test/w0 ")
    assert w.state.read_bytes() != state


def test_409_content_type(factory: sessionmaker[Session], tlog: TransparencyLog,
                          witnesses: list[Running]) -> None:
    fill(factory, tlog, 2)
    note = _signed(factory, tlog)
    rep = witnesses[0].witness.add_checkpoint(f"old 1\n\n{note}".encode())
    assert (rep.status, rep.content_type, rep.body) == (409, SIZE_TYPE, b"0\n")


@pytest.mark.slow
def test_serve_cli(tmp_path: Path, factory: sessionmaker[Session], tlog: TransparencyLog,
                   signer: CheckpointSigner) -> None:
    key = tmp_path / "w.key"
    vkey = generate_key_file(key, "witness.test/cli", ALG_COSIGNATURE_V1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ledger.witness", "serve", "--state", str(tmp_path / "s.json"),
         "--key", str(key), "--log-vkey", signer.vkey(), "--port", "0"],
        stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2])
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().decode().rsplit(":", 1)[1])
        fill(factory, tlog, 3)
        note = collect_cosignatures(_signed(factory, tlog),
                                    [WitnessConfig(f"http://127.0.0.1:{port}", vkey)], 1,
                                    _proof_fn(factory, tlog))
        assert "witness.test/cli" in note
    finally:
        proc.kill()
        proc.wait()


def test_failing_signature_by_log_key_is_403(
    factory: sessionmaker[Session], tlog: TransparencyLog, signer: CheckpointSigner,
    witnesses: list[Running],
) -> None:
    """tlog-witness: a line naming the trusted key that fails to verify makes the note
    malformed (signed-note), even next to a valid log signature: 403, nothing stored."""
    fill(factory, tlog, 3)
    note = _signed(factory, tlog)
    v = signer.verifier
    bad = NoteSignature(v.name, v.key_id, b"\x5a" * 64).line()
    w = witnesses[0]
    for forged in (note + bad, note.replace("\n\n", "\n\n" + bad, 1)):
        rep = w.witness.add_checkpoint(f"old 0\n\n{forged}".encode())
        assert rep.status == 403, rep.body
        assert not w.state.exists()
    with pytest.raises(WitnessError) as info:
        request_cosignature(w.url, note + bad, 0, [])
    assert info.value.status == 403
    assert w.witness.add_checkpoint(f"old 0\n\n{note}".encode()).status == 200


def test_size_zero_checkpoint_needs_empty_root(
    signer: CheckpointSigner, witnesses: list[Running],
) -> None:
    """tlog-witness: a size-0 checkpoint must carry SHA-256("") as its root, else 422."""
    w = witnesses[0].witness
    for root in (b"\x07" * 32, hashlib.sha256(b"\x00").digest()):
        rep = w.add_checkpoint(f"old 0\n\n{signer.sign(Checkpoint(ORIGIN, 0, root))}".encode())
        assert rep.status == 422, rep.body
        assert not w.state.exists()
    empty = signer.sign(Checkpoint(ORIGIN, 0, hashlib.sha256(b"").digest()))
    assert w.add_checkpoint(f"old 0\n\n{empty}".encode()).status == 200
    bogus = signer.sign(Checkpoint(ORIGIN, 0, b"\x07" * 32))
    assert w.add_checkpoint(f"old 0\n\n{bogus}".encode()).status == 422


def test_sizes_are_ascii_decimal(factory: sessionmaker[Session], tlog: TransparencyLog,
                                 witnesses: list[Running]) -> None:
    """tlog-witness "add-checkpoint": the old size is ASCII decimal without leading zeroes;
    str.isdigit() also took Arabic-Indic and fullwidth digits (old \u0660 cosigned)."""
    fill(factory, tlog, 3)
    note = _signed(factory, tlog)
    w = witnesses[0].witness
    for bad in ("\u0660", "\uff10", "\u0663", "\uff13", "00", "03", "+0", "-0", " 0", "0 ",
                "0_0", "\u00b2", ""):
        rep = w.add_checkpoint(f"old {bad}\n\n{note}".encode())
        assert rep.status == 400, (bad, rep)
    assert not w.state.exists()
    assert w.add_checkpoint(f"old 0\n\n{note}".encode()).status == 200
    for good, size in (("0", 0), ("7", 7), ("18446744073709551615", 2**64 - 1)):
        assert parse_size(good) == size
    for bad in ("\u0663", "\uff13", "07", "", "1e3", "123456789012345678901"):
        with pytest.raises(MalformedNoteError):
            parse_size(bad)


def _raw_post(url: str, content_length: str, body: bytes) -> bytes:
    """POST add-checkpoint with a Content-Length header as given, then close our side."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /add-checkpoint HTTP/1.1\r\nHost: x\r\n"
                     + f"Content-Length: {content_length}\r\n\r\n".encode() + body)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while data := sock.recv(4096):
            chunks.append(data)
    return b"".join(chunks)


def test_content_length_is_ascii_decimal(factory: sessionmaker[Session], tlog: TransparencyLog,
                                         witnesses: list[Running]) -> None:
    """int() took "-1" (read to EOF, past the body limit) and "+N", " N", non-ASCII digits."""
    fill(factory, tlog, 3)
    body = f"old 0\n\n{_signed(factory, tlog)}".encode()
    w = witnesses[0]
    n = str(len(body))
    for header in ("-1", "+" + n, n.translate(str.maketrans("0123456789", "０１２３４５６７８９")),
                   n[:1] + "_" + n[1:], str(MAX_BODY + 1)):
        status = _raw_post(w.url, header, body).split(b" ", 2)[1]
        assert status == b"400", header
    assert not w.state.exists()
    assert _raw_post(w.url, n, body).split(b" ", 2)[1] == b"200"


def test_client_409_size_is_ascii_decimal(factory: sessionmaker[Session],
                                          tlog: TransparencyLog) -> None:
    """A 409 body that is not an ASCII size (here fullwidth ３) is not retried from."""
    seen: list[bytes] = []

    class Fake(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.rfile.read(int(self.headers["Content-Length"])))
            body = "\uff13\n".encode()
            self.send_response(409)
            self.send_header("Content-Type", SIZE_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    fill(factory, tlog, 5)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Fake)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    vkey = generate_signer("witness.test/fake", ALG_COSIGNATURE_V1).verifier.vkey()
    try:
        with pytest.raises(QuorumError, match="\uff13"):
            collect_cosignatures(_signed(factory, tlog),
                                 [WitnessConfig(f"http://127.0.0.1:{server.server_address[1]}",
                                                vkey)], 1, _proof_fn(factory, tlog))
    finally:
        server.shutdown()
        server.server_close()
    assert len(seen) == 1 and seen[0].startswith(b"old 0\n")


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_monitoring_serves_latest_cosigned_checkpoint(
    factory: sessionmaker[Session], tlog: TransparencyLog, signer: CheckpointSigner,
    witnesses: list[Running],
) -> None:
    """tlog-witness "Monitor Retrieval Mechanism": GET <prefix>/<origin hash>/checkpoint,
    the origin hash being SHA-256(origin) in lower-case hex; 404 until a cosignature."""
    w = witnesses[0]
    wanted = hashlib.sha256(ORIGIN.encode()).hexdigest()
    assert origin_hash(ORIGIN) == wanted
    assert _get(f"{w.url}/{wanted}/checkpoint")[0] == 404
    with pytest.raises(WitnessError) as info:
        fetch_cosigned_checkpoint(w.url, ORIGIN)
    assert info.value.status == 404
    fill(factory, tlog, 10)
    note10 = _signed(factory, tlog)
    stranger = generate_signer("other.test/key")  # a line by an unknown key: not kept
    submitted = note10 + sign_note(note10.split("\n\n")[0] + "\n", stranger).split("\n\n")[1]
    line10 = request_cosignature(w.url, submitted, 0, [])
    status, ctype, served = _get(f"{w.url}/{wanted}/checkpoint")
    assert (status, ctype) == (200, "text/plain; charset=utf-8")
    assert served == note10 + line10
    assert verify_checkpoint(served, signer.verifier, ORIGIN).size == 10
    assert require_cosignatures(served, [w.signer.verifier], 1) == {"witness.test/w0"}
    assert fetch_cosigned_checkpoint(w.url + "/", ORIGIN) == served
    fill(factory, tlog, 4, start=10)
    note14 = _signed(factory, tlog)
    with factory() as s:
        line14 = request_cosignature(w.url, note14, 10, tlog.consistency_proof(s, 10, 14))
    assert fetch_cosigned_checkpoint(w.url, ORIGIN) == note14 + line14
    # A refused checkpoint does not change what is served.
    forked = signer.sign(Checkpoint(ORIGIN, 14, b"\x07" * 32))
    with pytest.raises(WitnessError):
        request_cosignature(w.url, forked, 14, [])
    assert fetch_cosigned_checkpoint(w.url, ORIGIN) == note14 + line14
    # A monitoring prefix in front of the hash is fine; anything else names no log.
    assert _get(f"{w.url}/monitor/{wanted}/checkpoint")[2] == note14 + line14
    for path in (f"/{wanted.upper()}/checkpoint", f"/{urllib.parse.quote(ORIGIN, safe='')}"
                 "/checkpoint", f"/{origin_hash('other.test/log')}/checkpoint",
                 f"/{wanted}", f"/{wanted}/checkpoint/x", "/checkpoint"):
        assert _get(w.url + path)[0] == 404, path
    assert witnesses[1].witness.cosigned_checkpoint(wanted).status == 404


def test_monitoring_after_state_without_note(
    factory: sessionmaker[Session], tlog: TransparencyLog, witnesses: list[Running],
) -> None:
    """State that kept only size and root: 404 until the log's next add-checkpoint."""
    fill(factory, tlog, 3)
    note = _signed(factory, tlog)
    w = witnesses[0]
    request_cosignature(w.url, note, 0, [])
    state = json.loads(w.state.read_text())
    del state[ORIGIN]["note"]
    w.state.write_text(json.dumps(state))
    assert w.witness.cosigned_checkpoint(origin_hash(ORIGIN)).status == 404
    fill(factory, tlog, 2, start=3)
    note5 = _signed(factory, tlog)
    with factory() as s:
        line = request_cosignature(w.url, note5, 3, tlog.consistency_proof(s, 3, 5))
    assert fetch_cosigned_checkpoint(w.url, ORIGIN) == note5 + line
