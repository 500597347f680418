"""JSON/text bodies of the regulator endpoints under /api/v1/ledger (shapes: docs/ledger.md).

The controller owns routing and auth; it maps ProofRequestError to 400,
EntryNotFoundError/CheckpointUnavailableError to 404.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from ledger.errors import CheckpointUnavailableError, KeyConfigError, ProofRequestError
from ledger.log import TransparencyLog
from ledger.merkle import leaf_hash
from ledger.receipt import build_receipt
from ledger.source import decode_entries_page, decode_proof

PAGE_CAP = 1000


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def checkpoint_text(log: TransparencyLog, session: Session) -> str:
    """GET /checkpoint: the newest signed checkpoint note (cosigned version if any)."""
    latest = log.latest_checkpoint(session)
    if latest is None:
        raise CheckpointUnavailableError("no checkpoint has been signed yet")
    return latest[1]


def public_key_text(log: TransparencyLog) -> str:
    """GET /public-key: the log's verifier key (C2SP signed-note vkey), one line."""
    if log.signer is None:
        raise KeyConfigError("this TransparencyLog has no signing key")
    return log.signer.vkey() + "\n"


def entries_page(log: TransparencyLog, session: Session, start: int, end: int) -> dict[str, Any]:
    """GET /entries?start=S&end=E: at most PAGE_CAP entries of [S, E), clipped to the size."""
    size = log.size(session)
    if start < 0 or end < start:
        raise ProofRequestError(f"bad range start={start} end={end}")
    end = min(end, start + PAGE_CAP, size)
    start = min(start, end)
    data = log.entries(session, start, end)
    return {"start": start, "end": start + len(data), "tree_size": size,
            "entries": [{"index": start + i, "data": _b64(d)} for i, d in enumerate(data)]}


def inclusion_payload(
    log: TransparencyLog, session: Session, size: int, index: int | None = None,
    leaf_hash_hex: str | None = None,
) -> dict[str, Any]:
    """GET /proof/inclusion?index=I&size=N or ?hash=<hex>&size=N."""
    if (index is None) == (leaf_hash_hex is None):
        raise ProofRequestError("give exactly one of index and hash")
    if index is None:
        try:
            lh = bytes.fromhex(leaf_hash_hex or "")
        except ValueError as exc:
            raise ProofRequestError("hash is not hex") from exc
        if len(lh) != 32:
            raise ProofRequestError("hash is not 32 bytes")
        index = log.find_index(session, lh)
    proof = log.inclusion_proof(session, index, size)
    entry = log.entries(session, index, index + 1)[0]
    return {"index": index, "tree_size": size, "leaf_hash": leaf_hash(entry).hex(),
            "proof": [_b64(p) for p in proof]}


def consistency_payload(log: TransparencyLog, session: Session, old: int, new: int
                        ) -> dict[str, Any]:
    """GET /proof/consistency?old=M&new=N."""
    proof = log.consistency_proof(session, old, new)
    return {"old_size": old, "new_size": new, "proof": [_b64(p) for p in proof]}


def receipt_payload(log: TransparencyLog, session: Session, index: int) -> dict[str, Any]:
    """GET /receipt/<index>: receipt against the newest stored checkpoint covering index."""
    latest = log.latest_checkpoint(session)
    if latest is None or latest[0] <= index:
        raise CheckpointUnavailableError(f"no signed checkpoint covers entry {index} yet")
    size, note = latest
    entry = log.entries(session, index, index + 1)
    if not entry:
        raise ProofRequestError(f"no entry {index}")
    return build_receipt(entry[0], index, log.inclusion_proof(session, index, size), size, note)


class LocalSource:
    """A ``ledger.source.LogSource`` over these payloads without HTTP (tests, bench, demo).

    Goes through the same JSON shapes and decoders as ``HttpSource``.
    """

    def __init__(self, log: TransparencyLog, session_factory: Callable[[], Session]) -> None:
        self.log = log
        self.factory = session_factory

    def checkpoint(self) -> str:
        with self.factory() as s:
            return checkpoint_text(self.log, s)

    def entries(self, start: int, end: int) -> list[bytes]:
        with self.factory() as s:
            return decode_entries_page(entries_page(self.log, s, start, end), start)

    def consistency(self, old: int, new: int) -> list[bytes]:
        with self.factory() as s:
            return decode_proof(consistency_payload(self.log, s, old, new))
