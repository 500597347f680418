"""compute.sdc: policies, frequency and magnitude tables, texts, false blocks."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compute.errors import InvalidInput
from compute.sdc import (
    MARGIN,
    Action,
    CellStatus,
    CheckedTable,
    NKRule,
    Outcome,
    Rule,
    SDCPolicy,
    Statistic,
    describe,
    frequency_table,
    magnitude_table,
    strictest,
)

OK, PRIMARY, SECONDARY, FLAGGED = (CellStatus.OK, CellStatus.SUPPRESSED_PRIMARY,
                                   CellStatus.SUPPRESSED_SECONDARY, CellStatus.FLAGGED)
HIDDEN = (PRIMARY, SECONDARY)


def records(counts: Mapping[tuple[str, ...], int], names: tuple[str, ...] = ("a", "b")
            ) -> pd.DataFrame:
    """One record per unit of count, for each category combination."""
    rows = [key for key, n in counts.items() for _ in range(n)]
    return pd.DataFrame(rows, columns=list(names))


def cell(t: CheckedTable, *key: object) -> pd.Series:
    return t.cells.loc[key if len(key) > 1 else key[0]]


def alike(value: float, n: int) -> list[float]:
    """``n`` distinct values close to ``value``, summing to ``n * value``: ordinary
    contributors that do not make the cell a partition by value (a level of fewer than
    ``min_count`` holders is a short cell: ``test_sdc_levels``)."""
    return [value * (1 + (i - (n - 1) / 2) * 1e-3) for i in range(n)]


def contributors(values: list[float], big: int = 40) -> pd.DataFrame:
    """Cell g=x holds ``values``; cell g=y holds ``big`` ordinary contributors."""
    rng = np.random.default_rng(0)
    return pd.DataFrame({"g": ["x"] * len(values) + ["y"] * big,
                         "v": values + list(rng.uniform(90, 110, big))})


# -- policy ---------------------------------------------------------------------------

def test_default_policy_is_acros() -> None:
    p = SDCPolicy()
    assert (p.min_count, p.dominance_n, p.dominance_k, p.p_percent, p.min_dof) == \
        (10, 2, 0.9, 0.10, 10)
    assert p.zeros is Action.SUPPRESS and p.class_disclosure is Action.FLAG
    assert not p.allow_extremes and p.nk_rules == (NKRule(2, 0.9),)


@pytest.mark.parametrize(("field", "value"), [
    ("min_count", 0), ("min_count", True), ("min_count", 2.5), ("dominance_n", 0),
    ("dominance_k", 0.0), ("dominance_k", 1.5), ("dominance_k", float("nan")),
    ("p_percent", -0.1), ("p_percent", 1.5), ("zeros", "suppress"),
    ("class_disclosure", None), ("min_dof", 0), ("allow_extremes", 1), ("max_cells", 0),
])
def test_policy_refuses_bad_parameters(field: str, value: object) -> None:
    with pytest.raises(InvalidInput) as err:
        SDCPolicy(**{field: value})  # type: ignore[arg-type]
    assert err.value.field == field


def test_policy_from_mapping() -> None:
    p = SDCPolicy.from_mapping({"min_count": 5, "zeros": "allow", "class_disclosure": "suppress",
                                "extra_dominance": [[1, 0.5]]})
    assert (p.min_count, p.zeros, p.class_disclosure) == (5, Action.ALLOW, Action.SUPPRESS)
    assert p.nk_rules == (NKRule(1, 0.5), NKRule(2, 0.9))
    with pytest.raises(InvalidInput) as err:
        SDCPolicy.from_mapping({"threshold": 5})
    assert err.value.field == "threshold"
    with pytest.raises(InvalidInput):
        SDCPolicy.from_mapping({"zeros": "hide"})


def test_strictest_takes_the_strictest_of_each_setting() -> None:
    a = SDCPolicy(min_count=5, p_percent=0.2, zeros=Action.ALLOW,
                  class_disclosure=Action.SUPPRESS, min_dof=20, allow_extremes=True,
                  max_cells=500)
    b = SDCPolicy(min_count=12, p_percent=0.05, zeros=Action.FLAG,
                  class_disclosure=Action.ALLOW, min_dof=8, allow_extremes=False,
                  max_cells=900)
    s = strictest([a, b])
    assert (s.min_count, s.p_percent, s.min_dof, s.max_cells) == (12, 0.2, 20, 500)
    assert s.zeros is Action.FLAG and s.class_disclosure is Action.SUPPRESS
    assert s.allow_extremes is False
    assert strictest([a]) == a
    with pytest.raises(InvalidInput):
        strictest([])


def test_strictest_keeps_incomparable_nk_rules_and_drops_implied_ones() -> None:
    one = SDCPolicy(dominance_n=1, dominance_k=0.5)
    two = SDCPolicy(dominance_n=2, dominance_k=0.9)
    assert strictest([one, two]).nk_rules == (NKRule(1, 0.5), NKRule(2, 0.9))
    # Same n: the smaller k wins. (3, 0.8) fires wherever (2, 0.9) does.
    assert strictest([two, SDCPolicy(dominance_k=0.8)]).nk_rules == (NKRule(2, 0.8),)
    assert strictest([two, SDCPolicy(dominance_n=3, dominance_k=0.8)]).nk_rules == \
        (NKRule(3, 0.8),)
    # A cell only (1, 0.5) catches: one contributor at 60 %, the next two far below.
    df = contributors([60.0, *alike(40.0 / 11, 11)])
    quiet = SDCPolicy(p_percent=0.0)
    assert magnitude_table(df, ["g"], "v", ["sum"], two)["sum"].cells.loc["x", "status"] is OK
    loud = strictest([SDCPolicy(dominance_n=1, dominance_k=0.5, p_percent=0.0), quiet])
    assert magnitude_table(df, ["g"], "v", ["sum"], loud)["sum"].cells.loc["x", "status"] \
        is PRIMARY


policies = st.builds(
    SDCPolicy, min_count=st.integers(1, 15), dominance_n=st.integers(1, 3),
    dominance_k=st.floats(0.5, 1.0), p_percent=st.floats(0.0, 0.5),
    zeros=st.sampled_from(Action), class_disclosure=st.sampled_from(Action))


@settings(max_examples=25, deadline=None)
@given(st.lists(policies, min_size=1, max_size=3), st.integers(0, 2**31))
def test_strictest_suppresses_whatever_any_policy_suppresses(ps: list[SDCPolicy],
                                                             seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 150
    df = pd.DataFrame({"a": rng.choice(list("pqrs"), n, p=[.5, .3, .15, .05]),
                       "b": rng.choice(list("xyz"), n, p=[.6, .3, .1]),
                       "v": rng.pareto(1.5, n) * np.where(rng.random(n) < .1, -1, 1)})
    combined = strictest(ps)

    def primary(t: CheckedTable) -> set[object]:
        return set(t.cells.index[t.status == PRIMARY])

    def freq(p: SDCPolicy) -> CheckedTable:
        return frequency_table(df, ["a", "b"], p)

    def sums(p: SDCPolicy) -> CheckedTable:
        return magnitude_table(df, ["a", "b"], "v", ["sum"], p)["sum"]

    for fn in (freq, sums):
        strict = primary(fn(combined))
        for p in ps:
            assert primary(fn(p)) <= strict


# -- frequency tables: rules ------------------------------------------------------------

def test_threshold_releases_at_min_count_and_suppresses_below() -> None:
    # Two small cells hide each other: no complement needed, x shows at exactly 10.
    t = frequency_table(records({("x",): 10, ("y",): 9, ("w",): 4, ("z",): 30}, ("a",)),
                        ["a"])
    assert cell(t, "x")["status"] is OK and cell(t, "x")["value"] == 10
    assert cell(t, "y")["status"] is PRIMARY and pd.isna(cell(t, "y")["value"])
    assert cell(t, "y")["rules"] == (Rule.THRESHOLD,)
    assert cell(t, MARGIN)["value"] == 53 and t.outcome is Outcome.PARTIAL
    # Alone in its line, y would be the total less the rest: the smallest other cell
    # (x) is hidden as its complement.
    alone = frequency_table(records({("x",): 10, ("y",): 9, ("z",): 30}, ("a",)), ["a"])
    assert cell(alone, "x")["status"] is SECONDARY
    assert cell(alone, "x")["rules"] == (Rule.SECONDARY,)
    assert cell(alone, "z")["status"] is OK


def test_threshold_counts_contributors_not_records() -> None:
    df = records({("x",): 12, ("y",): 40, ("z",): 40}, ("a",))
    df["person"] = [f"p{i % 3}" for i in range(12)] + [f"q{i}" for i in range(80)]
    assert cell(frequency_table(df, ["a"]), "x")["status"] is OK
    by_unit = frequency_table(df, ["a"], unit="person")
    assert cell(by_unit, "x")["status"] is PRIMARY
    assert cell(by_unit, "x")["rules"] == (Rule.THRESHOLD,)


def test_zeros_suppress_flag_allow() -> None:
    df = records({("x", "p"): 20, ("x", "q"): 25, ("y", "p"): 30, ("y", "q"): 22})
    cats = {"b": ["p", "q", "r"]}  # r is declared but empty: a zero column
    want = {Action.SUPPRESS: PRIMARY, Action.FLAG: FLAGGED, Action.ALLOW: OK}
    for action, status in want.items():
        t = frequency_table(df, ["a", "b"], SDCPolicy(zeros=action), categories=cats)
        assert cell(t, "x", "r")["status"] is status
        assert (Rule.ZEROS in cell(t, "x", "r")["rules"]) == (action is not Action.ALLOW)
    released = frequency_table(df, ["a", "b"], SDCPolicy(zeros=Action.ALLOW), categories=cats)
    assert cell(released, "x", "r")["value"] == 0


def test_class_disclosure_flag_suppress_allow() -> None:
    # Every record of row x is in column p: knowing someone is x tells their b.
    df = records({("x", "p"): 30, ("y", "p"): 20, ("y", "q"): 25})
    cats = {"b": ["p", "q"]}
    allow_zeros = SDCPolicy(zeros=Action.ALLOW)
    flagged = frequency_table(df, ["a", "b"], allow_zeros, categories=cats)
    assert cell(flagged, "x", "p")["status"] is FLAGGED
    assert cell(flagged, "x", "p")["rules"] == (Rule.CLASS_DISCLOSURE,)
    assert cell(flagged, "x", "p")["value"] == 30 and flagged.outcome is Outcome.REVIEW
    hidden = frequency_table(df, ["a", "b"], SDCPolicy(zeros=Action.ALLOW,
                                                       class_disclosure=Action.SUPPRESS),
                             categories=cats)
    # The zero beside it is hidden too: a visible zero would still tell the attribute.
    # And as this policy publishes zeros elsewhere, the hidden zero is no cover: x/p
    # would equal the row total, which goes as well.
    assert cell(hidden, "x", "p")["status"] is PRIMARY
    assert cell(hidden, "x", "q")["status"] is PRIMARY
    assert cell(hidden, "x", MARGIN)["status"] is SECONDARY
    allowed = frequency_table(df, ["a", "b"], SDCPolicy(zeros=Action.ALLOW,
                                                        class_disclosure=Action.ALLOW),
                              categories=cats)
    assert allowed.outcome is Outcome.RELEASED


def test_default_policy_protects_class_disclosure_through_hidden_zeros() -> None:
    # Zeros hidden alone would sum to zero (the row total is released): the engine hides
    # a non-zero cell too, so the row no longer shows that x is always p.
    df = records({("x", "p"): 30, ("y", "p"): 20, ("y", "q"): 25})
    t = frequency_table(df, ["a", "b"], categories={"b": ["p", "q"]})
    assert cell(t, "x", "q")["status"] is PRIMARY
    assert cell(t, "x", "p")["status"] in HIDDEN


def test_frequency_values_match_crosstab_with_margins() -> None:
    rng = np.random.default_rng(5)
    df = pd.DataFrame({"a": rng.choice(list("abc"), 600), "b": rng.choice(list("xyzw"), 600)})
    t = frequency_table(df, ["a", "b"], SDCPolicy(min_count=1))
    assert t.outcome is Outcome.RELEASED
    want = pd.crosstab(df.a, df.b, margins=True, margins_name=MARGIN)
    got = t.wide()
    assert (got.astype(int).to_numpy() == want.to_numpy()).all()
    assert list(got.index) == list(want.index) and list(got.columns) == list(want.columns)


@pytest.mark.parametrize("ndim", [3, 4])
def test_margins_hold_every_marginal_subtable(ndim: int) -> None:
    rng = np.random.default_rng(ndim)
    dims = ["a", "b", "c", "d"][:ndim]
    df = pd.DataFrame({d: rng.choice(list("pqr")[: 2 + i % 2], 400) for i, d in enumerate(dims)})
    t = frequency_table(df, dims, SDCPolicy(min_count=1, zeros=Action.ALLOW,
                                            class_disclosure=Action.ALLOW))
    assert len(t.cells) == np.prod([df[d].nunique() + 1 for d in dims])
    for keep in itertools.product((True, False), repeat=ndim):
        kept = [d for d, k in zip(dims, keep, strict=True) if k]
        sizes = df.groupby(kept).size() if kept else pd.Series({(): len(df)})
        for key, n in sizes.items():
            labels = iter(key if isinstance(key, tuple) else (key,))
            full = tuple(next(labels) if k else MARGIN for k in keep)
            assert t.cells.loc[full, "value"] == n


def test_margins_false_returns_the_interior_but_still_protects() -> None:
    df = records({("x", "p"): 3, ("x", "q"): 40, ("y", "p"): 50, ("y", "q"): 60})
    t = frequency_table(df, ["a", "b"], margins=False)
    assert MARGIN not in t.cells.index.get_level_values(0)
    assert len(t.cells) == 4 and not t.margins
    # x/p is recoverable from the row total and x/q: x/q is hidden as well.
    assert cell(t, "x", "p")["status"] is PRIMARY
    assert cell(t, "x", "q")["status"] is SECONDARY


def test_missing_dimension_values_are_left_out() -> None:
    df = pd.DataFrame({"a": ["x"] * 20 + [None] * 5 + ["y"] * 15})
    t = frequency_table(df, ["a"])
    assert cell(t, MARGIN)["value"] == 35 and list(t.cells.index) == ["x", "y", MARGIN]


def test_table_size_and_input_checks() -> None:
    df = pd.DataFrame({"a": range(200), "b": ["x"] * 200, MARGIN: ["x"] * 200,
                       "c": ["x"] * 199 + [MARGIN]})
    with pytest.raises(InvalidInput) as err:
        frequency_table(df, ["a", "b"], SDCPolicy(max_cells=100))
    assert err.value.rule == "max_cells"
    for dims in ([], ["a", "b", "b"], ["nope"], ["a"] * 5):
        with pytest.raises(InvalidInput):
            frequency_table(df, dims)
    with pytest.raises(InvalidInput) as err:
        frequency_table(df, ["c"])
    assert err.value.rule == "margin_label"
    with pytest.raises(InvalidInput):
        frequency_table(df, ["b"], policy="strict")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        frequency_table(df, ["b"], categories={"z": ["x"]})


def test_degenerate_tables_end_withheld() -> None:
    # No records, or a dimension with no category at all: every cell is an empty total.
    empty = pd.DataFrame({"a": pd.Series([], dtype=object), "b": pd.Series([], dtype=object)})
    assert frequency_table(empty, ["a", "b"]).outcome is Outcome.WITHHELD
    unlisted = pd.DataFrame({"a": [None] * 20, "b": ["x"] * 20})
    t = frequency_table(unlisted, ["a", "b"])
    assert t.outcome is Outcome.WITHHELD and len(t.cells) == 2
    t = frequency_table(unlisted, ["b", "a"], categories={"a": []})
    assert t.outcome is Outcome.WITHHELD


def test_records_are_json_ready() -> None:
    df = records({("x", "p"): 3, ("x", "q"): 40, ("y", "p"): 50, ("y", "q"): 60})
    recs = frequency_table(df, ["a", "b"]).records()
    text = json.dumps(recs)
    assert recs[0] == {"cell": {"a": "x", "b": "p"}, "value": None,
                       "status": "suppressed_primary", "rules": ["threshold"]}
    assert '"value": 110' in text


# -- magnitude tables -------------------------------------------------------------------

def test_magnitude_values_match_pandas() -> None:
    rng = np.random.default_rng(11)
    df = pd.DataFrame({"a": rng.choice(list("xy"), 500), "b": rng.choice(list("pqr"), 500),
                       "v": rng.normal(100, 15, 500)})
    df.loc[::50, "v"] = np.nan
    out = magnitude_table(df, ["a", "b"], "v", [Statistic.SUM, "mean", "std"])
    for name, fn in (("sum", "sum"), ("mean", "mean"), ("std", "std")):
        t = out[name]
        assert t.outcome is Outcome.RELEASED
        want = df.groupby(["a", "b"])["v"].agg(fn)
        for key, v in want.items():
            assert t.cells.loc[key, "value"] == pytest.approx(v, rel=1e-12)
        assert t.cells.loc[(MARGIN, MARGIN), "value"] == pytest.approx(df.v.agg(fn), rel=1e-12)
        assert t.cells.loc[("x", MARGIN), "value"] == \
            pytest.approx(df[df.a == "x"].v.agg(fn), rel=1e-12)


def test_dominance_one_contributor_at_ninety_percent_is_unsafe() -> None:
    nk_only = SDCPolicy(p_percent=0.0)
    df = contributors([900.0, *alike(100.0 / 11, 11)])
    t = magnitude_table(df, ["g"], "v", ["sum", "mean"], nk_only)
    for name in ("sum", "mean"):
        assert t[name].cells.loc["x", "status"] is PRIMARY
        assert t[name].cells.loc["x", "rules"] == (Rule.DOMINANCE,)


def test_dominance_two_contributors_at_ninety_nine_percent_are_unsafe() -> None:
    df = contributors([500.0, 490.0, *alike(1.0, 10)])
    t = magnitude_table(df, ["g"], "v", ["sum"], SDCPolicy(p_percent=0.0))["sum"]
    assert t.cells.loc["x", "status"] is PRIMARY
    assert t.cells.loc["x", "rules"] == (Rule.DOMINANCE,)
    # Both ways of reading the cell are unsafe: the p% rule catches it on its own too.
    p_only = SDCPolicy(dominance_k=1.0)
    assert magnitude_table(df, ["g"], "v", ["sum"], p_only)["sum"].cells.loc["x", "rules"] \
        == (Rule.P_PERCENT,)


def test_dominance_releases_a_balanced_cell() -> None:
    df = contributors([100.0, 90.0, 80.0, 70.0, 60.0, 50.0, 40.0, 30.0, 20.0, 10.0, 5.0])
    t = magnitude_table(df, ["g"], "v", ["sum", "mean"])
    assert t["sum"].outcome is Outcome.RELEASED


def test_p_percent_rule() -> None:
    # Remainder after the two largest: 9 < 0.10 * 100, so the second largest could
    # estimate the largest within 10 %. With 11 the estimate is too loose.
    no_nk = SDCPolicy(dominance_k=1.0)
    for rest, status in ((9.0, PRIMARY), (11.0, OK)):
        df = contributors([100.0, 60.0, *alike(rest / 10, 10)])
        c = magnitude_table(df, ["g"], "v", ["sum"], no_nk)["sum"].cells.loc["x"]
        assert c["status"] is status
        assert (Rule.P_PERCENT in c["rules"]) == (status is PRIMARY)


def test_negative_contributions_count_by_magnitude() -> None:
    # By magnitude one contributor holds over 90 % of the cell; signed, the top two
    # (10 + 10) would look like a small share of a negative total.
    df = contributors([-1000.0] + [10.0] * 11)
    c = magnitude_table(df, ["g"], "v", ["sum"])["sum"].cells.loc["x"]
    assert c["status"] is PRIMARY and Rule.DOMINANCE in c["rules"]


def test_dominance_counts_units_when_given() -> None:
    # Twelve records, but one person holds six of them and most of the total.
    df = contributors(alike(150.0, 6) + alike(10.0, 6))
    df["person"] = ["p0"] * 6 + [f"q{i}" for i in range(len(df) - 6)]
    assert magnitude_table(df, ["g"], "v", ["sum"])["sum"].cells.loc["x", "status"] is OK
    c = magnitude_table(df, ["g"], "v", ["sum"], unit="person")["sum"].cells.loc["x"]
    assert c["status"] is PRIMARY and Rule.THRESHOLD in c["rules"]


def test_magnitude_class_disclosure_when_all_contributors_share_a_value() -> None:
    df = contributors([7.0] * 15)
    t = magnitude_table(df, ["g"], "v", ["mean", "median"])
    for name in ("mean", "q0.5"):
        assert t[name].cells.loc["x", "status"] is FLAGGED
        assert t[name].cells.loc["x", "rules"] == (Rule.CLASS_DISCLOSURE,)


def test_magnitude_threshold_and_zeros() -> None:
    df = contributors([50.0] * 5 + [60.0] * 4)
    out = magnitude_table(df, ["g"], "v", ["sum", "median"],
                          categories={"g": ["x", "y", "w"]})
    for t in out.values():
        assert t.cells.loc["x", "status"] is PRIMARY
        assert t.cells.loc["w", "status"] is PRIMARY
        assert t.cells.loc["w", "rules"] == (Rule.ZEROS,)
    # x and w hide each other (w's emptiness is as secret as x's value).
    assert out["sum"].cells.loc["y", "status"] is OK
    # With zeros published, w is no cover: y goes too. Sums share one pattern with
    # secondary suppression; medians are not additive and keep their primaries only.
    public = magnitude_table(df, ["g"], "v", ["sum", "median"],
                             SDCPolicy(zeros=Action.FLAG), categories={"g": ["x", "y", "w"]})
    assert public["sum"].cells.loc["y", "status"] is SECONDARY
    assert public["q0.5"].cells.loc["y", "status"] is OK


def test_zero_dimension_magnitude_table() -> None:
    df = pd.DataFrame({"v": np.arange(1.0, 41.0)})
    out = magnitude_table(df, [], "v", ["sum", "mean", "median"])
    assert out["sum"].cells.loc[MARGIN, "value"] == 820.0
    assert out["mean"].cells.loc[MARGIN, "value"] == 20.5
    assert out["q0.5"].cells.loc[MARGIN, "value"] == 20.5


def test_median_of_an_odd_group_is_not_a_record_value() -> None:
    # Type-7 median of 1..11 is 6, one record's value: moved to the midpoint with its
    # nearer distinct neighbour (a tie goes down): 5.5.
    df = pd.DataFrame({"v": np.arange(1.0, 12.0)})
    assert magnitude_table(df, [], "v", ["median"])["q0.5"].cells.loc[MARGIN, "value"] == 5.5


def test_a_value_held_by_many_records_is_released_as_is() -> None:
    df = pd.DataFrame({"v": [1.0] * 5 + [3.0] * 12 + [8.0] * 6})
    t = magnitude_table(df, [], "v", ["median"], quantiles=[0.1])
    assert t["q0.5"].cells.loc[MARGIN, "value"] == 3.0
    assert t["q0.5"].cells.loc[MARGIN, "status"] is OK


def test_quantile_next_to_an_extreme_is_suppressed_unless_allowed() -> None:
    df = pd.DataFrame({"v": np.arange(1.0, 13.0) ** 2})
    t = magnitude_table(df, [], "v", [], quantiles=[0.95])["q0.95"]
    assert t.cells.loc[MARGIN, "status"] is PRIMARY
    assert t.cells.loc[MARGIN, "rules"] == (Rule.QUANTILE_EXTREME,)
    free = magnitude_table(df, [], "v", [], SDCPolicy(allow_extremes=True),
                           quantiles=[0.95])["q0.95"]
    assert free.cells.loc[MARGIN, "value"] == (121 + 144) / 2


def test_min_and_max_only_when_the_policy_allows_extremes() -> None:
    df = pd.DataFrame({"v": np.arange(1.0, 41.0)})
    for stat in ("min", "max"):
        with pytest.raises(InvalidInput) as err:
            magnitude_table(df, [], "v", [stat])
        assert err.value.rule == "extremes"
    with pytest.raises(InvalidInput):
        magnitude_table(df, [], "v", [], quantiles=[1.0])
    out = magnitude_table(df, [], "v", ["min", "max"], SDCPolicy(allow_extremes=True))
    assert out["min"].cells.loc[MARGIN, "value"] == 1.0
    assert out["max"].cells.loc[MARGIN, "value"] == 40.0


def test_magnitude_input_checks() -> None:
    df = pd.DataFrame({"g": ["x"] * 20, "v": np.arange(20.0), "s": ["a"] * 20,
                       "w": [np.inf] + [1.0] * 19})
    cases: list[tuple[str, Any, list[float]]] = [
        ("s", ["sum"], []), ("w", ["sum"], []), ("g", ["sum"], []), ("nope", ["sum"], []),
        ("v", ["count"], []), ("v", ["mode"], []), ("v", [], []), ("v", ["sum"], [1.5]),
        ("v", "sum", [])]
    for value, statistics, quantiles in cases:
        with pytest.raises(InvalidInput):
            magnitude_table(df, ["g"], value, statistics, quantiles=quantiles)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 12), min_size=10, max_size=60),
       st.lists(st.floats(0.05, 0.95), min_size=1, max_size=4))
def test_released_quantiles_are_never_a_rare_record_value(values: list[int],
                                                          qs: list[float]) -> None:
    df = pd.DataFrame({"g": ["x"] * len(values), "v": [float(v) for v in values]})
    out = magnitude_table(df, ["g"], "v", [], SDCPolicy(class_disclosure=Action.ALLOW),
                          quantiles=qs)
    held = pd.Series(values).value_counts()
    for t in out.values():
        for status, value in zip(t.status, t.values, strict=True):
            if status is OK:
                assert value not in held.index or held[value] >= 10
                assert min(values) <= value <= max(values)


# -- texts ------------------------------------------------------------------------------

NUMBER = re.compile(r"\d+(?:\.\d+)?")


def test_texts_carry_no_data_derived_numbers() -> None:
    # Unusual parameters, so a number in a text is a policy number or a leak.
    policy = SDCPolicy(min_count=7, dominance_n=3, dominance_k=0.85, p_percent=0.15,
                       min_dof=12, zeros=Action.SUPPRESS, class_disclosure=Action.SUPPRESS,
                       extra_dominance=(NKRule(1, 0.55),))
    allowed = {"7", "3", "0.85", "0.15", "12", "1", "0.55", str(policy.max_cells),
               str(policy.max_released_cells)}
    rng = np.random.default_rng(2)
    n = 3000
    df = pd.DataFrame({"a": rng.choice(list("pqrstu"), n, p=[.4, .3, .2, .07, .02, .01]),
                       "b": rng.choice(list("xyz"), n, p=[.7, .25, .05]),
                       "v": rng.pareto(1.2, n) * 1000})
    df.loc[df.a == "s", "b"] = "x"  # class disclosure
    df.loc[(df.a == "p") & (df.b == "z"), "v"] = 7.0
    texts = [describe(r, policy) for r in Rule]
    seen: set[Rule] = set()
    for table in [frequency_table(df, ["a", "b"], policy),
                  *magnitude_table(df, ["a", "b"], "v", ["sum", "median"], policy,
                                   quantiles=[0.99]).values()]:
        texts += table.reasons
        seen |= set(table.rules)
        for rules in table.cells["rules"]:
            seen |= set(rules)
    assert {Rule.THRESHOLD, Rule.ZEROS, Rule.DOMINANCE, Rule.P_PERCENT,
            Rule.CLASS_DISCLOSURE, Rule.SECONDARY, Rule.QUANTILE_EXTREME} <= seen
    try:
        frequency_table(df, ["a", "v"], policy)
    except InvalidInput as e:
        texts.append(str(e))
    for text in texts:
        assert set(NUMBER.findall(text)) <= allowed, text


# -- false blocks -----------------------------------------------------------------------

def test_a_wide_crosstab_of_large_cells_is_released_untouched() -> None:
    rng = np.random.default_rng(8)
    df = pd.DataFrame({"a": rng.integers(0, 20, 60_000), "b": rng.integers(0, 15, 60_000)})
    t = frequency_table(df, ["a", "b"])
    assert t.outcome is Outcome.RELEASED and t.reasons == ()
    assert (t.status == OK).all() and len(t.cells) == 21 * 16


def test_medians_and_means_of_large_groups_are_released() -> None:
    rng = np.random.default_rng(9)
    df = pd.DataFrame({"g": rng.choice(list("abcde"), 5000), "v": rng.lognormal(10, 1, 5000)})
    out = magnitude_table(df, ["g"], "v", ["sum", "mean", "std", "median"],
                          quantiles=[0.25, 0.75])
    for t in out.values():
        assert t.outcome is Outcome.RELEASED, t.reasons
    # Each released median lies within one order statistic of the textbook one.
    med = out["q0.5"].values
    for g, v in df.groupby("g")["v"]:
        x = np.sort(v.to_numpy())
        mid = (len(x) - 1) / 2
        assert x[int(np.floor(mid)) - 1] < med[g] < x[int(np.ceil(mid)) + 1]
        assert med[g] == pytest.approx(np.median(x), rel=5e-3)
