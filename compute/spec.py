"""The joint-statistics spec a requester submits, validated before any job runs.

``parse_spec`` turns untrusted JSON into a :class:`JointSpec` or raises ``InvalidInput``
naming the field and the rule, so the controller answers a bad spec with a 4xx instead of
failing three hospitals' jobs later. ``JointSpec.to_json`` is the normalized form the
provider's container reads from ``/job/spec.json`` (see ``compute/local_aggregate.py``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from compute.errors import InvalidInput

SPEC_VERSION = 1
# With fewer providers each could subtract its own share from the released sum (two), or
# the aggregate is one provider's figures (one). Settings may raise it, never below two.
DEFAULT_MIN_PROVIDERS = 3

STATISTICS = frozenset(
    {
        "count", "sum", "mean", "variance", "std", "covariance", "correlation", "ols",
        "histogram", "contingency", "grouped", "quantiles", "glm",
    }
)
# Generalized linear models fitted by IRLS, one joint round per iteration (compute/glm.py).
GLM_FAMILIES = frozenset({"poisson", "binomial", "negative_binomial"})
MAX_GLM_REGRESSORS = 20
NUMERIC_UNIVARIATE = frozenset({"sum", "mean", "variance", "std"})
MOMENT_STATS = frozenset({"covariance", "correlation"})
# DP here covers statistics with a bounded per-record contribution (counts, clipped sums,
# and a GLM round's weighted sums at public coefficients over clipped values, bounded in
# compute/glmdp.py); second moments would need squared bounds and noise that swamps them at
# useful epsilons.
# A person's records a DP aggregate takes at most (dp.max_records_per_person): the noise grows
# with it, so a larger bound buys nothing past a few records.
MAX_RECORDS_PER_PERSON = 1000
DP_STATISTICS = frozenset({"count", "sum", "mean", "histogram", "contingency", "grouped",
                           "quantiles", "glm"})
COLUMN_TYPES = frozenset({"integer", "number", "string", "date", "boolean"})
NUMERIC_TYPES = frozenset({"integer", "number", "boolean"})

MAX_COLUMNS = 64
MAX_CATEGORIES = 256
MAX_GROUP_CELLS = 256  # product of the per-key sizes, before the single "other" cell
MAX_BIN_EDGES = 4097
MAX_CIPHERTEXTS = 16  # per family; 16 x 4095 slots bounds upload size (~5 MB per provider)

Category = str | int | float


@dataclass(frozen=True)
class GroupKey:
    column: str
    categories: tuple[Category, ...] = ()
    edges: tuple[float, ...] = ()

    @property
    def size(self) -> int:
        return len(self.categories) if self.categories else len(self.edges) - 1


@dataclass(frozen=True)
class GLMSpec:
    """One IRLS round: the model, and the coefficients the round is evaluated at.

    ``beta`` (intercept first) is None in the first round, which starts from the family's
    usual starting means instead (as statsmodels does); later rounds carry the requester's
    update of the previous round's pooled sums.
    """

    family: str
    y: str
    x: tuple[str, ...]
    beta: tuple[float, ...] | None = None
    alpha: float = 1.0  # negative binomial dispersion (NB2: var = mu + alpha mu^2), fixed

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "y": self.y, "x": list(self.x),
                "beta": None if self.beta is None else list(self.beta), "alpha": self.alpha}


@dataclass(frozen=True)
class JointSpec:
    statistics: frozenset[str]
    columns: tuple[str, ...] = ()
    shift: Mapping[str, float] = field(default_factory=dict)
    ols_y: str | None = None
    ols_x: tuple[str, ...] = ()
    bins: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    contingency: tuple[str, str, tuple[Category, ...], tuple[Category, ...]] | None = None
    group_keys: tuple[GroupKey, ...] = ()
    group_values: tuple[str, ...] = ()
    quantiles: Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]] = field(
        default_factory=dict
    )  # column -> (probs, edges)
    dp_epsilon: float | None = None
    dp_bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    # At most this many records of one person enter a provider's DP aggregate (where the
    # dataset declares identifier fields): the sensitivities scale by it, so epsilon is per
    # person at each provider (compute/joint_units.py, compute/dp.py).
    dp_max_records_per_person: int = 1
    glm: GLMSpec | None = None
    version: int = SPEC_VERSION

    @property
    def group_cells(self) -> int:
        return math.prod(k.size for k in self.group_keys) if self.group_keys else 0

    def to_json(self) -> dict[str, Any]:
        """The normalized spec, the only input (besides data) of the container script."""
        return {
            "version": self.version,
            "statistics": sorted(self.statistics),
            "columns": list(self.columns),
            "shift": dict(self.shift),
            "ols": {"y": self.ols_y, "x": list(self.ols_x)} if self.ols_y else None,
            "bins": {c: list(e) for c, e in self.bins.items()},
            "contingency": None if self.contingency is None else {
                "rows": self.contingency[0], "cols": self.contingency[1],
                "row_categories": list(self.contingency[2]),
                "col_categories": list(self.contingency[3]),
            },
            "groups": None if not self.group_keys else {
                "by": [
                    {"column": k.column, "categories": list(k.categories)} if k.categories
                    else {"column": k.column, "edges": list(k.edges)}
                    for k in self.group_keys
                ],
                "values": list(self.group_values),
            },
            "quantiles": {c: {"probs": list(p), "edges": list(e)}
                          for c, (p, e) in self.quantiles.items()},
            "glm": None if self.glm is None else self.glm.to_json(),
            "dp": None if self.dp_epsilon is None else {
                "epsilon": self.dp_epsilon,
                "bounds": {c: list(b) for c, b in self.dp_bounds.items()},
                # Written only when not the default: earlier specs keep their digest.
                **({"max_records_per_person": self.dp_max_records_per_person}
                   if self.dp_max_records_per_person != 1 else {}),
            },
        }


def _fail(fld: str, rule: str, msg: str) -> InvalidInput:
    return InvalidInput(fld, rule, f"{fld}: {msg}")


def _obj(raw: object, fld: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) for k in raw):
        raise _fail(fld, "type", "must be an object")
    return raw


def _list(raw: object, fld: str, *, min_len: int = 0, max_len: int = 1 << 30) -> list[Any]:
    if not isinstance(raw, list):
        raise _fail(fld, "type", "must be a list")
    if len(raw) < min_len:
        raise _fail(fld, "too_short", f"needs at least {min_len} item(s)")
    if len(raw) > max_len:
        raise _fail(fld, "too_many", f"at most {max_len} items")
    return raw


def _num(raw: object, fld: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise _fail(fld, "type", "must be a finite number")
    return float(raw)


class _Parser:
    def __init__(self, schema: Mapping[str, str]) -> None:
        for name, typ in schema.items():
            if typ not in COLUMN_TYPES:
                raise _fail(f"schema.{name}", "type", f"unknown column type {typ!r}")
        self.schema = schema

    def column(self, raw: object, fld: str, *, numeric: bool = False) -> str:
        if not isinstance(raw, str):
            raise _fail(fld, "type", "must be a column name")
        if raw not in self.schema:
            raise _fail(fld, "unknown_column", f"no column {raw!r} in the dataset; its "
                        f"permitted columns are: {', '.join(sorted(self.schema))}")
        if numeric and self.schema[raw] not in NUMERIC_TYPES:
            raise _fail(fld, "not_numeric", f"column {raw!r} is {self.schema[raw]}")
        return raw

    def columns(self, raw: object, fld: str, *, numeric: bool, min_len: int = 1) -> tuple[str, ...]:
        items = _list(raw, fld, min_len=min_len, max_len=MAX_COLUMNS)
        cols = tuple(self.column(c, f"{fld}[{i}]", numeric=numeric) for i, c in enumerate(items))
        if len(set(cols)) != len(cols):
            raise _fail(fld, "duplicate", "columns repeat")
        return cols

    @staticmethod
    def edges(raw: object, fld: str) -> tuple[float, ...]:
        items = _list(raw, fld, min_len=2, max_len=MAX_BIN_EDGES)
        edges = tuple(_num(e, f"{fld}[{i}]") for i, e in enumerate(items))
        if any(b <= a for a, b in itertools.pairwise(edges)):
            raise _fail(fld, "not_increasing", "bin edges must be strictly increasing")
        return edges

    @staticmethod
    def categories(raw: object, fld: str) -> tuple[Category, ...]:
        items = _list(raw, fld, min_len=1, max_len=MAX_CATEGORIES)
        for i, c in enumerate(items):
            if isinstance(c, bool) or not isinstance(c, str | int | float):
                raise _fail(f"{fld}[{i}]", "type", "categories are strings or numbers")
        if len({str(c) for c in items}) != len(items):
            raise _fail(fld, "duplicate", "categories repeat")
        return tuple(items)


def parse_spec(raw: object, schema: Mapping[str, str]) -> JointSpec:
    """Validate a requester's spec against the dataset schema (column -> type)."""
    p = _Parser(schema)
    top = _obj(raw, "spec")
    known = {"version", "statistics", "columns", "shift", "ols", "bins", "contingency",
             "groups", "quantiles", "dp", "glm"}
    for key in top:
        if key not in known:
            raise _fail(key, "unknown_field", "not a spec field")
    if top.get("version", SPEC_VERSION) != SPEC_VERSION:
        raise _fail("version", "unsupported", f"only version {SPEC_VERSION} is understood")
    stats_raw = _list(top.get("statistics"), "statistics", min_len=1, max_len=len(STATISTICS))
    for i, s in enumerate(stats_raw):
        if s not in STATISTICS:
            raise _fail(f"statistics[{i}]", "unknown_statistic", f"unknown statistic {s!r}")
    stats = frozenset(stats_raw)

    def section(name: str, needed_by: frozenset[str]) -> Any:
        present = top.get(name) is not None
        if present and not stats & needed_by:
            raise _fail(name, "statistic_not_requested", "given but no statistic uses it")
        if not present and stats & needed_by:
            raise _fail(name, "required", f"required by {sorted(stats & needed_by)}")
        return top.get(name)

    columns: tuple[str, ...] = ()
    if section("columns", NUMERIC_UNIVARIATE | MOMENT_STATS | {"count"}) is not None:
        numeric = bool(stats & (NUMERIC_UNIVARIATE | MOMENT_STATS))
        columns = p.columns(top["columns"], "columns", numeric=numeric)

    ols_y: str | None = None
    ols_x: tuple[str, ...] = ()
    if (ols := section("ols", frozenset({"ols"}))) is not None:
        ols = _obj(ols, "ols")
        ols_y = p.column(ols.get("y"), "ols.y", numeric=True)
        ols_x = p.columns(ols.get("x"), "ols.x", numeric=True)
        if ols_y in ols_x:
            raise _fail("ols.x", "duplicate", "y cannot also be a regressor")

    bins: dict[str, tuple[float, ...]] = {}
    if (b := section("bins", frozenset({"histogram"}))) is not None:
        for col, edges in _obj(b, "bins").items():
            p.column(col, f"bins.{col}", numeric=True)
            bins[col] = p.edges(edges, f"bins.{col}")
        if not bins:
            raise _fail("bins", "too_short", "needs at least one column")

    contingency = None
    if (ct := section("contingency", frozenset({"contingency"}))) is not None:
        ct = _obj(ct, "contingency")
        rc = p.categories(ct.get("row_categories"), "contingency.row_categories")
        cc = p.categories(ct.get("col_categories"), "contingency.col_categories")
        if len(rc) * len(cc) > MAX_GROUP_CELLS:
            raise _fail("contingency", "too_many_groups", f"more than {MAX_GROUP_CELLS} cells")
        contingency = (p.column(ct.get("rows"), "contingency.rows"),
                       p.column(ct.get("cols"), "contingency.cols"), rc, cc)

    group_keys: tuple[GroupKey, ...] = ()
    group_values: tuple[str, ...] = ()
    if (g := section("groups", frozenset({"grouped"}))) is not None:
        g = _obj(g, "groups")
        by = g.get("by")
        if isinstance(by, str):  # shorthand: {"by": "diagnosis", "categories": [...]}
            by = [{"column": by, "categories": g.get("categories")}]
        keys = []
        for i, k in enumerate(_list(by, "groups.by", min_len=1, max_len=4)):
            k = _obj(k, f"groups.by[{i}]")
            col = p.column(k.get("column"), f"groups.by[{i}].column")
            if k.get("edges") is not None:
                p.column(col, f"groups.by[{i}].column", numeric=True)
                keys.append(GroupKey(col, edges=p.edges(k["edges"], f"groups.by[{i}].edges")))
            else:
                cats = p.categories(k.get("categories"), f"groups.by[{i}].categories")
                keys.append(GroupKey(col, categories=cats))
        group_keys = tuple(keys)
        if math.prod(k.size for k in group_keys) > MAX_GROUP_CELLS:
            raise _fail("groups.by", "too_many_groups", f"more than {MAX_GROUP_CELLS} groups")
        group_values = p.columns(g.get("values", []), "groups.values", numeric=True, min_len=0)

    quantiles: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {}
    if (q := section("quantiles", frozenset({"quantiles"}))) is not None:
        for col, qs in _obj(q, "quantiles").items():
            p.column(col, f"quantiles.{col}", numeric=True)
            qs = _obj(qs, f"quantiles.{col}")
            probs = tuple(_num(x, f"quantiles.{col}.probs")
                          for x in _list(qs.get("probs"), f"quantiles.{col}.probs", min_len=1,
                                         max_len=99))
            if any(not 0.0 <= x <= 1.0 for x in probs):
                raise _fail(f"quantiles.{col}.probs", "range", "probabilities lie in [0, 1]")
            quantiles[col] = (probs, p.edges(qs.get("edges"), f"quantiles.{col}.edges"))
        if not quantiles:
            raise _fail("quantiles", "too_short", "needs at least one column")

    glm = None
    if (g := section("glm", frozenset({"glm"}))) is not None:
        glm = _glm(p, _obj(g, "glm"))

    shift: dict[str, float] = {}
    for col, val in _obj(top.get("shift", {}), "shift").items():
        p.column(col, f"shift.{col}", numeric=True)
        shift[col] = _num(val, f"shift.{col}")

    dp_epsilon, dp_bounds, per_person = None, {}, 1
    if top.get("dp") is not None:
        dp = _obj(top["dp"], "dp")
        for key in sorted(set(dp) - {"epsilon", "bounds", "max_records_per_person"}):
            raise _fail(f"dp.{key}", "unknown_field", "not a dp field")
        if (raw_l := dp.get("max_records_per_person", 1)) is not None:
            if isinstance(raw_l, bool) or not isinstance(raw_l, int) or \
                    not 1 <= raw_l <= MAX_RECORDS_PER_PERSON:
                raise _fail("dp.max_records_per_person", "range",
                            f"an integer in [1, {MAX_RECORDS_PER_PERSON}]")
            per_person = raw_l
        dp_epsilon = _num(dp.get("epsilon"), "dp.epsilon")
        if not 0.0 < dp_epsilon <= 10.0:
            raise _fail("dp.epsilon", "range", "epsilon must lie in (0, 10]")
        if stats - DP_STATISTICS:
            raise _fail("dp", "statistic_not_supported",
                        f"no DP release for {sorted(stats - DP_STATISTICS)}")
        for col, bnd in _obj(dp.get("bounds", {}), "dp.bounds").items():
            p.column(col, f"dp.bounds.{col}", numeric=True)
            lo, hi = (_num(x, f"dp.bounds.{col}") for x in _list(bnd, f"dp.bounds.{col}",
                                                                  min_len=2, max_len=2))
            if not lo < hi:
                raise _fail(f"dp.bounds.{col}", "not_increasing", "need lower < upper")
            dp_bounds[col] = (lo, hi)
        summed = set(group_values) | (set(columns) if stats & {"sum", "mean"} else set())
        for col in sorted(summed - set(dp_bounds)):
            raise _fail(f"dp.bounds.{col}", "required", "summed columns need clipping bounds")
        if glm is not None:
            from compute.glmdp import row_sensitivities  # it depends on GLMSpec

            row_sensitivities(glm, dp_bounds)  # bounds, coefficients: refused if unbounded

    # Column-keyed sections in one order (sorted), whatever order the requester wrote:
    # the slot layout follows this order, and every party must derive the same layout.
    spec = JointSpec(
        statistics=stats, columns=columns, shift=dict(sorted(shift.items())), ols_y=ols_y,
        ols_x=ols_x, bins=dict(sorted(bins.items())), contingency=contingency,
        group_keys=group_keys, group_values=group_values,
        quantiles=dict(sorted(quantiles.items())), dp_epsilon=dp_epsilon,
        dp_bounds=dict(sorted(dp_bounds.items())), dp_max_records_per_person=per_person,
        glm=glm,
    )
    from compute.layout import build_layout  # layout depends on JointSpec, not the reverse

    build_layout(spec)  # raises InvalidInput("spec", "too_many_slots") past the cap
    return spec


