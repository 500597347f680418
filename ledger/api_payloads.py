"""JSON/text bodies of the regulator endpoints under /api/v1/ledger (shapes: docs/ledger.md).

The controller owns routing and auth; it maps ProofRequestError to 400,
EntryNotFoundError/CheckpointUnavailableError to 404.
"""

from __future__ import annotations

import base64
import threading
from collections import OrderedDict
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


class PageCache:
    """Pages of entries already served, by their range; least recently used out past
    ``max_entries`` entries in all.

    Entries are append-only and never change: a range wholly below a tree size read
    from the database is the same page for every later request and every caller the
    endpoint admits (its authorization is by role; no entry is any one party's). Only
    the entries are kept: each request still reads the tree size, so a new entry shows
    at once and a range past the end is clipped to the size of the moment.
    """

    def __init__(self, max_entries: int = 20_000) -> None:
        self.max_entries, self.kept = max_entries, 0
        self._pages: OrderedDict[tuple[int, int], tuple[dict[str, Any], ...]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, start: int, end: int) -> tuple[dict[str, Any], ...] | None:
        with self._lock:
            page = self._pages.get((start, end))
            if page is not None:
                self._pages.move_to_end((start, end))
            return page

    def put(self, start: int, end: int, page: tuple[dict[str, Any], ...]) -> None:
        if not page or len(page) != end - start or len(page) > self.max_entries:
            return  # empty, or not a whole page (rows missing under the read): not kept
        with self._lock:
            if (start, end) not in self._pages:
                self._pages[(start, end)] = page
                self.kept += len(page)
            while self.kept > self.max_entries:
                _, old = self._pages.popitem(last=False)
                self.kept -= len(old)


def entries_page(log: TransparencyLog, session: Session, start: int, end: int,
                 pages: PageCache | None = None) -> dict[str, Any]:
    """GET /entries?start=S&end=E: at most PAGE_CAP entries of [S, E), clipped to the size.

    ``pages``: served from (and kept in) this cache when the clipped range is below the
    size just read (:class:`PageCache`)."""
    size = log.size(session)
    if start < 0 or end < start:
        raise ProofRequestError(f"bad range start={start} end={end}")
    end = min(end, start + PAGE_CAP, size)
    start = min(start, end)
    page = pages.get(start, end) if pages is not None else None
    if page is None:
        data = log.entries(session, start, end)
        page = tuple({"index": start + i, "data": _b64(d)} for i, d in enumerate(data))
        if pages is not None:
            pages.put(start, end, page)
    return {"start": start, "end": start + len(page), "tree_size": size,
            "entries": list(page)}


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
