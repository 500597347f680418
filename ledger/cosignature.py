"""C2SP tlog-cosignature (v1): timestamped Ed25519 witness cosignatures on checkpoints.

Standard library and ``cryptography`` only. Signed message (tlog-cosignature "Ed25519
signed message"): ``cosignature/v1\\n`` ``time <T>\\n`` then the checkpoint body. Signature
bytes: key id (type 0x04) || u64 big-endian T || Ed25519 signature.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable

from ledger.errors import MalformedNoteError, VerificationError
from ledger.note import ALG_COSIGNATURE_V1, NoteSignature, NoteSigner, NoteVerifier, split_note

_HEADER = "cosignature/v1\n"


def _message(body: str, timestamp: int) -> bytes:
    return f"{_HEADER}time {timestamp}\n{body}".encode()


def cosign(body: str, signer: NoteSigner, timestamp: int | None = None) -> str:
    """One cosignature line over a checkpoint body."""
    if signer.alg != ALG_COSIGNATURE_V1:
        raise MalformedNoteError("cosigning needs a 0x04 (cosignature/v1) key")
    ts = int(time.time()) if timestamp is None else timestamp
    if not 0 <= ts < 2**63:
        raise MalformedNoteError("cosignature timestamp out of range")
    sig = struct.pack(">Q", ts) + signer.raw_sign(_message(body, ts))
    return NoteSignature(signer.name, signer.verifier.key_id, sig).line()


def _valid(body: str, sig: NoteSignature, v: NoteVerifier) -> bool:
    if len(sig.signature) != 72:
        return False
    (ts,) = struct.unpack(">Q", sig.signature[:8])
    return ts < 2**63 and v.verify(_message(body, ts), sig.signature[8:])


def verified_cosigners(note: str, witnesses: Iterable[NoteVerifier]) -> set[str]:
    """Names of the given witnesses whose cosignature on ``note`` verifies.

    Lines from other keys are ignored; a line whose name and key ID match one of
    ``witnesses`` but fails to verify rejects the whole note (signed-note "Signatures").
    """
    body, sigs = split_note(note)
    names: set[str] = set()
    for v in witnesses:
        if v.alg != ALG_COSIGNATURE_V1:
            raise VerificationError(f"witness key {v.name} is not a cosignature/v1 key")
        kid = v.key_id
        for s in sigs:
            if s.name != v.name or s.key_id != kid:
                continue
            if not _valid(body, s, v):
                raise VerificationError(f"a cosignature by {v.name} on the note fails to "
                                        "verify")
            names.add(v.name)
    return names


def require_cosignatures(note: str, witnesses: Iterable[NoteVerifier], k: int) -> set[str]:
    names = verified_cosigners(note, witnesses)
    if len(names) < k:
        raise VerificationError(f"{len(names)} valid cosignatures, {k} required")
    return names


def add_signature_lines(note: str, lines: Iterable[str]) -> str:
    """Append signature lines to a note, skipping ones it already carries."""
    split_note(note)
    have = set(note.splitlines())
    out = note
    for line in lines:
        for ln in line.splitlines():
            if ln and ln not in have:
                out += ln + "\n"
                have.add(ln)
    split_note(out)
    return out
