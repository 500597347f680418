"""The trusted statistics route: the platform computes a spec's analyses and checks them.

Called by the provider's agent on the projected permitted columns (never in a container:
no requester code runs). Every table is computed by :mod:`compute.sdc`, which knows each
cell's true contributors and applies the provider's disclosure rules to every cell, so
what comes out is released as a whole: suppressed cells carry no value, and every cell
says which rules applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from compute import sdc
from compute.errors import InvalidInput
from compute.statspec import (
    ChiSquareTest,
    FrequencyTable,
    LinearModel,
    MagnitudeTable,
    StatisticsSpec,
)

#: Recorded as the run's ``runner_image``: what computed the result, and its version.
ENGINE = "data-sandbox-statistics/1"
TRUE = frozenset({"true", "1", "yes", "t"})
FALSE = frozenset({"false", "0", "no", "f"})


def load_frame(path: Path, types: Mapping[str, str]) -> pd.DataFrame:
    """The projected CSV with its declared types: numbers as floats, booleans as 0/1,
    everything else as text; a missing value is missing (NaN) in every type, so a record
    without a dimension's value is left out of that dimension's tables rather than
    counted under an empty label."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    for col in frame.columns:
        kind = types.get(col, "string")
        if kind not in ("integer", "number", "boolean"):
            frame[col] = frame[col].where(frame[col] != "")
        elif kind in ("integer", "number"):
            frame[col] = pd.to_numeric(frame[col].where(frame[col] != ""), errors="coerce")
        elif kind == "boolean":
            low = frame[col].str.lower()
            frame[col] = low.map(lambda v: 1.0 if v in TRUE else 0.0 if v in FALSE
                                 else float("nan"))
    return frame


#: The settings a provider may give at approval (besides the minimum cell count).
PROVIDER_SETTINGS = ("dominance_n", "dominance_k", "p_percent", "zeros", "class_disclosure",
                     "min_dof", "max_cells", "max_released_cells")


def policy_for(min_cell_count: int, settings: Mapping[str, Any] | None = None
               ) -> sdc.SDCPolicy:
    """The permit's disclosure policy: its minimum cell count and the providers' settings
    (defaults for those not given). Raises InvalidInput naming a bad setting."""
    return sdc.SDCPolicy.from_mapping({**(settings or {}), "min_count": min_cell_count})


def settings_of(policy: sdc.SDCPolicy) -> dict[str, Any]:
    """A policy's provider settings as stored on a permit (JSON)."""
    return {"dominance_n": policy.dominance_n, "dominance_k": policy.dominance_k,
            "p_percent": policy.p_percent, "zeros": policy.zeros.value,
            "class_disclosure": policy.class_disclosure.value, "min_dof": policy.min_dof,
            "max_cells": policy.max_cells, "max_released_cells": policy.max_released_cells,
            "extra_dominance": [[r.n, r.k] for r in policy.extra_dominance]}


def strictest_settings(min_cell_count: int, approvals: list[Mapping[str, Any] | None]
                       ) -> dict[str, Any]:
    """Strictest wins across the providers whose data one permit covers."""
    return settings_of(sdc.strictest(policy_for(min_cell_count, a) for a in approvals))


#: The column of contributor numbers the agent adds to the frame (:func:`with_units`). Not
#: a valid field name (fields match ``[A-Za-z_][A-Za-z0-9_]*``), so no spec can name it.
UNIT = "unit:contributor"


def with_units(frame: pd.DataFrame, units: Any) -> pd.DataFrame:
    """``frame`` with its records' contributor numbers (one per record, from the dataset's
    identifier fields: :func:`compute.sdc.units.contributor_codes`), or as it is when the
    dataset declares none (records are then the contributors)."""
    if units is None:
        return frame
    if len(units) != len(frame):
        raise InvalidInput("units", "length", "one contributor number per record is needed")
    return frame.assign(**{UNIT: units})


def _unit(frame: pd.DataFrame) -> str | None:
    return UNIT if UNIT in frame.columns else None


def compute(frame: pd.DataFrame, spec: StatisticsSpec, policy: sdc.SDCPolicy
            ) -> dict[str, Any]:
    """Every analysis of ``spec``, checked (or, with ``dp``, noised), as one JSON-ready
    document. Contributors are the :data:`UNIT` numbers where ``frame`` has them
    (:func:`with_units`), else the records."""
    if spec.dp is not None:
        from compute import statdp  # statdp builds on this module

        return statdp.compute_dp(frame, spec, policy)
    return {"version": 1, "engine": ENGINE,
            "analyses": [_analysis(tabulated(frame, a, policy), a, policy)
                         for a in spec.analyses]}


def tabulated(frame: pd.DataFrame, a: Any, policy: sdc.SDCPolicy) -> pd.DataFrame:
    """The frame a table analysis is computed from: its dimensions' categories held by
    fewer than the minimum cell count (of contributors) pooled under one fixed label,
    since every label of a table is published. Tests and models publish no labels:
    ``frame`` as is."""
    if isinstance(a, FrequencyTable | MagnitudeTable):
        return sdc.pool_rare_categories(frame, a.dims, policy.min_count, unit=_unit(frame))
    return frame