def _glm(p: _Parser, g: Mapping[str, Any]) -> GLMSpec:
    for key in g:
        if key not in ("family", "y", "x", "beta", "alpha"):
            raise _fail(f"glm.{key}", "unknown_field", "not a glm field")
    family = g.get("family")
    if family not in GLM_FAMILIES:
        raise _fail("glm.family", "unsupported", f"one of {sorted(GLM_FAMILIES)}")
    y = p.column(g.get("y"), "glm.y", numeric=True)
    x = p.columns(g.get("x"), "glm.x", numeric=True)
    if len(x) > MAX_GLM_REGRESSORS:
        raise _fail("glm.x", "too_many", f"at most {MAX_GLM_REGRESSORS} regressors")
    if y in x:
        raise _fail("glm.x", "duplicate", "y cannot also be a regressor")
    beta = None
    if g.get("beta") is not None:
        items = _list(g["beta"], "glm.beta", min_len=len(x) + 1, max_len=len(x) + 1)
        beta = tuple(_num(b, f"glm.beta[{i}]") for i, b in enumerate(items))
        if any(abs(b) > 1e6 for b in beta):
            raise _fail("glm.beta", "range", "coefficients lie in [-1e6, 1e6]")
    alpha = _num(g.get("alpha", 1.0), "glm.alpha")
    if not 0.0 < alpha <= 1e3:
        raise _fail("glm.alpha", "range", "alpha lies in (0, 1000]")
    return GLMSpec(str(family), y, x, beta, alpha)


def spec_from_json(raw: Mapping[str, Any], schema: Mapping[str, str]) -> JointSpec:
    """Rebuild a spec from its normalized JSON (re-validated: JSON crossed a trust boundary)."""
    out: dict[str, Any] = {k: v for k, v in raw.items() if v not in (None, {}, [])}
    out.pop("dp", None)
    if raw.get("dp"):
        out["dp"] = raw["dp"]
    return parse_spec(out, schema)
