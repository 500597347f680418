"""Version-1 ledger entries: canonical bytes, schema checks. Standard library only.

An entry is the UTF-8 canonical JSON (sorted keys, no whitespace, no NaN/Infinity) of::

    {"v": 1, "index": int, "ts": "YYYY-MM-DDTHH:MM:SS.ffffffZ", "kind": "a.b",
     "actor": str, "prev": 64-hex leaf hash of entry index-1 (64 zeros for index 0),
     "body": {...}}

The leaf hash is RFC 9162 §2.1.1 over exactly these bytes, so the verifier never
re-encodes; re-encoding is only used to insist the operator stored canonical bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ledger.errors import InvalidEntryError, MalformedEntryError

ENTRY_VERSION = 1
ZERO_HASH_HEX = "0" * 64
ENTRY_KEYS = frozenset({"v", "index", "ts", "kind", "actor", "prev", "body"})
KIND_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
# [0-9], not \d: on str, \d also matches other scripts' digits (e.g. fullwidth ２).
TS_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$")
RFC3339_RE = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
# Every pattern above is used with fullmatch: with re.match, "$" lets a trailing newline
# through ("ab\n" matches r"^ab$"), which would make two spellings of one entry valid.
MAX_ACTOR = 256
RUN_STATES = frozenset({"released", "blocked", "failed", "awaiting_review"})
AUDIT_STR_FIELDS = (
    "authorizing_system", "authorizing_operator", "business_system", "user", "access_method",
)


def canonical_json(obj: Any) -> bytes:
    try:
        text = json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise InvalidEntryError(f"body is not canonical JSON: {exc}") from exc
    return text.encode("utf-8")


def format_ts(dt: datetime) -> str:
    """RFC 3339 UTC with microseconds; fixed width so string order is time order."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode_entry(
    index: int, ts: str, kind: str, actor: str, prev_hex: str, body: Mapping[str, Any]
) -> bytes:
    # fullmatch: ``$`` alone would also let a trailing newline through.
    if not isinstance(kind, str) or not KIND_RE.fullmatch(kind) or len(kind) > 64:
        raise InvalidEntryError(f"kind {kind!r} is not a dotted lower-case event name")
    if not isinstance(actor, str) or not actor or len(actor) > MAX_ACTOR:
        raise InvalidEntryError("actor must be a non-empty string of at most 256 characters")
    if not isinstance(body, Mapping):
        raise InvalidEntryError("body must be a mapping")
    obj = {"v": ENTRY_VERSION, "index": index, "ts": ts, "kind": kind, "actor": actor,
           "prev": prev_hex, "body": dict(body)}
    return canonical_json(obj)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _fail(msg: str) -> MalformedEntryError:
    return MalformedEntryError(msg)


def decode_entry(data: bytes, *, check_canonical: bool = True) -> dict[str, Any]:
    """Parse and schema-check one entry; raise MalformedEntryError on anything off."""
    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _fail(f"not UTF-8 JSON: {exc}") from exc
    if not isinstance(obj, dict) or obj.keys() != ENTRY_KEYS:
        raise _fail("wrong set of top-level fields")
    if obj["v"] != ENTRY_VERSION or type(obj["v"]) is not int:
        raise _fail(f"unsupported version {obj['v']!r}")
    if type(obj["index"]) is not int or obj["index"] < 0:
        raise _fail("index is not a non-negative integer")
    ts = obj["ts"]
    if not isinstance(ts, str) or not TS_RE.fullmatch(ts):
        raise _fail("ts is not RFC 3339 UTC with microseconds")
    kind = obj["kind"]
    if not isinstance(kind, str) or not KIND_RE.fullmatch(kind):
        raise _fail("kind is not a dotted event name")
    actor = obj["actor"]
    if not isinstance(actor, str) or not actor or len(actor) > MAX_ACTOR:
        raise _fail("actor is not a non-empty string")
    if not isinstance(obj["prev"], str) or not HEX64_RE.fullmatch(obj["prev"]):
        raise _fail("prev is not 64 lower-case hex digits")
    if not isinstance(obj["body"], dict):
        raise _fail("body is not an object")
    if check_canonical and canonical_json(obj) != data:
        raise _fail("bytes are not in canonical form")
    if kind == "run.finished":
        check_run_finished(obj["body"])
    return obj


def _is_hex64(v: Any) -> bool:
    return isinstance(v, str) and HEX64_RE.fullmatch(v) is not None


def _is_count(v: Any) -> bool:
    return type(v) is int and v >= 0


def check_run_finished(body: Mapping[str, Any]) -> None:
    """The data-flow audit record (数据流通审计) the rules demand of every run."""
    for key in ("job_id", "permit_id", "runner_image"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise _fail(f"run.finished: {key} missing")
    if body.get("state") not in RUN_STATES:
        raise _fail("run.finished: state is not released/blocked/failed/awaiting_review")
    for key in ("script_sha256", "input_sha256"):
        if not _is_hex64(body.get(key)):
            raise _fail(f"run.finished: {key} is not a SHA-256 hex digest")
    audit = body.get("audit")
    if not isinstance(audit, dict):
        raise _fail("run.finished: audit missing")
    for key in AUDIT_STR_FIELDS:
        if not isinstance(audit.get(key), str) or not audit[key]:
            raise _fail(f"run.finished: audit.{key} missing")
    at = audit.get("access_time")
    if not isinstance(at, str) or not RFC3339_RE.fullmatch(at):
        raise _fail("run.finished: audit.access_time is not RFC 3339")
    vol = audit.get("data_volume")
    if not isinstance(vol, dict) or not _is_count(vol.get("rows")) \
            or not _is_count(vol.get("bytes")):
        raise _fail("run.finished: audit.data_volume needs rows and bytes")
    outputs = body.get("outputs")
    if not isinstance(outputs, list):
        raise _fail("run.finished: outputs is not a list")
    for out in outputs:
        if not isinstance(out, dict) or not isinstance(out.get("name"), str) \
                or not _is_hex64(out.get("sha256")) or not _is_count(out.get("bytes")) \
                or not isinstance(out.get("decision"), str):
            raise _fail("run.finished: malformed output record")
    reasons = body.get("reasons")
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise _fail("run.finished: reasons is not a list of strings")
