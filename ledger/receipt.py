"""Receipts: one entry, its RFC 9162 inclusion proof and a signed, cosigned checkpoint.

Standard library and ``cryptography`` only, so a receipt can be checked offline by anyone
holding the log's verifier key (and, optionally, witness keys). JSON shape (v1)::

    {"format": "sandbox-ledger-receipt/v1", "index": int, "tree_size": int,
     "entry": base64 entry bytes, "leaf_hash": hex, "inclusion_proof": [base64, ...],
     "checkpoint": signed-note text of the checkpoint of size tree_size}
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ledger.checkpoint import verify_checkpoint
from ledger.cosignature import require_cosignatures
from ledger.entry import decode_entry
from ledger.errors import LedgerError, MalformedNoteError, VerificationError
from ledger.merkle import leaf_hash, verify_inclusion
from ledger.note import NoteVerifier, b64decode, parse_vkey

RECEIPT_FORMAT = "sandbox-ledger-receipt/v1"


def build_receipt(
    entry: bytes, index: int, proof: Sequence[bytes], tree_size: int, checkpoint: str
) -> dict[str, Any]:
    return {
        "format": RECEIPT_FORMAT,
        "index": index,
        "tree_size": tree_size,
        "entry": base64.b64encode(entry).decode(),
        "leaf_hash": leaf_hash(entry).hex(),
        "inclusion_proof": [base64.b64encode(p).decode() for p in proof],
        "checkpoint": checkpoint,
    }


def _as_key(key: str | NoteVerifier) -> NoteVerifier:
    return key if isinstance(key, NoteVerifier) else parse_vkey(key)


def _field(obj: Mapping[str, Any], name: str, typ: type) -> Any:
    value = obj.get(name)
    if not isinstance(value, typ) or isinstance(value, bool):
        raise MalformedNoteError(f"receipt field {name!r} missing or not {typ.__name__}")
    return value


def verify_receipt(
    receipt: Mapping[str, Any] | str | bytes,
    log_vkey: str | NoteVerifier,
    witness_vkeys: Iterable[str | NoteVerifier] = (),
    k: int = 0,
) -> dict[str, Any]:
    """Verify a receipt end to end and return the decoded entry; raise VerificationError."""
    try:
        obj = json.loads(receipt) if isinstance(receipt, str | bytes) else receipt
    except ValueError as exc:
        raise MalformedNoteError(f"receipt is not JSON: {exc}") from exc
    if not isinstance(obj, Mapping) or obj.get("format") != RECEIPT_FORMAT:
        raise MalformedNoteError(f"not a {RECEIPT_FORMAT} receipt")
    try:
        log_key = _as_key(log_vkey)
        witnesses = [_as_key(w) for w in witness_vkeys]
    except LedgerError as exc:
        raise VerificationError(f"bad key: {exc}") from exc
    index, size = _field(obj, "index", int), _field(obj, "tree_size", int)
    entry = b64decode(_field(obj, "entry", str))
    proof_b64 = _field(obj, "inclusion_proof", list)
    if not all(isinstance(p, str) for p in proof_b64):
        raise MalformedNoteError("inclusion_proof must be base64 strings")
    proof = [b64decode(p) for p in proof_b64]
    note = _field(obj, "checkpoint", str)
    cp = verify_checkpoint(note, log_key)
    if k:
        require_cosignatures(note, witnesses, k)
    if cp.size != size:
        raise VerificationError(f"receipt tree size {size} != checkpoint size {cp.size}")
    lh = leaf_hash(entry)
    if obj.get("leaf_hash", lh.hex()) != lh.hex():
        raise VerificationError("leaf_hash does not match the entry bytes")
    verify_inclusion(lh, index, size, proof, cp.root)
    decoded = decode_entry(entry)
    if decoded["index"] != index:
        raise VerificationError(f"entry says index {decoded['index']}, receipt says {index}")
    return decoded
