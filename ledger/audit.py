"""Full audit of a log's entries: schema, hash chain, time order, tree root. Stdlib only.

``check_entries`` checks a run of consecutive entries and reduces it to the hashes of the
aligned perfect subtrees it covers (RFC 9162 §2.1.1); ``Auditor`` joins those runs in
order with a compact range, so memory stays O(log n) for any log size. ``audit_chunks``
spreads the runs over worker processes: they are independent except at chunk
boundaries, which the parent re-checks.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import BrokenExecutor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

from ledger import merkle
from ledger.entry import (
    ENTRY_KEYS,
    ENTRY_VERSION,
    KIND_RE,
    MAX_ACTOR,
    TS_RE,
    ZERO_HASH_HEX,
    check_run_finished,
)
from ledger.errors import AuditError, AuditIncompleteError, LedgerError, MalformedEntryError
from ledger.merkle import EMPTY_ROOT, node_sha256
from ledger.treemath import perfect_subtrees


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
# The decoder's scanner (C): one JSON value at a position -> (value, end), no wrapper.
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]

# The top level of a canonical v1 entry, sorted keys and no whitespace, is
#   {"actor":"A","body":B,"index":I,"kind":"K","prev":"P","ts":"T","v":1}
# with P 64 and T 27 characters. ``check_entries`` cuts an entry along that layout with
# string operations instead of parsing it: A must decode as a JSON string, B must parse
# as one whole JSON object, I must be the expected index written in decimal, K a kind,
# T a timestamp and P the previous leaf hash (compared as a string, here or by the
# parent). Any cut whose pieces all pass is the JSON parse of the entry, so the checks are
# those of ``json.loads`` plus canonical layout. In a canonical entry A holds no
# unescaped quote and K, P, T no quote, so the first ``","body":`` and the last
# ``,"index":`` are the cut points. Entries that fail are re-examined by
# ``_slow_reason`` for the error message.
_HEAD, _BODY, _INDEX, _KIND = '{"actor":"', '","body":', ',"index":', ',"kind":"'
_PREV, _TS, _END = '","prev":"', '","ts":"', '","v":1}'
_KIND_FULL = KIND_RE.fullmatch  # not .match: "$" would let a trailing newline through


@dataclass(frozen=True)
class AuditResult:
    size: int
    root: bytes
    kinds: dict[str, int]


@dataclass
class Checked:
    """Outcome of checking consecutive entries, boundary facts kept for the parent.

    ``subtrees`` are (level, hash) of the aligned perfect subtrees that make up the
    entries that passed, ``[start, start + count)``, left to right.
    """

    start: int
    count: int = 0
    first_prev: str = ""
    first_ts: str = ""
    last_hash: str = ""
    last_ts: str = ""
    subtrees: list[tuple[int, bytes]] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)
    error: tuple[int, str] | None = None


def _slow_reason(data: bytes, index: int) -> str:
    """Why an entry failed the canonical-envelope fast path, from a full json parse."""
    try:
        obj = _DECODER.decode(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return f"not UTF-8 JSON: {exc}"
    if type(obj) is not dict or obj.keys() != ENTRY_KEYS:
        return "wrong set of top-level fields"
    if obj["v"] != ENTRY_VERSION or type(obj["v"]) is not int:
        return f"unsupported version {obj['v']!r}"
    if obj["index"] != index or type(obj["index"]) is not int:
        return f"claims index {obj['index']!r}"
    if type(obj["prev"]) is not str or not re.fullmatch(r"[0-9a-f]{64}", obj["prev"]):
        return "prev is not 64 lower-case hex digits"
    ts, kind, actor = obj["ts"], obj["kind"], obj["actor"]
    if type(ts) is not str or not TS_RE.match(ts) or len(ts) != 27:
        return "ts is not RFC 3339 UTC with microseconds"
    if type(kind) is not str or not _KIND_FULL(kind):
        return "kind is not a dotted event name"
    if type(actor) is not str or not actor or len(actor) > MAX_ACTOR:
        return "actor is not a non-empty string"
    if type(obj["body"]) is not dict:
        return "body is not an object"
    return "top level is not canonical JSON (key order, whitespace or number form)"


def _perfect_root(hashes: list[bytes]) -> bytes:
    """MTH of a power-of-two run of leaf hashes, one level at a time.

    In C when ``ledger._merkle_accel`` is built (~0.25 vs ~1.1 µs per leaf); the loop
    below is the reference.
    """
    if merkle.accel is not None:
        return merkle.accel.perfect_root(hashes)
    node = node_sha256
    while len(hashes) > 1:
        it = iter(hashes)
        hashes = [node(b"\x01" + left + right).digest() for left, right in zip(it, it, strict=True)]
    return hashes[0]


def _leaf_hashes(entries: list[bytes]) -> list[bytes] | None:
    """Every entry's leaf hash in one C call (~0.6 vs ~1.9 µs each), or None: hash each
    entry in the loop, as the reference does (also when an entry is not bytes, so that
    the loop fails on it exactly as before)."""
    if merkle.accel is None:
        return None
    try:
        return merkle.accel.leaf_hashes(entries)
    except TypeError:
        return None


def check_entries(start: int, entries: list[bytes]) -> Checked:
    """Check entries that claim indexes start, start+1, ...; the first prev is not judged.

    Inlined rather than calling ``decode_entry`` per entry: this loop is the cost of
    auditing a million entries. The top level must be canonical (see ``_HEAD``); the
    body's own canonical form is not re-checked here (the hashes bind the exact bytes);
    ``decode_entry`` still checks it for single receipts.
    """
    out = Checked(start)
    hashes: list[bytes] = []
    kinds = out.kinds
    index, prev, last_ts = start, "", ""
    scan, ts_ok, kind_ok, leaf = _SCAN, TS_RE.match, _KIND_FULL, sha256
    leaves = _leaf_hashes(entries)  # leaves[k]: entries[k]'s, used once it has passed
    try:
        for data in entries:
            try:
                text = data.decode("utf-8")
                n = len(text)
                cut, body_at = text.rfind(_INDEX), text.find(_BODY)
                if not (text.startswith(_HEAD) and text.endswith(_END) and body_at >= 10
                        and body_at + 9 < cut < n - 126 and text[n - 117:n - 107] == _PREV
                        and text[n - 43:n - 35] == _TS):
                    raise ValueError
                idx, sep, kind = text[cut + 9:n - 117].partition(_KIND)
                entry_prev, ts, actor = text[n - 107:n - 43], text[n - 35:n - 8], text[10:body_at]
                body: Any
                body, end = scan(text, body_at + 9)
                if end != cut or type(body) is not dict or not sep:
                    raise ValueError
                if not actor.isprintable() or "\\" in actor or '"' in actor:
                    actor = _DECODER.decode(f'"{actor}"')  # strict: no raw control chars
            except (UnicodeDecodeError, ValueError, StopIteration):
                raise AuditError(index, _slow_reason(data, index)) from None
            if idx != str(index):
                raise AuditError(index, f"claims index {idx}")
            if not prev:
                out.first_prev = entry_prev
            elif entry_prev != prev:
                raise AuditError(index, "prev does not match the previous entry's hash")
            if not ts_ok(ts):
                raise AuditError(index, "ts is not RFC 3339 UTC with microseconds")
            if ts < last_ts:
                raise AuditError(index, f"timestamp {ts} is before {last_ts}")
            count = kinds.get(kind)
            if count is None:  # each distinct kind is checked once
                if not kind_ok(kind):
                    raise AuditError(index, "kind is not a dotted event name")
                count = 0
            if not actor or len(actor) > MAX_ACTOR:
                raise AuditError(index, "actor is not a non-empty string")
            if kind == "run.finished":
                try:
                    check_run_finished(body)
                except MalformedEntryError as exc:
                    raise AuditError(index, str(exc)) from exc
            kinds[kind] = count + 1
            h = leaf(b"\x00" + data).digest() if leaves is None else leaves[index - start]
            hashes.append(h)
            if not last_ts:
                out.first_ts = ts
            prev, last_ts = h.hex(), ts
            index += 1
    except AuditError as exc:
        out.error = (exc.index, exc.reason)
    out.count, out.last_hash, out.last_ts = len(hashes), prev, last_ts
    for level, i in perfect_subtrees(start, start + len(hashes)):
        lo = (i << level) - start
        out.subtrees.append((level, _perfect_root(hashes[lo:lo + (1 << level)])))
    return out


class Auditor:
    def __init__(self) -> None:
        self.size = 0
        self._prev = ZERO_HASH_HEX
        self._last_ts = ""
        self._stack: list[tuple[int, bytes]] = []  # compact range: (level, hash), big first
        self.kinds: dict[str, int] = {}

    def merge(self, c: Checked) -> None:
        """Accept a checked run of entries that must directly follow what came before."""
        if c.start != self.size:
            raise AuditError(self.size, f"entries resume at {c.start}")
        if c.count or c.error:
            if c.error and c.error[0] == c.start and not c.count:
                raise AuditError(*c.error)
            if c.first_prev != self._prev:
                raise AuditError(c.start, "prev does not match the previous entry's hash")
            if c.first_ts < self._last_ts:
                raise AuditError(c.start, f"timestamp {c.first_ts} is before {self._last_ts}")
        if c.error:
            raise AuditError(*c.error)
        stack, node = self._stack, node_sha256
        for level, h in c.subtrees:
            # Binary addition (RFC 9162 §2.1.1): the new subtree starts where the range
            # ends, so it merges with every equal-sized subtree on top.
            while stack and stack[-1][0] == level:
                h = node(b"\x01" + stack.pop()[1] + h).digest()
                level += 1
            stack.append((level, h))
        for k, v in c.kinds.items():
            self.kinds[k] = self.kinds.get(k, 0) + v
        if c.count:
            self.size, self._prev, self._last_ts = c.start + c.count, c.last_hash, c.last_ts

    def feed(self, entries: Iterable[bytes]) -> None:
        self.merge(check_entries(self.size, list(entries)))

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        h = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            h = node_sha256(b"\x01" + left + h).digest()
        return h

    def result(self) -> AuditResult:
        return AuditResult(self.size, self.root(), dict(self.kinds))


def audit_entries(entries: Iterable[bytes]) -> AuditResult:
    a = Auditor()
    a.feed(entries)
    return a.result()


def default_workers() -> int:
    return max(1, min(4, len(os.sched_getaffinity(0))))


def _checked(start: int, future: Future[Checked]) -> Checked:
    """A worker's result; a worker that raised or died fails the audit (never hangs it)."""
    try:
        return future.result()
    except LedgerError:
        raise
    except Exception as exc:  # BrokenProcessPool (worker died), a bug, an unpicklable error
        raise AuditIncompleteError(f"audit stopped: the worker checking entries from {start} "
                                   f"failed: {exc!r}") from exc