def _reported(checked: Any) -> tuple[sdc.Rule, ...]:
    """The rules a table reports: the union over its cells, where a cell under the
    threshold, or empty, counts as ``threshold`` alone. Which further rules hit a small
    cell (dominance, p%: a sum of ones is dominated only with one or two holders) bounds
    its count more finely than the threshold does; ``zeros`` would say a hidden cell is
    empty (with the margins, a suppressed rectangle's one unknown is then one of its four
    corners at 0); and a table with one cell reports its cell's rules."""
    if not isinstance(checked, sdc.CheckedTable):
        return tuple(checked.rules)
    small = (sdc.Rule.THRESHOLD, sdc.Rule.ZEROS)
    seen: set[sdc.Rule] = set()
    for rules in checked.cells["rules"]:
        seen.update((sdc.Rule.THRESHOLD,) if any(r in rules for r in small) else rules)
    return tuple(r for r in sdc.Rule if r in seen and r is not sdc.Rule.ZEROS)


def _outcome(kind: str, checked: Any, policy: sdc.SDCPolicy) -> dict[str, Any]:
    reported = _reported(checked)
    # One text per reported rule, in the same order (the policy's wording, no data).
    return {"kind": kind, "outcome": checked.outcome.value,
            "rules": [r.value for r in reported],
            "reasons": [sdc.describe(r, policy) for r in reported]}


HIDDEN = "suppressed"


def _cells(table: sdc.CheckedTable) -> list[dict[str, Any]]:
    """A table's cells as the requester sees them. Every cell not released is alike:
    status ``suppressed``, no value and no rules. Which rule hid a cell is a fact about
    its records (``zeros`` says it is empty, ``threshold`` that it is not, a flag that one
    category holds its whole line, primary or secondary how small it is), so it stays in
    the provider's domain; the analysis's own ``rules`` and ``reasons`` say which rules
    hid something in the table. A flagged cell is held back like the others: a flag asks
    for a human output check, and until one has looked, nothing flagged leaves."""
    cells = table.records()
    for c in cells:
        if c["status"] != sdc.CellStatus.OK.value:
            c["status"], c["value"], c["rules"] = HIDDEN, None, []
    return cells


def _held(checked: Any) -> bool:
    return bool(checked.outcome == sdc.Outcome.REVIEW)


def withheld(kind: str, rule: sdc.Rule, policy: sdc.SDCPolicy, **fields: Any
             ) -> dict[str, Any]:
    """An analysis withheld as a whole by a rule across releases (differencing, cap)."""
    return {"kind": kind, "outcome": sdc.Outcome.WITHHELD.value, "rules": [rule.value],
            "reasons": [sdc.describe(rule, policy)], **fields}


def analysis(frame: pd.DataFrame, a: Any, policy: sdc.SDCPolicy,
             forced: Any = None) -> dict[str, Any]:
    """One analysis, checked, from ``frame`` as :func:`tabulated` gives it. ``forced``:
    for a table, the cells the differencing audit suppresses (flat, full margined order);
    for a test or model, True withholds it."""
    return _analysis(frame, a, policy, forced)


def _analysis(frame: pd.DataFrame, a: Any, policy: sdc.SDCPolicy, forced: Any = None
              ) -> dict[str, Any]:
    unit = _unit(frame)
    if isinstance(a, FrequencyTable):
        table = sdc.frequency_table(frame, a.dims, policy, forced=forced, unit=unit)
        return {**_outcome("frequency", table, policy), "dims": list(a.dims),
                "cells": _cells(table)}
    if isinstance(a, MagnitudeTable):
        # One call for all statistics: they share one suppression pattern (a mean and a
        # count would otherwise give away a suppressed sum).
        tables = sdc.magnitude_table(frame, a.dims, a.value,
                                     [stat.value for stat in a.statistics], policy,
                                     forced=forced, unit=unit)
        return {"kind": "magnitude", "dims": list(a.dims), "value": a.value,
                "tables": [{**_outcome(name, t, policy), "statistic": name, "cells": _cells(t)}
                           for name, t in tables.items()]}
    if isinstance(a, LinearModel):
        if forced is True:
            return withheld("ols", sdc.Rule.DIFFERENCING, policy, y=a.y, x=list(a.x),
                            coefficients=None, fit=None)
        model = sdc.ols(frame, a.y, a.x, policy, unit=unit)
        coefficients = (None if model.coefficients is None or _held(model) else
                        model.coefficients.reset_index().to_dict(orient="records"))
        return {**_outcome("ols", model, policy), "y": a.y, "x": list(a.x),
                "coefficients": coefficients, "fit": None if _held(model) else model.fit}
    assert isinstance(a, ChiSquareTest)
    if forced is True:
        return withheld("chi_square", sdc.Rule.DIFFERENCING, policy, dims=list(a.dims),
                        values=None)
    test = sdc.chi_square_test(frame, a.dims, policy, unit=unit)
    return {**_outcome("chi_square", test, policy), "dims": list(a.dims),
            "values": None if _held(test) else test.values}
