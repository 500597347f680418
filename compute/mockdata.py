"""Mock data from a dataset's declared schema only: never from its values.

A requester develops and tests a script on a table shaped like the provider's dataset
(same columns, same declared types, categories, ranges and missing rates) without any
real value in it. The generator sees only the field declarations the provider published
in the catalog; it never reads the dataset file, so nothing in the mock table is derived
from a provider's data.

- Deterministic by seed: the same declarations and seed give the same table, here, on the
  controller (``GET /datasets/<id>/mock-data``) and on the agent (the mock run before a
  real one). Each column draws from its own generator seeded by (seed, column name), so a
  table of some of the columns holds exactly those columns of the full table: the agent's
  mock run on the permitted columns sees what ``sandbox mock-data`` downloaded.
- Distributions are uniform over what was declared: the categories, the range (defaults
  below when none is declared), plus the declared share of missing cells.
- Identifier columns (sensitivity ``identifier``) and free text (a string with no declared
  categories) get synthetic values that no real record holds: ``MOCK-<column>-<n>`` for
  text, negative numbers for numeric identifiers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from compute.errors import InvalidInput

DEFAULT_ROWS = 200
MAX_ROWS = 10_000
# Used only when a numeric or date field declares no range.
DEFAULT_RANGE: dict[str, tuple[Any, Any]] = {
    "integer": (0, 100), "number": (0.0, 1000.0),
    "date": ("2000-01-01", "2025-12-31"),
}
SYNTHETIC_PREFIX = "MOCK"


def _rng(seed: int, column: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{column}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def is_synthetic(field: Mapping[str, Any]) -> bool:
    """Whether the column gets synthetic values (identifiers and free text)."""
    return field.get("sensitivity") == "identifier" or (
        field["type"] == "string" and not field.get("categories"))


def _column(field: Mapping[str, Any], rows: int, rng: np.random.Generator) -> list[Any]:
    name, kind = field["name"], field["type"]
    if is_synthetic(field):
        if kind in ("integer", "number"):
            # Negative: real identifiers are counted upwards, so none is matched.
            return [-(i + 1) for i in range(rows)]
        return [f"{SYNTHETIC_PREFIX}-{name}-{i + 1:06d}" for i in range(rows)]
    categories: Sequence[Any] | None = field.get("categories")
    if categories:
        return [categories[i] for i in rng.integers(0, len(categories), rows)]
    lo, hi = field.get("range") or DEFAULT_RANGE.get(kind, (None, None))
    if kind == "integer":
        return [int(v) for v in rng.integers(int(lo), int(hi), rows, endpoint=True)]
    if kind == "number":
        return [round(float(v), 2) for v in rng.uniform(float(lo), float(hi), rows)]
    if kind == "date":
        first, last = date.fromisoformat(lo), date.fromisoformat(hi)
        days = rng.integers(0, (last - first).days, rows, endpoint=True)
        return [(first + timedelta(days=int(d))).isoformat() for d in days]
    if kind == "boolean":
        return ["true" if v else "false" for v in rng.integers(0, 2, rows)]
    raise InvalidInput(f"fields[{name}].type", f"no mock values for type {kind!r}")


def generate(fields: Sequence[Mapping[str, Any]], rows: int = DEFAULT_ROWS, seed: int = 0
             ) -> pd.DataFrame:
    """A mock table of ``rows`` rows with one column per declared field, in order."""
    if not 1 <= rows <= MAX_ROWS:
        raise InvalidInput("rows", f"must be between 1 and {MAX_ROWS}")
    columns: dict[str, list[Any]] = {}
    for field in fields:
        rng = _rng(seed, field["name"])
        values = _column(field, rows, rng)
        rate = float(field.get("missing_rate") or 0.0)
        if rate > 0:
            # Drawn after the values, from the same column generator: the values stay the
            # same whatever the rate.
            missing = rng.random(rows) < rate
            values = ["" if m else v for v, m in zip(values, missing, strict=True)]
        columns[field["name"]] = values
    return pd.DataFrame(columns)


def to_csv(frame: pd.DataFrame) -> bytes:
    text: str = frame.to_csv(index=False, lineterminator="\n")
    return text.encode()
