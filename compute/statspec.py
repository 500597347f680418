"""The statistics spec: what a requester asks the platform to compute, declared, not coded.

A statistics job carries no script. The platform's own code computes each analysis in the
provider's domain from the permitted columns (:mod:`compute.statistics`), so the checker
knows every cell's true contributors and their contributions (:mod:`compute.sdc`), and
what comes out is exactly a checked table.

``parse_statistics_spec`` validates the shape (pydantic) and then the columns against the
permitted schema (column -> declared type), before any job is queued; a bad spec is an
:class:`~compute.errors.InvalidInput` naming the field and the rule.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from compute.errors import InvalidInput

SPEC_VERSION = 1
NUMERIC_TYPES = frozenset({"integer", "number", "boolean"})
#: Never a dimension: a table publishes its dimensions' categories as labels, and the
#: distinct values of a continuous column are records' exact values (the maximum among
#: them). Integer, boolean, string and date columns are, with rare categories pooled.
CONTINUOUS_TYPES = frozenset({"number"})
MAX_ANALYSES = 20
Column = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class Statistic(enum.StrEnum):
    """Of a magnitude table's value column (counts of records are a frequency table)."""

    SUM = "sum"
    MEAN = "mean"
    STD = "std"
    MEDIAN = "median"


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FrequencyTable(_Part):
    """Counts of records by 1-4 categorical columns, with every margin."""

    kind: Literal["frequency"]
    dims: tuple[Column, ...] = Field(min_length=1, max_length=4)


class MagnitudeTable(_Part):
    """Statistics of one numeric column, overall or by up to 4 categorical columns."""

    kind: Literal["magnitude"]
    dims: tuple[Column, ...] = Field(default=(), max_length=4)
    value: Column
    statistics: tuple[Statistic, ...] = Field(min_length=1, max_length=len(Statistic))


class LinearModel(_Part):
    """Ordinary least squares of ``y`` on ``x`` (with an intercept)."""

    kind: Literal["ols"]
    y: Column
    x: tuple[Column, ...] = Field(min_length=1, max_length=20)


class ChiSquareTest(_Part):
    """Chi-square test of independence of two categorical columns."""

    kind: Literal["chi_square"]
    dims: tuple[Column, Column]


Analysis = Annotated[FrequencyTable | MagnitudeTable | LinearModel | ChiSquareTest,
                     Field(discriminator="kind")]


#: Records one person contributes to a noised job where the dataset says which records
#: are one person's: one, so a noised count is of persons by default.
DEFAULT_MAX_RECORDS_PER_PERSON = 1


class DifferentialPrivacy(_Part):
    """Noise instead of suppression: ``epsilon`` for the whole job (split evenly over its
    analyses), clipping ``bounds`` for every summed column. Frequency tables and sums and
    means only (:mod:`compute.statdp`). ``max_records_per_person``: where the dataset
    declares identifier fields, each person's records beyond it are dropped before
    anything is computed, and the noise is scaled to it (the privacy unit is a person)."""

    epsilon: float = Field(gt=0, le=10)
    bounds: dict[Column, tuple[float, float]] = Field(default_factory=dict)
    # Strict: a JSON true or 2.5 is not a number of records.
    max_records_per_person: int = Field(default=DEFAULT_MAX_RECORDS_PER_PERSON, ge=1,
                                        le=1000, strict=True)


PERSON = "person"
RECORD = "record"


def privacy_unit(dp: DifferentialPrivacy, persons: bool) -> dict[str, Any]:
    """What one unit of ``epsilon`` protects, as every record of a noised job states it:
    a person contributing at most ``max_records_per_person`` records where the dataset
    declares identifier fields (``persons``), else a record."""
    if persons:
        return {"unit": PERSON, "max_records_per_person": dp.max_records_per_person}
    return {"unit": RECORD, "unit_basis": "the dataset declares no identifier fields: a "
                                          "person with several records spends epsilon "
                                          "once per record"}


#: What a differentially private job may compute (medians, models and tests have no
#: mechanism here yet).
DP_STATISTICS = frozenset({Statistic.SUM, Statistic.MEAN})


class StatisticsSpec(_Part):
    version: int = SPEC_VERSION
    analyses: tuple[Analysis, ...] = Field(min_length=1, max_length=MAX_ANALYSES)
    dp: DifferentialPrivacy | None = None

    @field_validator("version")
    @classmethod
    def _known(cls, v: int) -> int:
        if v != SPEC_VERSION:
            raise ValueError(f"only version {SPEC_VERSION} is understood")
        return v

    def columns(self) -> set[str]:
        """Every input column the spec reads."""
        used: set[str] = set()
        for a in self.analyses:
            if isinstance(a, FrequencyTable | ChiSquareTest):
                used |= set(a.dims)
            elif isinstance(a, MagnitudeTable):
                used |= {*a.dims, a.value}
            else:
                used |= {a.y, *a.x}
        return used

    def canonical(self) -> bytes:
        """The spec as stored and hashed (its digest is on the ledger like a script's)."""
        return self.model_dump_json(exclude={"dp"} if self.dp is None else None).encode()


