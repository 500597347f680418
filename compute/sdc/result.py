"""Checked results: released values with per-cell status and the rules that applied.

Shaped like ACRO's records (a table plus, per check, which cells it hit and the overall
status), but the per-cell metadata travels with the cell so the route can serialize it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from compute.sdc.policy import Action, SDCPolicy
from compute.sdc.rules import CellStatus, Measure, Outcome, Rule, action_of, reasons

# Label of a total along a dimension, as pandas.crosstab's default ``margins_name``.
MARGIN = "All"

Mask = np.ndarray[Any, np.dtype[np.bool_]]
Bits = np.ndarray[Any, np.dtype[np.uint16]]


def _plain(v: object) -> object:
    """numpy scalars to Python ones, NaN/NA to None, for JSON."""
    if v is None or v is pd.NA:
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and np.isnan(v):
        return None
    return v


@dataclass(frozen=True, eq=False)
class CheckedTable:
    """A table after the checks.

    ``cells`` is indexed by the dimensions (a :data:`MARGIN` label marks a total along a
    dimension; a table with no dimensions has the single cell ``MARGIN``) and has columns
    ``value`` (missing where suppressed), ``status`` (:class:`CellStatus`) and ``rules``
    (tuple of :class:`Rule` that hit the cell, also for cells released or flagged).
    """

    dims: tuple[str, ...]
    measure: Measure
    cells: pd.DataFrame
    outcome: Outcome
    rules: tuple[Rule, ...]
    reasons: tuple[str, ...]
    margins: bool

    @property
    def values(self) -> pd.Series:
        return self.cells["value"]

    @property
    def status(self) -> pd.Series:
        return self.cells["status"]

    def wide(self) -> pd.DataFrame:
        """Released values as a crosstab: last dimension across, the others down."""
        if len(self.dims) < 2:
            return self.values.to_frame(self.measure.name)
        return self.values.unstack(level=-1, sort=False)

    def records(self) -> list[dict[str, object]]:
        """One JSON-ready dict per cell: ``cell`` (dim → label), value, status, rules."""
        out: list[dict[str, object]] = []
        index = self.cells.index
        for key, value, status, rules in zip(index, self.cells["value"],
                                             self.cells["status"], self.cells["rules"],
                                             strict=True):
            labels = key if isinstance(key, tuple) else (key,)
            out.append({
                "cell": {d: _plain(lab) for d, lab in zip(self.dims, labels, strict=False)},
                "value": _plain(value),
                "status": status.value,
                "rules": [r.value for r in rules],
            })
        return out


@dataclass(frozen=True, eq=False)
class CheckedStatistic:
    """A scalar result (test, variance decomposition): ``values`` is None when withheld."""

    name: str
    values: dict[str, float] | None
    outcome: Outcome
    rules: tuple[Rule, ...]
    reasons: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class CheckedModel:
    """A fitted model: coefficient table and fit statistics, both None when withheld."""

    coefficients: pd.DataFrame | None
    fit: dict[str, float] | None
    outcome: Outcome
    rules: tuple[Rule, ...]
    reasons: tuple[str, ...]


def scalar_result(name: str, values: dict[str, float], hits: tuple[Rule, ...],
                  policy: SDCPolicy) -> CheckedStatistic:
    """Withhold on any suppressing hit, review on any flag, else release."""
    acts = {action_of(r, policy) for r in hits}
    if Action.SUPPRESS in acts:
        return CheckedStatistic(name, None, Outcome.WITHHELD, hits, reasons(hits, policy))
    outcome = Outcome.REVIEW if Action.FLAG in acts else Outcome.RELEASED
    return CheckedStatistic(name, values, outcome, hits, reasons(hits, policy))


def action_bits(policy: SDCPolicy, action: Action) -> int:
    return sum(r.bit for r in Rule if action_of(r, policy) is action and r is not Rule.SECONDARY)


def rules_of_bits(b: int) -> tuple[Rule, ...]:
    return tuple(r for r in Rule if b & r.bit)


def statuses(hits: Bits, hidden: Mask, policy: SDCPolicy) -> np.ndarray[Any, np.dtype[Any]]:
    """Per-cell status code: 0 ok, 1 primary, 2 secondary, 3 flagged (CellStatus order)."""
    primary = (hits & action_bits(policy, Action.SUPPRESS)) != 0
    flagged = (hits & action_bits(policy, Action.FLAG)) != 0
    return np.select([primary, hidden, flagged], [1, 2, 3], 0)


def build_table(dims: tuple[str, ...], measure: Measure, index: pd.Index,
                values: np.ndarray[Any, Any], hits: Bits, hidden: Mask,
                policy: SDCPolicy, margins: bool, integer: bool = False) -> CheckedTable:
    """Assemble the cells frame from flat per-cell arrays (values, rule bits, hidden)."""
    hits = hits.copy()
    secondary = hidden & ((hits & action_bits(policy, Action.SUPPRESS)) == 0)
    hits[secondary] |= np.uint16(Rule.SECONDARY.bit)
    code = statuses(hits, hidden, policy)
    status_objs = np.array(list(CellStatus), dtype=object)[code]
    uniq, inverse = np.unique(hits, return_inverse=True)
    rule_objs = np.empty(len(uniq), dtype=object)
    rule_objs[:] = [rules_of_bits(int(b)) for b in uniq]
    if integer:
        shown: Any = pd.array(np.where(hidden, 0, values).astype(np.int64), dtype="Int64")
        shown[hidden] = pd.NA
    else:
        shown = np.where(hidden, np.nan, values.astype(np.float64))
    cells = pd.DataFrame({"value": shown, "status": status_objs,
                          "rules": rule_objs[inverse.ravel()]}, index=index)
    applied = rules_of_bits(int(np.bitwise_or.reduce(hits)) if hits.size else 0)
    return CheckedTable(dims, measure, cells, outcome_of(code), applied,
                        reasons(applied, policy), margins)


def outcome_of(code: np.ndarray[Any, Any]) -> Outcome:
    if code.size == 0 or bool(np.all((code == 1) | (code == 2))):
        return Outcome.WITHHELD
    if bool(np.any(code == 3)):
        return Outcome.REVIEW
    if bool(np.any(code != 0)):
        return Outcome.PARTIAL
    return Outcome.RELEASED
