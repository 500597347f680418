"""Query-string arguments: integers parsed one way for every view, with the field named
and the rule said in the 400."""

from __future__ import annotations

import re

from flask import request

from compute.errors import InvalidInput

DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII only: int() and str.isdigit() accept "²", "٣"


def int_arg(name: str, default: int, lo: int, hi: int) -> int:
    """Query argument ``name``, an integer in [lo, hi]; ``default`` when absent."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not DIGITS.fullmatch(raw) or not lo <= int(raw) <= hi:
        raise InvalidInput(name, f"must be an integer between {lo} and {hi}")
    return int(raw)
