"""A C2SP tlog-witness: add-checkpoint over HTTP, cosignature/v1 answers, and its client.

Server side (``Witness``/``serve``) implements tlog-witness "add-checkpoint": it checks the
log's signature, the old size against its state (409 + text/x.tlog.size), the RFC 9162
consistency proof (422), then persists the new state atomically before cosigning
(tlog-cosignature); and the "Monitor Retrieval Mechanism": ``GET <prefix>/<origin
hash>/checkpoint`` serves the latest checkpoint it cosigned for a log. Client side:
``request_cosignature``, ``collect_cosignatures`` and ``fetch_cosigned_checkpoint``.
Standard library and ``cryptography`` only; listens on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ledger.checkpoint import generate_key_file, parse_checkpoint_body, parse_size
from ledger.cosignature import add_signature_lines, cosign, verified_cosigners
from ledger.errors import LedgerError, MalformedNoteError, QuorumError, WitnessError
from ledger.merkle import EMPTY_ROOT, verify_consistency
from ledger.note import (
    ALG_COSIGNATURE_V1,
    NoteSigner,
    NoteVerifier,
    b64decode,
    parse_skey,
    parse_vkey,
    split_note,
    verify_note,
)

SIZE_TYPE = "text/x.tlog.size"
MAX_BODY = 64 * 1024
_CONTENT_LENGTH_RE = re.compile(r"[0-9]{1,12}")


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


def _reply(status: int, text: str, ctype: str = "text/plain; charset=utf-8") -> Reply:
    return Reply(status, text.encode(), ctype)


class Witness:
    def __init__(self, signer: NoteSigner, logs: Sequence[NoteVerifier], state: Path) -> None:
        self.signer = signer
        self.logs = {v.name: v for v in logs}  # log key name == checkpoint origin
        self.state = state
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict[str, object]]:
        if not self.state.exists():
            return {}
        data = json.loads(self.state.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}

    def _store(self, data: dict[str, dict[str, object]]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.state.parent, prefix=self.state.name + ".")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.state)
        dfd = os.open(self.state.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def add_checkpoint(self, request: bytes) -> Reply:
        try:
            text = request.decode("utf-8")
            head, sep, note = text.partition("\n\n")
            lines = head.split("\n")
            if not sep or not lines[0].startswith("old ") or len(lines) > 64:
                raise MalformedNoteError("request must be 'old N', proof lines, blank, note")
            # tlog-witness "add-checkpoint": ASCII decimal, no leading zeroes.
            old = parse_size(lines[0][4:])
            proof = [b64decode(x) for x in lines[1:]]
            body, _ = split_note(note)
            cp = parse_checkpoint_body(body)
        except (UnicodeDecodeError, LedgerError) as exc:
            return _reply(400, f"malformed request: {exc}\n")
        log_key = self.logs.get(cp.origin)
        if log_key is None:
            return _reply(404, "unknown log origin\n")
        try:
            # tlog-witness "add-checkpoint": 403 if no signature by the trusted key is
            # present, or if a line names that key but fails to verify (signed-note).
            _, sigs = verify_note(note, log_key)
        except LedgerError as exc:
            return _reply(403, f"log signature rejected: {exc}\n")
        if old > cp.size:
            return _reply(400, "old size exceeds checkpoint size\n")
        with self._lock, open(str(self.state) + ".lock", "a") as lockf:
            fcntl.flock(lockf, fcntl.LOCK_EX)
            data = self._load()
            cur = data.get(cp.origin, {})
            cur_size = int(cur.get("size", 0))  # type: ignore[call-overload]
            cur_root = base64.b64decode(str(cur.get("root", ""))) if cur else b""
            if old != cur_size:
                return _reply(409, f"{cur_size}\n", SIZE_TYPE)
            # tlog-witness "add-checkpoint": a size-0 checkpoint must carry the empty
            # tree's root, the hash of the empty string (RFC 6962 §2.1), else 422.
            if cp.size == 0 and cp.root != EMPTY_ROOT:
                return _reply(422, "a checkpoint of size 0 must have the empty tree's root\n")
            # Same size, other root: 422 (tlog-witness; 409 before tlog-witness #280).
            if old == cp.size and cur and cur_root != cp.root:
                return _reply(422, "same size as the cosigned checkpoint, other root\n")
            if old == 0:
                if proof:
                    return _reply(422, "proof from size 0 must be empty\n")
            else:
                try:
                    verify_consistency(old, cp.size, cur_root, cp.root, proof)
                except LedgerError as exc:
                    return _reply(422, f"consistency proof does not verify: {exc}\n")
            line = cosign(body, self.signer)
            # Kept for the monitoring API: the log's signatures the witness verified (lines
            # by other keys dropped) and its own cosignature, as add-checkpoint returned it.
            log_lines = "".join(sig.line() for sig in sigs
                                if (sig.name, sig.key_id) == (log_key.name, log_key.key_id))
            data[cp.origin] = {"size": cp.size, "root": base64.b64encode(cp.root).decode(),
                               "note": f"{body}\n{log_lines}{line}"}
            self._store(data)
        return _reply(200, line)

    def cosigned_checkpoint(self, wanted: str) -> Reply:
        """tlog-witness "Monitor Retrieval Mechanism": the latest cosigned checkpoint of
        the log whose origin has this SHA-256 (lower-case hex), or 404 if none.

        State written before the note was kept (size and root only) has nothing to serve
        either: 404 until the log's next add-checkpoint.
        """
        for origin, rec in self._load().items():  # an atomic replace: no lock needed
            if origin_hash(origin) == wanted and isinstance(rec.get("note"), str):
                return _reply(200, str(rec["note"]))
        return _reply(404, "no cosigned checkpoint for this origin hash\n")


def make_server(witness: Witness, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            # RFC 9110 §8.6: Content-Length is 1*DIGIT (ASCII). int() would also take
            # "-1" (read to EOF, past MAX_BODY), "+5", "1_0" and non-ASCII digits.
            length = self.headers.get("Content-Length") or "0"
            if self.path.rstrip("/").split("/")[-1] != "add-checkpoint":
                rep = _reply(404, "not found\n")
            elif not _CONTENT_LENGTH_RE.fullmatch(length):
                rep = _reply(400, "bad Content-Length\n")
            elif int(length) > MAX_BODY:
                rep = _reply(400, "body too large\n")
            else:
                rep = witness.add_checkpoint(self.rfile.read(int(length)))
            self._send(rep)

        def do_GET(self) -> None:
            # tlog-witness: GET <monitoring prefix>/<origin hash>/checkpoint; the
            # monitoring prefix is the same as the submission prefix here (allowed).
            parts = urllib.parse.urlsplit(self.path).path.split("/")
            if len(parts) >= 3 and parts[-1] == "checkpoint":
                rep = witness.cosigned_checkpoint(parts[-2])
            else:
                rep = _reply(404, "not found\n")
            self._send(rep)

        def _send(self, rep: Reply) -> None:
            self.send_response(rep.status)
            self.send_header("Content-Type", rep.content_type)
            self.send_header("Content-Length", str(len(rep.body)))
            self.end_headers()
            self.wfile.write(rep.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return ThreadingHTTPServer((host, port), Handler)


# -- client ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WitnessConfig:
    url: str  # submission prefix, e.g. http://127.0.0.1:8901
    vkey: str  # the witness's cosignature/v1 verifier key


def request_cosignature(url: str, checkpoint: str, old_size: int, proof: Sequence[bytes],
                        timeout: float = 5.0) -> str:
    """POST add-checkpoint; return the signature lines or raise WitnessError(status)."""
    body = f"old {old_size}\n" + "".join(base64.b64encode(p).decode() + "\n" for p in proof)
    target = url.rstrip("/") + "/add-checkpoint"
    if not target.startswith(("http://", "https://")):
        raise WitnessError(f"refusing non-HTTP witness URL {url}")
    req = urllib.request.Request(target, data=(body + "\n" + checkpoint).encode(),  # noqa: S310
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return str(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        raise WitnessError(detail.strip(), exc.code) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise WitnessError(f"{url}: {exc}") from exc


def origin_hash(origin: str) -> str:
    """tlog-witness "Monitor Retrieval Mechanism": SHA-256 of the origin, lower-case hex."""
    return hashlib.sha256(origin.encode()).hexdigest()


def fetch_cosigned_checkpoint(url: str, origin: str, timeout: float = 5.0) -> str:
    """GET the latest checkpoint a witness cosigned for ``origin``; raise WitnessError.

    The note is not verified here: check it with ``verify_checkpoint`` and
    ``require_cosignatures`` as any other note.
    """
    target = f"{url.rstrip('/')}/{origin_hash(origin)}/checkpoint"
    if not target.startswith(("http://", "https://")):
        raise WitnessError(f"refusing non-HTTP witness URL {url}")
    try:
        with urllib.request.urlopen(target, timeout=timeout) as resp:  # noqa: S310
            return str(resp.read(MAX_BODY).decode("utf-8"))
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        raise WitnessError(detail.strip(), exc.code) from exc
    except (urllib.error.URLError, OSError, UnicodeDecodeError) as exc:
        raise WitnessError(f"{url}: {exc}") from exc


_known_sizes: dict[tuple[str, str], int] = {}


def _size_or_none(text: str) -> int | None:
    """The size in a 409 text/x.tlog.size body (tlog-witness), or None if it is not one."""
    try:
        return parse_size(text)
    except MalformedNoteError:
        return None


def _one(w: WitnessConfig, checkpoint: str, proof_fn: Callable[[int, int], Sequence[bytes]],
         timeout: float) -> str:
    body, _ = split_note(checkpoint)
    cp = parse_checkpoint_body(body)
    verifier = parse_vkey(w.vkey)
    key = (w.url, cp.origin)
    old = min(_known_sizes.get(key, 0), cp.size)
    for _attempt in range(2):
        proof = proof_fn(old, cp.size) if 0 < old < cp.size else []
        try:
            lines = request_cosignature(w.url, checkpoint, old, proof, timeout)
        except WitnessError as exc:
            seen = _size_or_none(str(exc)) if exc.status == 409 else None
            if seen is not None and seen != old:
                old = seen
                if old > cp.size:
                    raise WitnessError(f"{w.url} has seen a larger tree ({old})", 409) from exc
                continue
            raise
        _known_sizes[key] = cp.size
        note = add_signature_lines(checkpoint, [lines])
        if verifier.name not in verified_cosigners(note, [verifier]):
            raise WitnessError(f"{w.url} returned no valid cosignature")
        return next(ln for ln in lines.splitlines() if ln.split(" ")[1:2] == [verifier.name])
    raise WitnessError(f"{w.url} kept changing its size")


def collect_cosignatures(
    checkpoint: str, witnesses: Sequence[WitnessConfig], k: int,
    proof_fn: Callable[[int, int], Sequence[bytes]], timeout: float = 5.0,
) -> str:
    """Ask every witness in parallel; return the note with the valid cosignatures added.

    ``proof_fn(old, new)`` gives consistency proofs (e.g. ``log.consistency_proof`` bound
    to a session). Raises QuorumError when fewer than ``k`` witnesses cosign.
    """
    lines: list[str] = []
    failures: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, len(witnesses))) as pool:
        futures = [pool.submit(_one, w, checkpoint, proof_fn, timeout) for w in witnesses]
        for w, f in zip(witnesses, futures, strict=True):
            try:
                lines.append(f.result())
            except LedgerError as exc:
                failures.append(f"{w.url}: {exc}")
    if len(lines) < k:
        raise QuorumError(f"{len(lines)} of {k} required cosignatures; " + "; ".join(failures))
    return add_signature_lines(checkpoint, lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ledger.witness")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--state", type=Path, required=True)
    s.add_argument("--key", type=Path, required=True, help="witness skey file (type 0x04)")
    s.add_argument("--log-vkey", action="append", required=True)
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--host", default="127.0.0.1")
    g = sub.add_parser("keygen")
    g.add_argument("--key", type=Path, required=True)
    g.add_argument("--name", required=True)
    args = p.parse_args(argv)
    if args.cmd == "keygen":
        print(generate_key_file(args.key, args.name, ALG_COSIGNATURE_V1))
        return 0
    signer = parse_skey(args.key.read_text(encoding="ascii"))
    logs = [parse_vkey(Path(v).read_text() if Path(v).exists() else v) for v in args.log_vkey]
    server = make_server(Witness(signer, logs, args.state), args.host, args.port)
    print(f"listening on {args.host}:{server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