def _submit(pool: ProcessPoolExecutor, start: int, entries: list[bytes]) -> Future[Checked]:
    """Hand a chunk to a worker; a pool already broken gives a future that fails with it."""
    try:
        return pool.submit(check_entries, start, entries)
    except BrokenExecutor as exc:
        failed: Future[Checked] = Future()
        failed.set_exception(exc)
        return failed


def audit_chunks(chunks: Iterable[tuple[int, list[bytes]]], workers: int) -> AuditResult:
    """Audit consecutive (start, entries) chunks, checking them in ``workers`` processes.

    Chunks are fetched here, in the calling thread, so an error while fetching (a log
    shorter than its checkpoint, a network error) is raised here, after the chunks before
    it are merged: the first bad entry is still the one reported. A worker that raises or
    dies raises ``AuditIncompleteError``. With workers > 1 this forks: call it from
    single-threaded programs (the CLI, bench).
    """
    auditor = Auditor()
    if workers <= 1:
        for start, entries in chunks:
            auditor.merge(check_entries(start, entries))
        return auditor.result()
    # fork: workers need no re-import of __main__ (spawn breaks scripts run from stdin
    # and respawns forever); the verifier CLI that uses this is single-threaded.
    # ProcessPoolExecutor, not multiprocessing.Pool: a Pool whose result cannot be
    # unpickled, or whose worker is killed, never completes the task and the audit hangs;
    # the executor marks itself broken and fails every pending future instead.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    pending: deque[tuple[int, Future[Checked]]] = deque()
    it = iter(chunks)
    try:
        while True:
            try:
                chunk = next(it, None)
            except LedgerError:
                while pending:  # an earlier bad entry is the better report
                    auditor.merge(_checked(*pending.popleft()))
                raise
            if chunk is None:
                break
            pending.append((chunk[0], _submit(pool, *chunk)))
            # In order; at most 2 * workers chunks held in memory.
            while pending and (len(pending) > 2 * workers or pending[0][1].done()):
                auditor.merge(_checked(*pending.popleft()))
        while pending:
            auditor.merge(_checked(*pending.popleft()))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return auditor.result()
