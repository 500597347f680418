"""Reading a provider's dataset inside its domain: schema checks and column projection.

Only the agent calls this, on the provider's side. Locations are resolved under the
agent's configured data roots, so a controller that names ``/etc/shadow`` as a dataset
location gets a refusal, not a file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from compute.errors import InvalidInput
from compute.sdc.units import contributor_codes

TRUE_FALSE = {"true", "false", "1", "0", "yes", "no", "t", "f"}


def resolve(location: str, roots: Sequence[Path]) -> Path:
    if not roots:
        raise InvalidInput("location", "the agent has no data roots configured")
    if "\x00" in location:  # no file system path holds one; os calls raise ValueError
        raise InvalidInput("location", "must not contain a NUL character")
    candidate = Path(location)
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    real = Path(os.path.realpath(candidate))
    for root in roots:
        if real.is_relative_to(os.path.realpath(root)):
            return real
    raise InvalidInput("location", "must resolve inside the agent's data roots")


def _read(path: Path, fmt: str, columns: Sequence[str] | None) -> pd.DataFrame:
    if not path.is_file():
        raise InvalidInput("location", "file not found or not a regular file")
    if not os.access(path, os.R_OK):
        raise InvalidInput("location", "file is not readable by the agent")
    try:
        if fmt == "parquet":
            return pd.read_parquet(path, columns=list(columns) if columns else None)
        # Everything as text first: types are checked against the declared schema below,
        # not guessed by the parser.
        return pd.read_csv(path, dtype=str, keep_default_na=False,
                           usecols=list(columns) if columns else None)
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise InvalidInput("location", f"cannot be read as {fmt}: {type(e).__name__}") from None


def _check_declared(field: dict[str, Any], present: pd.Series) -> None:
    """Hold the file to the field's declared categories and range (the mock data is made
    from them). The rule names the declaration, never a value of the file."""
    name, kind = field["name"], field["type"]
    if field.get("categories") and not present.isin(list(field["categories"])).all():
        raise InvalidInput(f"fields[{name}].categories",
                           f"column {name!r} holds values outside its declared categories")
    if field.get("range"):
        lo, hi = field["range"]
        values = present if kind == "date" else pd.to_numeric(present)
        if kind != "date":
            lo, hi = float(lo), float(hi)
        if not ((values >= lo) & (values <= hi)).all():
            raise InvalidInput(f"fields[{name}].range",
                               f"column {name!r} holds values outside its declared range")


def _check_column(name: str, kind: str, series: pd.Series) -> pd.Series:
    """The column's present (non-missing) values as text, once they fit the type."""
    text = series.astype(str).str.strip()
    present = text[(text != "") & (text.str.lower() != "nan") & (text.str.lower() != "none")]
    where = f"fields[{name}].type"
    if kind in ("integer", "number"):
        nums = pd.to_numeric(present, errors="coerce")
        if nums.isna().any():
            raise InvalidInput(where, f"column {name!r} holds values that are not {kind}s")
        if kind == "integer" and not (nums == nums.round()).all():
            raise InvalidInput(where, f"column {name!r} holds non-integer values")
    elif kind == "boolean":
        if not present.str.lower().isin(TRUE_FALSE).all():
            raise InvalidInput(where, f"column {name!r} holds values that are not booleans")
    elif kind == "date":
        parsed = pd.to_datetime(present, errors="coerce", format="%Y-%m-%d")
        if parsed.isna().any():
            raise InvalidInput(where, f"column {name!r} holds values that are not YYYY-MM-DD")
    return present


def schema_check(path: Path, fmt: str, fields: Sequence[dict[str, Any]]) -> int:
    """Return the row count, or raise InvalidInput naming the first mismatch."""
    frame = _read(path, fmt, None)
    declared = [f["name"] for f in fields]
    missing = [c for c in declared if c not in frame.columns]
    if missing:
        raise InvalidInput("fields", f"declared field(s) missing from the file: {missing}")
    extra = [i for i, c in enumerate(frame.columns, 1) if c not in declared]
    if extra:
        # An undeclared column carries no sensitivity level, so it cannot be governed.
        # Named by position, not by its header: a file without a header row has its first
        # record there, and this text reaches the controller.
        raise InvalidInput("fields", f"file has {len(extra)} undeclared column(s), the "
                                     f"first at position {extra[0]}")
    for f in fields:
        _check_declared(f, _check_column(f["name"], f["type"], frame[f["name"]]))
    return len(frame)


@dataclass(frozen=True)
class ProjectedInput:
    path: Path
    rows: int
    size: int
    sha256: str


def canonical(value: str) -> str:
    """One spelling per value, so ``12.50`` in an output matches ``12.5`` in the input."""
    v = value.strip()
    try:
        return repr(float(v))
    except ValueError:
        return v


def rare_values(frame: pd.DataFrame, k: int) -> frozenset[str]:
    """Values held by fewer than ``k`` records in their column.

    An output cell equal to one of them reproduces an individual's value (a raw row, a
    minimum or maximum): the output checks block it.
    """
    rare: set[str] = set()
    common: set[str] = set()
    for col in frame.columns:
        counts = frame[col].astype(str).map(canonical).value_counts()
        for v, c in counts.items():
            (rare if c < k else common).add(str(v))
    # A value common in some column (an age of 40, a diagnosis code) reveals no one.
    return frozenset(rare - common - {"", "nan"})


def read_source(src: Path, fmt: str) -> pd.DataFrame:
    """Every column of the source (the audit's identities: :mod:`containers.audit_ids`),
    in the order :func:`project` writes the records. Never leaves the provider's domain."""
    return _read(src, fmt, None)


def project(src: Path, fmt: str, columns: Sequence[str], dest: Path) -> ProjectedInput:
    """Write only the permitted columns to ``dest`` as CSV (the job's read-only input)."""
    frame = _read(src, fmt, columns)
    frame = frame[list(columns)]
    frame.to_csv(dest, index=False)
    data = dest.read_bytes()
    return ProjectedInput(dest, len(frame), len(data), hashlib.sha256(data).hexdigest())


def contributors(src: Path, fmt: str, identifiers: Sequence[str], key: str) -> Any:
    """One contributor number per record of the source, in the order :func:`project`
    writes the records, from the dataset's declared identifier columns (whatever the
    permit: they are read here, in the provider's domain, and never projected). The
    identifier values are hashed under ``key`` and only the numbers come out."""
    return contributor_codes(_read(src, fmt, list(identifiers)), key)
