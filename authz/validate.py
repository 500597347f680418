"""Strict parsing of JSON request bodies.

Every field is declared; unknown fields, missing required ones and wrong types are
rejected with :class:`InvalidInput` naming the field and the rule, before anything is
written. Text that no database can store the same way is rejected everywhere it enters
(:func:`storable` for whole bodies, :func:`text` per field).
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from compute.errors import InvalidInput

Check = Callable[[str, Any], Any]

# The JSON Schema of each check, kept beside it so the API's OpenAPI document is generated
# from the same specs that validate the bodies (sandbox/api/contract.py).
_SCHEMAS: weakref.WeakKeyDictionary[Check, dict[str, Any]] = weakref.WeakKeyDictionary()


def described(check: Check, schema: dict[str, Any]) -> Check:
    """``check``, with the JSON Schema of what it accepts."""
    _SCHEMAS[check] = schema
    return check


def schema_of(check: Check) -> dict[str, Any]:
    """The JSON Schema of what ``check`` accepts ({} for any JSON value: a nested spec
    validated by its own parser, e.g. a statistics spec)."""
    return dict(_SCHEMAS.get(check, {}))


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    # An optional field may also be sent as null (parse treats it as absent).
    return {"anyOf": [schema, {"type": "null"}]} if schema else schema


def spec_schema(fields: Sequence[Field]) -> dict[str, Any]:
    """The JSON Schema of a body that :func:`parse` accepts under ``fields``."""
    return {"type": "object", "additionalProperties": False,
            "properties": {f.name: schema_of(f.check) if f.required
                           else _nullable(schema_of(f.check)) for f in fields},
            "required": [f.name for f in fields if f.required]}

# An unpaired surrogate cannot be encoded as UTF-8, and PostgreSQL text cannot hold NUL
# while SQLite stores it: either one reaching the database would be a 500 on one backend
# and kept data on the other. JSON can carry both ("\u0000", "\ud800").
UNSTORABLE_RX = re.compile(r"[\x00\ud800-\udfff]")
UNSTORABLE_RULE = "must not contain NUL or unpaired surrogate characters"
# Names, codes, ids and locations are single lines: no C0 control character or DEL has a
# meaning there, and each one would only hide text from whoever reads it later.
CONTROL_RX = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
CONTROL_RULE = "must not contain control or unpaired surrogate characters"


def unstorable(v: str) -> bool:
    """Whether ``v`` holds a character :data:`UNSTORABLE_RX` refuses. An ASCII string (all
    base64, so every ciphertext and encoded output; ``isascii`` reads a flag CPython keeps)
    can hold only NUL of them, found by a byte scan: the regular expression took ~20 ms on
    a joint part's 1.2 MB report."""
    return "\x00" in v if v.isascii() else UNSTORABLE_RX.search(v) is not None


def chars(path: str, v: str, single_line: bool = False) -> str:
    """``v`` if every character can be stored; single-line text also holds no controls."""
    if single_line:
        if CONTROL_RX.search(v):
            raise InvalidInput(path, CONTROL_RULE)
    elif unstorable(v):
        raise InvalidInput(path, UNSTORABLE_RULE)
    return v


def storable(body: object) -> object:
    """``body`` if no string in it, key or value, holds an unstorable character.

    Runs on every JSON body before any view sees it, so that values a spec passes through
    unparsed (nested specs) are covered too. Depth-first with one iterator per open
    container: memory grows with the nesting depth only (a body nested as deeply as the
    JSON parser allows must not exhaust the stack), and a path is spelled out only for
    the value that fails.
    """
    keys: list[str | int] = []  # where the current value sits, one key per open container
    children: list[Iterator[tuple[str | int, object]]] = []
    value = body
    while True:
        if isinstance(value, str):
            if unstorable(value):
                raise InvalidInput(_path(keys), UNSTORABLE_RULE)
        elif isinstance(value, dict):
            for key in value:
                # The key itself is not echoed: the field named is the enclosing object.
                if unstorable(key):
                    raise InvalidInput(_path(keys), f"keys {UNSTORABLE_RULE}")
            children.append(iter(value.items()))
            keys.append("")
        elif isinstance(value, list):
            children.append(enumerate(value))
            keys.append(0)
        while children:
            step = next(children[-1], None)
            if step is not None:
                keys[-1], value = step
                break
            children.pop()
            keys.pop()
        else:
            return body


def _path(keys: Sequence[str | int]) -> str:
    """The field path as :func:`parse` spells it: ``items[0].columns[1]``."""
    out = ""
    for key in keys:
        if isinstance(key, int):
            out = f"{out or 'body'}[{key}]"
        elif out:
            out = f"{out}.{key}"
        else:
            out = key
    return out or "body"


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


def text(max_len: int = 200, min_len: int = 1, pattern: str | None = None,
         single_line: bool = False) -> Check:
    """A string of ``min_len``–``max_len`` characters, all storable.

    ``single_line`` also refuses control characters; leave it off for text that may hold
    line breaks, tabs or terminal output (scripts, summaries, reasons, logs).
    """
    rx = re.compile(pattern) if pattern else None

    def check(path: str, v: Any) -> str:
        if not isinstance(v, str):
            raise InvalidInput(path, "must be a string")
        chars(path, v, single_line)
        if not min_len <= len(v) <= max_len:
            raise InvalidInput(path, f"length must be between {min_len} and {max_len}")
        if rx is not None and not rx.fullmatch(v):
            raise InvalidInput(path, f"must match {pattern}")
        return v

    schema: dict[str, Any] = {"type": "string", "minLength": min_len, "maxLength": max_len}
    if pattern:
        schema["pattern"] = f"^(?:{pattern})$"
    return described(check, schema)


def choice(*options: str) -> Check:
    def check(path: str, v: Any) -> str:
        if v not in options:
            raise InvalidInput(path, f"must be one of {', '.join(options)}")
        return str(v)

    return described(check, {"type": "string", "enum": [str(o) for o in options]})


def integer(lo: int, hi: int) -> Check:
    def check(path: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise InvalidInput(path, "must be an integer")
        if not lo <= v <= hi:
            raise InvalidInput(path, f"must be between {lo} and {hi}")
        return int(v)

    return described(check, {"type": "integer", "minimum": lo, "maximum": hi})


def boolean(path: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise InvalidInput(path, "must be true or false")
    return v


def number(lo: float, hi: float) -> Check:
    def check(path: str, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or v != v:
            raise InvalidInput(path, "must be a number")
        if not lo <= v <= hi:
            raise InvalidInput(path, f"must be between {lo} and {hi}")
        return float(v)

    return described(check, {"type": "number", "minimum": lo, "maximum": hi})


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

    return described(check, {"type": "array", "items": schema_of(item),
                             "minItems": min_items, "maxItems": max_items,
                             **({"uniqueItems": True} if unique else {})})


def obj(fields: Sequence[Field]) -> Check:
    def check(path: str, v: Any) -> dict[str, Any]:
        return parse(v, fields, where=f"{path}.")

    return described(check, spec_schema(fields))


described(boolean, {"type": "boolean"})
described(iso_date, {"type": "string", "format": "date"})
described(aware_datetime, {"type": "string", "format": "date-time"})

HEX64_RX = r"[0-9a-f]{64}"  # a SHA-256 digest or a raw 32-byte key, lower-case hex
NAME_RX = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
CODE_RX = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"


#: A body of one reason, 3–2000 characters: denying, revoking, stopping, refusing a script.
REASON_SPEC = [Field("reason", text(2000, min_len=3))]
