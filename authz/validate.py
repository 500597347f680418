"""Strict parsing of JSON request bodies.

Every field is declared; unknown fields, missing required ones and wrong types are
rejected with :class:`InvalidInput` naming the field and the rule, before anything is
written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from compute.errors import InvalidInput

Check = Callable[[str, Any], Any]


@dataclass(frozen=True)
class Field:
    name: str
    check: Check
    required: bool = True
    default: Any = None


def parse(body: object, fields: Sequence[Field], where: str = "") -> dict[str, Any]:
    if not isinstance(body, Mapping):
        raise InvalidInput(where or "body", "must be a JSON object")
    known = {f.name for f in fields}
    for key in body:
        if key not in known:
            raise InvalidInput(f"{where}{key}", "unknown field")
    out: dict[str, Any] = {}
    for f in fields:
        path = f"{where}{f.name}"
        if f.name not in body or body[f.name] is None:
            if f.required:
                raise InvalidInput(path, "required")
            out[f.name] = f.default
            continue
        out[f.name] = f.check(path, body[f.name])
    return out


def text(max_len: int = 200, min_len: int = 1, pattern: str | None = None) -> Check:
    rx = re.compile(pattern) if pattern else None

    def check(path: str, v: Any) -> str:
        if not isinstance(v, str):
            raise InvalidInput(path, "must be a string")
        if not min_len <= len(v) <= max_len:
            raise InvalidInput(path, f"length must be between {min_len} and {max_len}")
        if rx is not None and not rx.fullmatch(v):
            raise InvalidInput(path, f"must match {pattern}")
        return v

    return check


def choice(*options: str) -> Check:
    def check(path: str, v: Any) -> str:
        if v not in options:
            raise InvalidInput(path, f"must be one of {', '.join(options)}")
        return str(v)

    return check


def integer(lo: int, hi: int) -> Check:
    def check(path: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise InvalidInput(path, "must be an integer")
        if not lo <= v <= hi:
            raise InvalidInput(path, f"must be between {lo} and {hi}")
        return int(v)

    return check


def number(lo: float, hi: float) -> Check:
    def check(path: str, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or v != v:
            raise InvalidInput(path, "must be a number")
        if not lo <= v <= hi:
            raise InvalidInput(path, f"must be between {lo} and {hi}")
        return float(v)

    return check


def iso_date(path: str, v: Any) -> str:
    if not isinstance(v, str):
        raise InvalidInput(path, "must be a date YYYY-MM-DD")
    try:
        date.fromisoformat(v)
    except ValueError:
        raise InvalidInput(path, "must be a date YYYY-MM-DD") from None
    if len(v) != 10:
        raise InvalidInput(path, "must be a date YYYY-MM-DD")
    return v


def aware_datetime(path: str, v: Any) -> datetime:
    if not isinstance(v, str):
        raise InvalidInput(path, "must be an RFC 3339 timestamp with a UTC offset")
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(path, "must be an RFC 3339 timestamp with a UTC offset") from None
    if dt.tzinfo is None:
        raise InvalidInput(path, "must be an RFC 3339 timestamp with a UTC offset")
    return dt.astimezone(UTC)


def list_of(item: Check, min_items: int = 0, max_items: int = 100, unique: bool = False) -> Check:
    def check(path: str, v: Any) -> list[Any]:
        if not isinstance(v, list):
            raise InvalidInput(path, "must be a list")
        if not min_items <= len(v) <= max_items:
            raise InvalidInput(path, f"must have between {min_items} and {max_items} items")
        out = [item(f"{path}[{i}]", x) for i, x in enumerate(v)]
        if unique and len({repr(x) for x in out}) != len(out):
            raise InvalidInput(path, "items must be unique")
        return out

    return check


def obj(fields: Sequence[Field]) -> Check:
    def check(path: str, v: Any) -> dict[str, Any]:
        return parse(v, fields, where=f"{path}.")

    return check


HEX64_RX = r"[0-9a-f]{64}"  # a SHA-256 digest or a raw 32-byte key, lower-case hex
NAME_RX = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
CODE_RX = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