def _where(loc: tuple[int | str, ...]) -> str:
    out = "statistics"
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in ("frequency", "magnitude", "ols", "chi_square"):  # union branch
            out += f".{part}"
    return out


def statistics_shape(path: str, raw: object) -> object:
    """``raw`` if it has the shape of a statistics spec (a field check of
    ``authz.validate``: the requester's client runs it before sending, the server before
    looking up the permit); its columns are checked later, against the permit."""
    parse_statistics_shape(raw)
    return raw


def parse_statistics_shape(raw: object) -> StatisticsSpec:
    """``raw`` as a spec if its shape is right; InvalidInput naming the field otherwise."""
    if not isinstance(raw, dict):
        raise InvalidInput("statistics", "must be a JSON object")
    try:
        spec = StatisticsSpec.model_validate(raw)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        rule = {"missing": "required", "extra_forbidden": "unknown field"}.get(
            first["type"], first["msg"].removeprefix("Value error, "))
        raise InvalidInput(_where(first["loc"]), rule) from None
    return spec


def parse_statistics_spec(raw: object, schema: Mapping[str, str]) -> StatisticsSpec:
    """Validate ``raw`` against the shape and the permitted columns' declared types."""
    spec = parse_statistics_shape(raw)
    for i, a in enumerate(spec.analyses):
        _check_columns(a, f"statistics.analyses[{i}]", schema)
    if spec.dp is not None:
        _check_dp(spec, schema)
    return spec


def _check_dp(spec: StatisticsSpec, schema: Mapping[str, str]) -> None:
    assert spec.dp is not None
    for col, (lo, hi) in spec.dp.bounds.items():
        if col not in schema or schema[col] not in NUMERIC_TYPES:
            raise InvalidInput(f"statistics.dp.bounds.{col}", "must be a permitted numeric "
                                                               "column")
        if not lo < hi or not all(map(math.isfinite, (lo, hi))):
            raise InvalidInput(f"statistics.dp.bounds.{col}", "need finite lower < upper")
    for i, a in enumerate(spec.analyses):
        where = f"statistics.analyses[{i}]"
        if isinstance(a, LinearModel | ChiSquareTest):
            raise InvalidInput(f"{where}.kind", "not available with dp: frequency and "
                                                "magnitude (sum, mean) only")
        if isinstance(a, MagnitudeTable):
            if not set(a.statistics) <= DP_STATISTICS:
                raise InvalidInput(f"{where}.statistics", "with dp: sum and mean only")
            if a.value not in spec.dp.bounds:
                raise InvalidInput(f"statistics.dp.bounds.{a.value}",
                                   "required: summed columns need clipping bounds")


def _check_columns(a: Any, where: str, schema: Mapping[str, str]) -> None:
    def known(col: str, field: str, numeric: bool = False) -> None:
        if col not in schema:
            raise InvalidInput(f"{where}.{field}", f"must be a permitted column: one of "
                                                   f"{', '.join(sorted(schema))}")
        if numeric and schema[col] not in NUMERIC_TYPES:
            raise InvalidInput(f"{where}.{field}", f"must be numeric; {col} is "
                                                   f"{schema[col]}")

    dims = getattr(a, "dims", ())
    if len(set(dims)) != len(dims):
        raise InvalidInput(f"{where}.dims", "columns repeat")
    for j, d in enumerate(dims):
        known(d, f"dims[{j}]")
        if schema[d] in CONTINUOUS_TYPES:
            raise InvalidInput(f"{where}.dims[{j}]", f"must not be a number column: {d} is "
                                                     f"{schema[d]}, and a dimension's values "
                                                     "are published as category labels")
    if isinstance(a, MagnitudeTable):
        known(a.value, "value", numeric=True)
        if a.value in dims:
            raise InvalidInput(f"{where}.value", "must not also be a dimension")
    if isinstance(a, LinearModel):
        known(a.y, "y", numeric=True)
        for j, x in enumerate(a.x):
            known(x, f"x[{j}]", numeric=True)
        if a.y in a.x or len(set(a.x)) != len(a.x):
            raise InvalidInput(f"{where}.x", "regressors repeat or include y")
