"""Rule names, cell statuses, outcomes and measures; the only texts the engine writes.

Every text is built from the rule and the policy alone. A reason never carries a number
derived from data (a cell value, a count, a share, how many cells were hit): those would
leak through the very channel meant to explain a suppression (ACRO's summaries count
suppressed cells; this engine does not, the per-cell statuses already show them).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from compute.sdc.policy import Action, SDCPolicy


class Rule(Enum):
    """A disclosure rule (or, for models and tests, a validity rule) that hit a cell."""

    THRESHOLD = "threshold"
    ZEROS = "zeros"
    DOMINANCE = "dominance"
    P_PERCENT = "p_percent"
    CLASS_DISCLOSURE = "class_disclosure"
    QUANTILE_EXTREME = "quantile_extreme"
    QUANTILE_REMAINDER = "quantile_remainder"
    SECONDARY = "secondary"
    RESIDUAL_DOF = "residual_dof"
    RANK_DEFICIENT = "rank_deficient"
    EXACT_FIT = "exact_fit"
    LEVERAGE = "leverage"
    SUPPRESSED_INPUT = "suppressed_input"
    SPARSE_EXPECTED = "sparse_expected"
    DIFFERENCING = "differencing"
    RELEASE_CAP = "release_cap"

    @property
    def bit(self) -> int:
        return 1 << list(Rule).index(self)


class CellStatus(Enum):
    OK = "ok"
    SUPPRESSED_PRIMARY = "suppressed_primary"
    SUPPRESSED_SECONDARY = "suppressed_secondary"
    FLAGGED = "flagged"


class Outcome(Enum):
    """Table-level result. ``REVIEW``: something is flagged for a human output checker."""

    RELEASED = "released"
    PARTIAL = "partial"
    REVIEW = "review"
    WITHHELD = "withheld"


class Statistic(Enum):
    COUNT = "count"
    SUM = "sum"
    MEAN = "mean"
    STD = "std"
    MEDIAN = "median"
    QUANTILE = "quantile"
    MIN = "min"
    MAX = "max"


@dataclass(frozen=True)
class Measure:
    """What a table's cells hold: a statistic, and for quantiles the probability."""

    statistic: Statistic
    q: float | None = None

    @property
    def name(self) -> str:
        if self.statistic is Statistic.QUANTILE:
            return f"q{self.q:g}"
        return str(self.statistic.value)


def action_of(rule: Rule, policy: SDCPolicy) -> Action:
    """What the policy does with a hit of ``rule``."""
    if rule in (Rule.ZEROS,):
        return policy.zeros
    if rule in (Rule.CLASS_DISCLOSURE, Rule.EXACT_FIT):
        return policy.class_disclosure
    if rule is Rule.SPARSE_EXPECTED:
        return Action.FLAG
    return Action.SUPPRESS


def describe(rule: Rule, policy: SDCPolicy) -> str:
    """One line naming the rule and the policy parameter, never a data-derived number."""
    if rule is Rule.THRESHOLD:
        return f"threshold: fewer than {policy.min_count} contributors"
    if rule is Rule.ZEROS:
        return "zeros: the cell has no contributors"
    if rule is Rule.DOMINANCE:
        pairs = "; ".join(f"n={r.n}, k={r.k:g}" for r in policy.nk_rules)
        return ("dominance: the n largest contributors hold at least k of the cell total "
                f"({pairs})")
    if rule is Rule.P_PERCENT:
        return ("p% rule: the cell total less its two largest contributions is less than "
                f"p times the largest (p={policy.p_percent:g})")
    if rule is Rule.CLASS_DISCLOSURE:
        return ("class disclosure: every contributor of a category falls in one cell, "
                "or every contributor of a cell holds the same value")
    if rule is Rule.QUANTILE_EXTREME:
        return "extremes: the quantile lies next to the smallest or largest value"
    if rule is Rule.QUANTILE_REMAINDER:
        return ("quantile remainder: the values many records share leave fewer than "
                f"{policy.min_count} other records in the cell")
    if rule is Rule.SECONDARY:
        return ("secondary suppression: hidden so that no suppressed cell can be "
                "recomputed from one line of the table and its total")
    if rule is Rule.RESIDUAL_DOF:
        return f"residual degrees of freedom: fewer than {policy.min_dof}"
    if rule is Rule.RANK_DEFICIENT:
        return "rank: the explanatory columns are linearly dependent"
    if rule is Rule.EXACT_FIT:
        return "exact fit: the model reproduces every record's outcome"
    if rule is Rule.LEVERAGE:
        return ("leverage: some record weighs more in its own fitted value than in a mean "
                f"of {policy.min_count} records")
    if rule is Rule.SUPPRESSED_INPUT:
        return ("suppressed input: the statistic depends on cells the same table "
                "would suppress")
    if rule is Rule.DIFFERENCING:
        return ("differencing: the cell's population differs from a population already "
                f"released to this requester from this data by fewer than {policy.min_count}"
                " contributors (persons where the data declares identifiers, else records)")
    if rule is Rule.RELEASE_CAP:
        return (f"release cap: the permit's cap of {policy.max_released_cells} released "
                "cells would be exceeded")
    return "sparse expected counts: some expected counts are below five"


def reasons(rules: tuple[Rule, ...], policy: SDCPolicy) -> tuple[str, ...]:
    return tuple(describe(r, policy) for r in Rule if r in rules)
