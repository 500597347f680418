"""A provider's disclosure-control settings, their validation, and the strictest combination.

Defaults are ACRO's (AI-SDC/ACRO ``default.yaml``: threshold 10, residual dof 10, nk rule
n=2 k=0.9, p-ratio 0.1, zeros disclosive), which follow the ESSnet rules of thumb
(Bond, Brandt & de Wolf 2015, *Guidelines for Output Checking*, Eurostat) and
Hundepool et al., *Statistical Disclosure Control* (2012), ch. 4 (magnitude tables) and
ch. 5 (frequency tables).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from enum import Enum

from compute.errors import InvalidInput


class Action(Enum):
    """What a rule does to a cell it hits. Ordered: later is stricter."""

    ALLOW = "allow"
    FLAG = "flag"
    SUPPRESS = "suppress"

    @property
    def severity(self) -> int:
        return list(Action).index(self)


@dataclass(frozen=True)
class NKRule:
    """Dominance: the ``n`` largest contributors hold at least ``k`` of the cell total."""

    n: int
    k: float

    def __post_init__(self) -> None:
        _int_at_least("dominance_n", self.n, 1)
        if not _real(self.k) or not 0.0 < self.k <= 1.0:
            raise InvalidInput("dominance_k", "range", "dominance_k must lie in (0, 1]")

    def implied_by(self, other: NKRule) -> bool:
        """True when ``other`` fires on every cell this rule fires on.

        If the top ``n`` hold at least ``k``, the top ``n' >= n`` hold at least as much,
        which is at least ``k' <= k``: so (n', k') with n' >= n and k' <= k is stricter.
        """
        return other.n >= self.n and other.k <= self.k


def _real(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _int_at_least(field: str, v: object, low: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise InvalidInput(field, "range", f"{field} must be an integer >= {low}")


@dataclass(frozen=True)
class SDCPolicy:
    """One provider's settings; every number here is policy, never data.

    ``min_count``: a cell with fewer contributors (but at least one) is suppressed.
    ``dominance_n``/``dominance_k`` and ``extra_dominance``: nk rules, any one firing makes
    a magnitude cell unsafe. ``extra_dominance`` is filled by :func:`strictest` when two
    providers' (n, k) pairs are incomparable. ``p_percent``: the p% rule. ``zeros``: cells
    with no contributors. ``class_disclosure``: a cell holding a whole line of a frequency
    table (every record of a category shares the attribute), or a magnitude cell whose
    contributors all hold one value. ``min_dof``: residual degrees of freedom for models
    and tests. ``allow_extremes``: min/max statistics, and quantiles next to the min or
    max. ``max_cells``: the most cells (margins included) one table may have.
    ``max_released_cells``: the most cell values one permit may release in total over
    all its statistics jobs (the differencing audit counts them).
    Quantiles have no setting of their own: they follow ``min_count`` and
    ``allow_extremes`` (see ``docs/disclosure-control.md``).
    """

    min_count: int = 10
    dominance_n: int = 2
    dominance_k: float = 0.9
    p_percent: float = 0.10
    zeros: Action = Action.SUPPRESS
    class_disclosure: Action = Action.FLAG
    min_dof: int = 10
    allow_extremes: bool = False
    max_cells: int = 10_000
    max_released_cells: int = 20_000
    extra_dominance: tuple[NKRule, ...] = ()

    def __post_init__(self) -> None:
        _int_at_least("min_count", self.min_count, 1)
        NKRule(self.dominance_n, self.dominance_k)  # validates both
        if not _real(self.p_percent) or not 0.0 <= self.p_percent <= 1.0:
            raise InvalidInput("p_percent", "range", "p_percent must lie in [0, 1]")
        for name in ("zeros", "class_disclosure"):
            if not isinstance(getattr(self, name), Action):
                raise InvalidInput(name, "enum", f"{name} must be one of suppress, flag, allow")
        _int_at_least("min_dof", self.min_dof, 1)
        if not isinstance(self.allow_extremes, bool):
            raise InvalidInput("allow_extremes", "type", "allow_extremes must be a boolean")
        _int_at_least("max_cells", self.max_cells, 1)
        _int_at_least("max_released_cells", self.max_released_cells, 1)
        if not isinstance(self.extra_dominance, tuple) or not all(
                isinstance(r, NKRule) for r in self.extra_dominance):
            raise InvalidInput("extra_dominance", "type",
                               "extra_dominance must be a tuple of NKRule")

    @property
    def nk_rules(self) -> tuple[NKRule, ...]:
        """Every nk rule in force, without those another rule here already implies."""
        return _prune((NKRule(self.dominance_n, self.dominance_k), *self.extra_dominance))

    @classmethod
    def from_mapping(cls, raw: Mapping[str, object]) -> SDCPolicy:
        """Build from a provider's stored settings (JSON): unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        for key in raw:
            if key not in known:
                raise InvalidInput(str(key), "unknown", f"{key} is not an SDC policy setting")
        kwargs: dict[str, object] = dict(raw)
        for name in ("zeros", "class_disclosure"):
            if name in kwargs and not isinstance(kwargs[name], Action):
                try:
                    kwargs[name] = Action(kwargs[name])
                except ValueError:
                    raise InvalidInput(name, "enum",
                                       f"{name} must be one of suppress, flag, allow") from None
        if "extra_dominance" in kwargs:
            pairs = kwargs["extra_dominance"]
            if not isinstance(pairs, list | tuple):
                raise InvalidInput("extra_dominance", "type",
                                   "extra_dominance must be a list of [n, k] pairs")
            rules = []
            for p in pairs:
                if isinstance(p, NKRule):
                    rules.append(p)
                elif isinstance(p, list | tuple) and len(p) == 2:
                    rules.append(NKRule(p[0], p[1]))
                else:
                    raise InvalidInput("extra_dominance", "type",
                                       "extra_dominance must be a list of [n, k] pairs")
            kwargs["extra_dominance"] = tuple(rules)
        return cls(**kwargs)  # type: ignore[arg-type]  # each field is validated on init


