"""Statistical disclosure control for the trusted statistics route.

The platform computes each table or model from a provider's permitted columns, so every
cell's true contributors are known, and checks it here before anything is released:
threshold, nk dominance, p%, zeros, class disclosure, quantile and model rules, then
secondary suppression. Pure (pandas/numpy), no I/O. Rules, defaults, sources and limits:
``docs/disclosure-control.md``.
"""

from compute.sdc.frequency import chi_square_test, frequency_table
from compute.sdc.magnitude import magnitude_table, within_group_variance
from compute.sdc.magnitude_cells import FEW_LEVELS, partition_bound, short_levels
from compute.sdc.models import INTERCEPT, ols
from compute.sdc.policy import DEFAULT_POLICY, Action, NKRule, SDCPolicy, strictest
from compute.sdc.pooling import POOLED, pool_rare_categories
from compute.sdc.result import MARGIN, CheckedModel, CheckedStatistic, CheckedTable
from compute.sdc.rules import CellStatus, Measure, Outcome, Rule, Statistic, describe

__all__ = [
    "DEFAULT_POLICY",
    "FEW_LEVELS",
    "INTERCEPT",
    "MARGIN",
    "POOLED",
    "Action",
    "CellStatus",
    "CheckedModel",
    "CheckedStatistic",
    "CheckedTable",
    "Measure",
    "NKRule",
    "Outcome",
    "Rule",
    "SDCPolicy",
    "Statistic",
    "chi_square_test",
    "describe",
    "frequency_table",
    "magnitude_table",
    "ols",
    "partition_bound",
    "pool_rare_categories",
    "short_levels",
    "strictest",
    "within_group_variance",
]
