"""Reading the transparency log for the regulator's pages: filters, pages, the report.

Entries are stored as their canonical bytes only, ordered by index, and their timestamps
never decrease (ledger.log keeps them monotonic), so a period is found by binary search
on the index; kind and party are matched on the bytes first, then on the decoded entry.
A page scans a bounded number of entries, newest first, and links to the next older page
by index, so a rare filter never makes one request read the whole log.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.log import TransparencyLog
from ledger.store import checkpoints_t

PAGE_SIZE = 50
SCAN_BUDGET = 5000  # entries one page request reads at most
CHUNK = 500


@dataclass(frozen=True)
class Filters:
    kind: str = ""
    party: str = ""
    start: str = ""  # ISO date (UTC), inclusive
    end: str = ""  # ISO date (UTC), exclusive


@dataclass(frozen=True)
class Page:
    entries: list[dict[str, Any]]  # decoded (shared: read, never change)
    raw: list[bytes]  # the same entries' canonical bytes
    older: int | None  # pass as ``before`` for the next (older) page
    size: int
    scanned: int


def read_entry(data: bytes) -> dict[str, Any]:
    """An entry to show: parsed, not judged (``ledger-verify`` and the in-browser check
    judge entries; a page shows even an entry they would refuse)."""
    entry: dict[str, Any] = json.loads(data)
    return entry


#: Entries kept decoded per process: the newest pages are read again and again.
KEPT = 4096


@lru_cache(maxsize=KEPT)
def decoded(data: bytes) -> dict[str, Any]:
    """:func:`read_entry`, kept by the entry's bytes (an entry never changes; callers
    share the result and must not change it)."""
    return read_entry(data)


def ts_of(log: TransparencyLog, session: Session, index: int) -> str:
    data = log.entries(session, index, index + 1)[0]
    return str(json.loads(data)["ts"])


def first_at_or_after(log: TransparencyLog, session: Session, size: int, ts: str) -> int:
    """The smallest index whose timestamp is at or after ``ts`` (``size`` if none)."""
    lo, hi = 0, size
    while lo < hi:
        mid = (lo + hi) // 2
        if ts_of(log, session, mid) < ts:
            lo = mid + 1
        else:
            hi = mid
    return lo


def bounds(log: TransparencyLog, session: Session, size: int, f: Filters) -> tuple[int, int]:
    lo = first_at_or_after(log, session, size, f.start) if f.start else 0
    hi = first_at_or_after(log, session, size, f.end) if f.end else size
    return lo, max(lo, hi)


def _prefilter(f: Filters) -> list[bytes]:
    needles = []
    if f.kind:
        needles.append(b'"kind":"' + f.kind.encode())
    if f.party:
        needles.append(f.party.encode())
    return needles


def _matches(entry: dict[str, Any], f: Filters) -> bool:
    kind = str(entry["kind"])
    if f.kind and not (kind == f.kind or kind.startswith(f.kind.rstrip(".") + ".")):
        return False
    return not f.party or f.party in json.dumps(entry, ensure_ascii=False)


def page(log: TransparencyLog, session: Session, f: Filters, before: int | None) -> Page:
    size = log.size(session)
    lo, hi = bounds(log, session, size, f)
    if before is not None:
        hi = min(hi, before)
    needles = _prefilter(f)
    found: list[dict[str, Any]] = []
    raw: list[bytes] = []
    scanned = 0
    pos = hi
    # Unfiltered, the page is the last PAGE_SIZE entries: read no more than those.
    chunk = CHUNK if needles else PAGE_SIZE
    while pos > lo and len(found) < PAGE_SIZE and scanned < SCAN_BUDGET:
        start = max(lo, pos - chunk)
        batch = log.entries(session, start, pos)
        for offset in range(len(batch) - 1, -1, -1):
            data = batch[offset]
            scanned += 1
            if all(n in data for n in needles):
                entry = decoded(data)
                if _matches(entry, f):
                    found.append(entry)
                    raw.append(data)
                    if len(found) == PAGE_SIZE:
                        pos = start + offset
                        break
        else:
            pos = start
    return Page(found, raw, pos if pos > lo else None, size, scanned)


def in_period(log: TransparencyLog, session: Session, start: str, end: str,
              kind: str) -> Iterator[dict[str, Any]]:
    """Every entry of ``kind`` with start <= ts < end, oldest first."""
    size = log.size(session)
    lo, hi = bounds(log, session, size, Filters(start=start, end=end))
    needle = b'"kind":"' + kind.encode() + b'"'
    for pos in range(lo, hi, CHUNK):
        for data in log.entries(session, pos, min(hi, pos + CHUNK)):
            if needle in data:
                yield read_entry(data)


_LATEST_CHECKPOINT = (select(checkpoints_t.c.size, checkpoints_t.c.created_at,
                             checkpoints_t.c.note, checkpoints_t.c.cosigned_note)
                      .order_by(checkpoints_t.c.size.desc()).limit(1))


def checkpoint_status(session: Session, now: datetime) -> dict[str, Any] | None:
    """The latest signed checkpoint: its size, age and witness cosignatures."""
    row = session.connection().execute(_LATEST_CHECKPOINT).one_or_none()
    if row is None:
        return None
    made = datetime.strptime(row.created_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    note = row.cosigned_note or row.note
    signatures = sum(1 for line in note.split("\n\n")[-1].splitlines() if line)
    return {"size": int(row.size), "created_at": row.created_at,
            "age_s": max(0.0, (now - made).total_seconds()),
            "cosignatures": max(0, signatures - 1)}


@dataclass(frozen=True, eq=False)
class Row:
    """One explorer row, ready to print: the template only escapes and writes it.

    Compared (and hashed) by identity: :func:`row` keeps one per entry, so the markup
    kept for it (sandbox.web.fragments) is found without hashing its details."""

    index: int
    href: str
    ts: str  # ISO 8601, for the datetime attribute
    when: str  # "YYYY-MM-DD HH:MM:SS" (UTC)
    kind: str
    actor: str  # the party's name when known, else the actor id
    details: tuple[tuple[str, str], ...]  # the body's first key paths and values, cut short


DETAIL_LINES, DETAIL_CHARS = 6, 80


@lru_cache(maxsize=KEPT)
def row(data: bytes, actor_name: str, entry_base: str) -> Row:
    """The explorer row of the entry ``data``; ``entry_base`` + index is its page."""
    e = decoded(data)
    ts = str(e["ts"])
    return Row(int(e["index"]), f"{entry_base}{e['index']}", ts, ts[:19].replace("T", " "),
               str(e["kind"]), actor_name,
               tuple((k, v[:DETAIL_CHARS]) for k, v in flatten(e["body"])[:DETAIL_LINES]))


def flatten(body: Any, prefix: str = "") -> list[tuple[str, str]]:
    """An entry body as readable ``key path: value`` lines."""
    if isinstance(body, dict):
        out: list[tuple[str, str]] = []
        for k, v in body.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(body, list):
        if all(not isinstance(x, dict | list) for x in body):
            return [(prefix, ", ".join(str(x) for x in body))]
        out = []
        for i, v in enumerate(body):
            out += flatten(v, f"{prefix}[{i}]")
        return out
    return [(prefix, "" if body is None else str(body))]
