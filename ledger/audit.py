"""Full audit of a log's entries: schema, hash chain, time order, tree root. Stdlib only.

``Auditor`` is fed entries in order (pages from any source) and rebuilds the RFC 9162
tree with a compact range, so memory stays O(log n) for any log size. ``audit_chunks``
spreads the per-entry checks over worker processes: they are independent except at
chunk boundaries, which the parent re-checks.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from hashlib import sha256

from ledger.entry import (
    ENTRY_KEYS,
    ENTRY_VERSION,
    KIND_RE,
    MAX_ACTOR,
    TS_RE,
    ZERO_HASH_HEX,
    check_run_finished,
)
from ledger.errors import AuditError, MalformedEntryError
from ledger.merkle import EMPTY_ROOT


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


@dataclass(frozen=True)
class AuditResult:
    size: int
    root: bytes
    kinds: dict[str, int]


@dataclass
class Checked:
    """Outcome of checking consecutive entries, boundary facts kept for the parent."""

    start: int
    first_prev: str = ""
    first_ts: str = ""
    last_hash: str = ""
    last_ts: str = ""
    hashes: list[bytes] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)
    error: tuple[int, str] | None = None


def check_entries(start: int, entries: list[bytes]) -> Checked:
    """Check entries that claim indexes start, start+1, ...; the first prev is not judged.

    Inlined rather than calling ``decode_entry`` per entry: this loop is the cost of
    auditing a million entries. Canonical re-encoding is not re-checked here (the hashes
    bind the exact bytes); ``decode_entry`` still checks it for single receipts.
    """
    out = Checked(start)
    hashes, kinds = out.hashes, out.kinds
    index, prev, last_ts = start, None, ""
    loads, ts_ok, kind_ok = _DECODER.decode, TS_RE.match, KIND_RE.match
    try:
        for data in entries:
            try:
                obj = loads(data.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise AuditError(index, f"not UTF-8 JSON: {exc}") from exc
            if type(obj) is not dict or obj.keys() != ENTRY_KEYS:
                raise AuditError(index, "wrong set of top-level fields")
            if obj["v"] != ENTRY_VERSION or type(obj["v"]) is not int:
                raise AuditError(index, f"unsupported version {obj['v']!r}")
            if obj["index"] != index or type(obj["index"]) is not int:
                raise AuditError(index, f"claims index {obj['index']!r}")
            if prev is None:
                out.first_prev = obj["prev"]
            elif obj["prev"] != prev:
                raise AuditError(index, "prev does not match the previous entry's hash")
            ts, kind, actor = obj["ts"], obj["kind"], obj["actor"]
            if type(ts) is not str or not ts_ok(ts):
                raise AuditError(index, "ts is not RFC 3339 UTC with microseconds")
            if ts < last_ts:
                raise AuditError(index, f"timestamp {ts} is before {last_ts}")
            if type(kind) is not str or not kind_ok(kind):
                raise AuditError(index, "kind is not a dotted event name")
            if type(actor) is not str or not actor or len(actor) > MAX_ACTOR:
                raise AuditError(index, "actor is not a non-empty string")
            if type(obj["body"]) is not dict:
                raise AuditError(index, "body is not an object")
            if kind == "run.finished":
                try:
                    check_run_finished(obj["body"])
                except MalformedEntryError as exc:
                    raise AuditError(index, str(exc)) from exc
            kinds[kind] = kinds.get(kind, 0) + 1
            h = sha256(b"\x00" + data).digest()
            hashes.append(h)
            if not last_ts:
                out.first_ts = ts
            prev, last_ts = h.hex(), ts
            index += 1
    except AuditError as exc:
        out.error = (exc.index, exc.reason)
    out.last_hash, out.last_ts = prev or "", last_ts
    return out


def _check_job(job: tuple[int, list[bytes]]) -> Checked:
    return check_entries(*job)


class Auditor:
    def __init__(self) -> None:
        self.size = 0
        self._prev = ZERO_HASH_HEX
        self._last_ts = ""
        self._stack: list[bytes] = []
        self.kinds: dict[str, int] = {}

    def merge(self, c: Checked) -> None:
        """Accept a checked run of entries that must directly follow what came before."""
        if c.start != self.size:
            raise AuditError(self.size, f"entries resume at {c.start}")
        if c.hashes or c.error:
            if c.error and c.error[0] == c.start and not c.hashes:
                raise AuditError(*c.error)
            if c.first_prev != self._prev:
                raise AuditError(c.start, "prev does not match the previous entry's hash")
            if c.first_ts < self._last_ts:
                raise AuditError(c.start, f"timestamp {c.first_ts} is before {self._last_ts}")
        if c.error:
            raise AuditError(*c.error)
        stack, index = self._stack, self.size
        for h in c.hashes:
            index += 1
            # Compact range (RFC 9162 §2.1.1): merge one level per trailing zero bit.
            count = index
            while count & 1 == 0:
                h = sha256(b"\x01" + stack.pop() + h).digest()
                count >>= 1
            stack.append(h)
        for k, v in c.kinds.items():
            self.kinds[k] = self.kinds.get(k, 0) + v
        if c.hashes:
            self.size, self._prev, self._last_ts = index, c.last_hash, c.last_ts

    def feed(self, entries: Iterable[bytes]) -> None:
        self.merge(check_entries(self.size, list(entries)))

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        h = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            h = sha256(b"\x01" + left + h).digest()
        return h

    def result(self) -> AuditResult:
        return AuditResult(self.size, self.root(), dict(self.kinds))


def audit_entries(entries: Iterable[bytes]) -> AuditResult:
    a = Auditor()
    a.feed(entries)
    return a.result()


def default_workers() -> int:
    return max(1, min(4, len(os.sched_getaffinity(0))))


def audit_chunks(chunks: Iterator[tuple[int, list[bytes]]], workers: int) -> AuditResult:
    """Audit consecutive (start, entries) chunks, checking them in ``workers`` processes.

    With workers > 1 this forks: call it from single-threaded programs (the CLI, bench).
    """
    auditor = Auditor()
    if workers <= 1:
        for start, entries in chunks:
            auditor.merge(check_entries(start, entries))
        return auditor.result()
    # fork: workers need no re-import of __main__ (spawn breaks scripts run from stdin
    # and respawns forever); the verifier CLI that uses this is single-threaded.
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        for checked in pool.imap(_check_job, chunks):
            auditor.merge(checked)
    return auditor.result()