DEFAULT_POLICY = SDCPolicy()


def _prune(rules: Iterable[NKRule]) -> tuple[NKRule, ...]:
    uniq = sorted(set(rules), key=lambda r: (r.n, r.k))
    return tuple(r for r in uniq
                 if not any(o != r and r.implied_by(o) for o in uniq))


def strictest(policies: Iterable[SDCPolicy]) -> SDCPolicy:
    """The policy that is at least as strict as each given one (several providers' data).

    Thresholds, ``min_dof`` and ``p_percent`` take the maximum; ``max_cells`` and
    ``max_released_cells`` the minimum;
    ``zeros`` and ``class_disclosure`` the strictest action; extremes only if all allow.
    nk rules are not totally ordered ((1, 0.5) and (2, 0.9) each fire on cells the other
    does not), so all of them stay in force, minus those another one implies.
    """
    ps = list(policies)
    if not ps:
        raise InvalidInput("policies", "non_empty", "at least one policy is needed")
    for p in ps:
        if not isinstance(p, SDCPolicy):
            raise InvalidInput("policies", "type", "every policy must be an SDCPolicy")
    nk = _prune(r for p in ps for r in p.nk_rules)
    return SDCPolicy(
        min_count=max(p.min_count for p in ps),
        dominance_n=nk[0].n,
        dominance_k=nk[0].k,
        p_percent=max(p.p_percent for p in ps),
        zeros=max((p.zeros for p in ps), key=lambda a: a.severity),
        class_disclosure=max((p.class_disclosure for p in ps), key=lambda a: a.severity),
        min_dof=max(p.min_dof for p in ps),
        allow_extremes=all(p.allow_extremes for p in ps),
        max_cells=min(p.max_cells for p in ps),
        max_released_cells=min(p.max_released_cells for p in ps),
        extra_dominance=nk[1:],
    )
