"""Re-deriving a script's tables from the permitted input, and flagging what cannot be.

The file-level checks (:mod:`containers.checks`) trust what a script says about its own
table: that the ``n`` column is the number of records behind a row, and that the other
cells are statistics of those records. Here the agent recomputes both from the permitted
input and applies the disclosure rules to the true figures. A table is *verified* only
when every row and every cell is explained:

* key columns are columns named after an input column whose every value is a value of
  that column in the input (a table of overall figures, one row without keys, is keyed
  by the whole input);
* the count column equals the true number of records with those keys; the group's
  contributors (its records, or the persons they are of where the dataset declares an
  identifier: :mod:`containers.rederive_units`) number at least the minimum cell count,
  and so do those holding a value of each statistic's column and, where that column takes
  two or three values in the group or is discrete (its values repeat:
  :func:`compute.sdc.partition_bound`), those holding each value (the sum of a 0/1 column
  is its holders' count; beside the column's frequency table the sums solve for the
  counts it hides); every group of the input
  with at least that many contributors is a row (the shape is the input's, so leaving
  rows out carries nothing), and the groups left out hold, in the whole table and in
  each of its margins, none or at least that many contributors (a total less the rows
  would give them: :mod:`containers.rederive_margins`);
* every other column is ``<statistic>_<column>`` or ``<column>_<statistic>`` of a
  numeric input column, for a statistic of :data:`STATISTICS`, each cell a plain number
  of at most :data:`MAX_DECIMALS` decimals, equal to that statistic of the group's
  records rounded to the column's finest precision (so neither a tiny offset nor the
  choice of precision can carry a message), and sums, means and
  standard deviations pass the nk and p% rules on the group's contributions (values;
  for a standard deviation, squared deviations from the group's mean; a person's
  records summed);
* no line of the table (all keys fixed but one) holds every record of its group in one
  category, and no statistic's cell has two or more records all holding one value
  (class disclosure).

Anything else is a finding. A finding names the rule, the column and the row by
position, never a value, a count or a column name (all of which the script chose), so a
reviewer can read it and it can be stored beside the output. Outputs with findings are
never released automatically; they wait for a human decision. The groups of a verified
table, and the unions of its rows per margin, go through the differencing audit like
the statistics route's cells (:func:`containers.script_audit.script_findings`). Not
done: medians' individual-value rule (medians are always flagged), filters the script
applied before grouping (a table over a subset of the input does not re-derive and is
flagged).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from compute.sdc import SDCPolicy, partition_bound
from containers.datasets import canonical
from containers.findings import Finding as Finding
from containers.rederive_margins import (
    MAX_KEYS,
    class_disclosure,
    complement_findings,
    margin_labels,
)
from containers.rederive_units import Units, dominated, group_holders, holders, short_level

COUNT_COLUMNS = ("n", "count")
#: What a value column may hold, and how it is recomputed from a group's values.
STATISTICS = {
    "sum": lambda v: float(np.sum(v)),
    "total": lambda v: float(np.sum(v)),
    "mean": lambda v: float(np.mean(v)),
    "avg": lambda v: float(np.mean(v)),
    "average": lambda v: float(np.mean(v)),
    "std": lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else math.nan,
    "sd": lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else math.nan,
}
MAGNITUDE = frozenset(STATISTICS)
#: Statistics recognised but never released automatically.
FLAGGED_STATISTICS = frozenset({"median", "min", "max", "p50", "q50"})
#: Statistics whose contributions are squared deviations from the cell mean, not values.
SPREAD = frozenset({"std", "sd"})
MAX_CELLS = 5000
MAX_OUTPUTS = 10
MAX_DECIMALS = 6
#: Room for float summation order on top of the rounding half-unit.
REL_TOL = 1e-9


def parse_table(name: str, content: bytes) -> tuple[list[str], list[list[str]]]:
    """The released content of an output as the checks wrote it (CSV or JSON records)."""
    text = content.decode("utf-8")
    if name.endswith(".csv"):
        rows = list(csv.reader(io.StringIO(text)))
        return (rows[0], [r for r in rows[1:] if r]) if rows else ([], [])
    data = json.loads(text)
    records = data if isinstance(data, list) else [data]
    header = list(records[0]) if records else []
    return header, [["" if r[h] is None else str(r[h]) for h in header] for r in records]


def _number(cell: str) -> float | None:
    try:
        v = float(cell)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _decimals(cell: str) -> int | None:
    """Decimals written in a plain number's text; None for exponents and the like."""
    t = cell.strip().lstrip("+-")
    whole, _, frac = t.partition(".")
    if not (whole.isdigit() or (whole == "" and frac)) or (frac and not frac.isdigit()):
        return None
    # Trailing zeros say nothing: pandas writes a mean rounded to units as 4567.0.
    return len(frac.rstrip("0"))


def _canonical(series: pd.Series) -> pd.Series:
    """:func:`canonical` of every value, computed once per distinct value."""
    codes, uniques = pd.factorize(series)
    spelled = np.array([canonical(str(u)) for u in uniques] + [""], dtype=object)
    return pd.Series(spelled[codes], index=series.index)


def _floats(series: pd.Series) -> np.ndarray[Any, np.dtype[np.float64]]:
    """A text column's numbers (missing: NaN); numpy's C parser first, pandas' if odd."""
    text = series.to_numpy(dtype=str)
    try:
        floats: np.ndarray[Any, np.dtype[np.float64]] = np.where(
            text == "", "nan", text).astype(np.float64)
        return floats
    except ValueError:
        parsed: np.ndarray[Any, np.dtype[np.float64]] = pd.to_numeric(
            series, errors="coerce").to_numpy(np.float64)
        return parsed


def _statistic(column: str, numeric: Sequence[str]) -> tuple[str, str] | None:
    """(statistic, input column) a value column's name declares, if any."""
    low = column.strip().lower()
    for col in numeric:
        c = col.lower()
        for stat in (*STATISTICS, *FLAGGED_STATISTICS):
            if low in (f"{stat}_{c}", f"{c}_{stat}"):
                return stat, col
    return None


def _header(header: Sequence[str], frame: pd.DataFrame, types: Mapping[str, str]
            ) -> tuple[list[str], list[tuple[str, str]]]:
    """A table's key columns and its (statistic, input column) pairs, in header order,
    read as :func:`rederive_groups` reads them: the count column is neither, and a name
    is a key before it is a statistic. The renderer writes only these, so nothing leaves
    that was not verified."""
    by_name = {c.lower(): c for c in frame.columns}
    lowered = [h.strip().lower() for h in header]
    count_at = next((i for i, h in enumerate(lowered) if h in COUNT_COLUMNS), None)
    numeric = [c for c in frame.columns if types.get(c) in ("integer", "number")]
    keys: list[str] = []
    stats: list[tuple[str, str]] = []
    for i, h in enumerate(lowered):
        if i == count_at:
            continue
        if h in by_name:
            keys.append(by_name[h])
        elif (declared := _statistic(h, numeric)) is not None:
            stats.append(declared)
    return keys, stats


def layout(header: Sequence[str], frame: pd.DataFrame, types: Mapping[str, str]
           ) -> tuple[list[str], list[str]]:
    """A table's key columns and its statistics' input columns (first use order), as
    :func:`rederive_groups` reads them from its header."""
    keys, stats = _header(header, frame, types)
    return keys, list(dict.fromkeys(col for _, col in stats))


def rederive(header: Sequence[str], rows: Sequence[Sequence[str]], frame: pd.DataFrame,
             types: Mapping[str, str], policy: SDCPolicy, units: Units = None
             ) -> list[Finding]:
    """Findings for one output table against the permitted input ``frame`` (text)."""
    return rederive_groups(header, rows, frame, types, policy, units)[0]


Groups = list[np.ndarray[Any, np.dtype[np.bool_]]]
Margins = list[np.ndarray[Any, np.dtype[np.int64]]]


def rederive_groups(header: Sequence[str], rows: Sequence[Sequence[str]],
                    frame: pd.DataFrame, types: Mapping[str, str], policy: SDCPolicy,
                    units: Units = None) -> tuple[list[Finding], Groups, Margins, Groups]:
    """Findings; per row the input records it describes; per margin of the table (its
    total, its lines) each record's margin cell (:func:`margin_labels`); per input column
    a statistic of the table is of, the records holding a value of it (a row's sum of
    that column covers only those). The last three for the differencing audit, empty
    when the table's groups could not be re-derived.
    ``units``: each record's person (:mod:`containers.rederive_units`); None: records."""
    if len(rows) * max(1, len(header)) > MAX_CELLS:
        return ([Finding("too_many_cells", f"more than {MAX_CELLS} cells: not verifiable")],
                [], [], [])
    by_name = {c.lower(): c for c in frame.columns}
    lowered = [h.strip().lower() for h in header]
    count_at = next((i for i, h in enumerate(lowered) if h in COUNT_COLUMNS), None)
    numeric = [c for c in frame.columns if types.get(c) in ("integer", "number")]
    keys: list[tuple[int, str]] = []
    values: list[tuple[int, str, str]] = []
    findings: list[Finding] = []
    canon = {c: _canonical(frame[c]) for c in frame.columns if c.lower() in lowered}
    number = {c: _floats(frame[c]) for c in numeric if any(c.lower() in h for h in lowered)}
    for i, h in enumerate(lowered):
        if i == count_at:
            continue
        if h in by_name:
            col = by_name[h]
            known = set(canon[col])
            if all(canonical(r[i]) in known for r in rows):
                keys.append((i, col))
                continue
            findings.append(Finding("key_values", "values not found in the input column "
                                                  "of that name", column=i + 1))
            continue
        declared = _statistic(h, numeric)
        if declared is None:
            findings.append(Finding("unexplained_column", "not an input column nor a "
                                    "statistic of one", column=i + 1))
        elif declared[0] in FLAGGED_STATISTICS:
            findings.append(Finding("order_statistic", "medians, minima and maxima are "
                                    "checked by a person", column=i + 1))
        else:
            values.append((i, declared[0], declared[1]))
    if count_at is None:
        findings.append(Finding("no_count", "no count column: true counts cannot be "
                                            "compared"))
    if not keys and len(rows) > 1:
        findings.append(Finding("keys_unexplained", "several rows but no key column: "
                                                    "the groups cannot be re-derived"))
    if len(keys) > MAX_KEYS:
        findings.append(Finding("too_many_keys", f"more than {MAX_KEYS} key columns: the "
                                "table's margins are not checked"))
    if findings:
        return findings, [], [], []
    groups = []
    # Whether each value column is discrete, judged on the whole input column as the
    # statistics route judges it (not on a row's records): every table agrees.
    bounds = {col: partition_bound(number[col]) for _, _, col in values}
    # Positions of the input's records per key combination: one grouping, not a scan
    # of the input per row.
    members: dict[tuple[str, ...], Any] = {}
    if keys:
        found_groups = pd.Series(np.arange(len(frame))).groupby(
            [canon[col].to_numpy() for _, col in keys]).indices
        members = {(k if isinstance(k, tuple) else (k,)): v
                   for k, v in found_groups.items()}
    seen: set[tuple[str, ...]] = set()
    # A table without rows (everything suppressed, or an empty group on mock data) has
    # nothing to compare: precision 0.
    precision = {i: max(((_decimals(r[i]) or 0) for r in rows), default=0)
                 for i, _, _ in values}
    for r_i, row in enumerate(rows, 1):
        key = tuple(canonical(row[i]) for i, _ in keys)
        if key in seen:
            findings.append(Finding("duplicate_keys", "the same keys appear twice", row=r_i))
            continue
        seen.add(key)
        mask = np.zeros(len(frame), dtype=bool)
        if keys:
            mask[members.get(key, [])] = True
        else:
            mask[:] = True
        true_n = int(mask.sum())
        groups.append(mask)
        assert count_at is not None
        stated = _number(row[count_at])
        if stated is None or int(stated) != true_n:
            findings.append(Finding("count_mismatch", "the count is not the number of "
                                    "input records with these keys", column=count_at + 1,
                                    row=r_i))
        if 0 < holders(units, mask) < policy.min_count:
            findings.append(Finding("threshold", f"fewer than {policy.min_count} "
                                    "contributors with these keys", row=r_i))
        for i, stat, col in values:
            held = mask & ~np.isnan(number[col])
            group = number[col][held]
            if 0 < holders(units, held) < policy.min_count:
                # The statistic's contributors are the records holding a value, not the
                # records with the keys: twelve records with three costs give a mean
                # and std of three costs.
                findings.append(Finding("threshold", f"fewer than {policy.min_count} "
                                        "records with these keys hold a value of the "
                                        "column", column=i + 1, row=r_i))
                continue
            got = _number(row[i]) if row[i].strip() else None
            places = _decimals(row[i])
            if got is None or places is None or places > MAX_DECIMALS:
                findings.append(Finding("not_plain_number", "not a plain finite number of "
                                        f"at most {MAX_DECIMALS} decimals", column=i + 1,
                                        row=r_i))
                continue
            # Judged at the column's finest precision: a cell written with fewer decimals
            # must still be the true value rounded to that precision (trailing zeros
            # dropped), so the choice of precision carries nothing.
            places = precision[i]
            want = STATISTICS[stat](group) if len(group) else math.nan
            slack = 0.5 * 10.0 ** -places + REL_TOL * abs(want) if math.isfinite(want) else 0
            if not math.isfinite(want) or abs(got - want) > slack:
                findings.append(Finding("value_mismatch", "not the statistic its name "
                                        "declares of the records with these keys",
                                        column=i + 1, row=r_i))
                continue
            if len(group) >= 2 and group.min() == group.max():
                # Every contributor holds the one value (a mean of a 0/1 column of 1, a
                # std of 0): the cell says it of each of them, as a line of a frequency
                # table all in one category would (R10-4; the statistics route's
                # magnitude rule).
                findings.append(Finding("class_disclosure", "every record of the cell "
                                        "holds the same value of the column",
                                        column=i + 1, row=r_i))
                continue
            if short_level(group, policy.min_count, None if units is None else units[held],
                           bounds[col]):
                findings.append(Finding("threshold", f"fewer than {policy.min_count} "
                                        "contributors hold one of the values the column "
                                        "takes with these keys (few or discrete values "
                                        "partition the row)", column=i + 1,
                                        row=r_i))
            rule = dominated(group, stat in SPREAD, policy,
                             None if units is None else units[held])
            if rule is not None:
                findings.append(Finding(rule, "a few records dominate the cell",
                                        column=i + 1, row=r_i))
    if keys and not findings:
        # The shape must be the input's, not the script's choice: every group with at
        # least k records is a row (smaller ones may be left out, as suppressed, when
        # what they leave out is not a total less the rows: rederive_margins).
        sizes = frame.groupby([canon[col] for _, col in keys]).size()
        contributors = group_holders([canon[col] for _, col in keys], units, sizes)
        if int((contributors >= policy.min_count).sum()) != len(rows):
            findings.append(Finding("shape", "rows are missing that the input has: which "
                                             "rows a table holds is not the script's choice"))
        else:
            # The rows are exactly the groups of k or more: what they leave out is the
            # groups below, and a total less its rows gives those.
            findings += complement_findings(
                [canon[col].to_numpy() for _, col in keys],
                {i: ~np.isnan(number[col]) for i, _, col in values}, policy.min_count,
                units, {i: (number[col], stat in SPREAD) for i, stat, col in values},
                policy)
        findings += class_disclosure(sizes, [col for _, col in keys], canon)
    valued = [~np.isnan(number[col]) for col in dict.fromkeys(col for _, _, col in values)]
    return (findings, groups, margin_labels([canon[col].to_numpy() for _, col in keys],
                                            groups), valued)


@dataclass
class Rederived:
    findings: list[Finding]
    groups: Groups  # per row: its input records
    cells: int  # values the output holds (for the permit's cap)
    rendered: bytes | None = None  # a verified table as the platform writes it
    margins: Margins = field(default_factory=list)  # the table's totals (margin_labels)
    # Per input column of a statistic: the records holding a value (what its sums cover).
    valued: Groups = field(default_factory=list)
    # The table's key columns and, in the order of ``valued``, its statistics' columns
    # (the labels of its populations: containers.script_labels).
    keys: list[str] = field(default_factory=list)
    valued_columns: list[str] = field(default_factory=list)


#: Spellings of one statistic; a released header uses the first.
SYNONYMS = {"total": "sum", "avg": "mean", "average": "mean", "sd": "std"}
SIGNIFICANT = 7


def _figure(v: float) -> str:
    return str(np.format_float_positional(v, precision=SIGNIFICANT, unique=False,
                                          fractional=False, trim="-"))


def _spelling(values: pd.Series) -> str:
    """A group's key as the input spells it, where its records spell it one way; else its
    canonical spelling (R10-3: records are grouped by :func:`canonical`, and 19-digit
    numbers differing past the 17th digit are one float: the first record's spelling was
    its own exact number)."""
    spellings = values.unique()
    return str(spellings[0]) if len(spellings) == 1 else canonical(str(spellings[0]))


def render(name: str, header: Sequence[str], rows: Sequence[Sequence[str]],
           frame: pd.DataFrame, types: Mapping[str, str], groups: Sequence[Any]) -> bytes:
    """A verified table written by the platform, not the script: keys in the input's own
    spelling and column order, the count, then each declared statistic (normalised name,
    sorted) recomputed to 7 significant digits; rows sorted by key. Whatever the script
    chose beyond which keys and which statistics (spelling, precision, order) is gone.
    Keys and statistics are the ones the re-derivation verified (:func:`_header`): an
    input column named ``count``, or one whose name differs from a key's only in case,
    is not a key (R10-1: it once left as its first record's raw value per row)."""
    read_keys, stats = _header(header, frame, types)
    keys = [c for c in frame.columns if c in read_keys]
    values = sorted({(SYNONYMS.get(stat, stat), col) for stat, col in stats})
    out_header = [*keys, "n", *(f"{stat}_{col}" for stat, col in values)]
    records = []
    for mask in groups:
        sub = frame[mask]
        row = [_spelling(sub[k]) for k in keys] + [str(int(mask.sum()))]
        for stat, col in values:
            group = pd.to_numeric(sub[col], errors="coerce").dropna().to_numpy()
            row.append(_figure(STATISTICS[stat](group)))
        records.append(row)
    records.sort(key=lambda r: [canonical(x) for x in r[:len(keys)]])
    if name.endswith(".json"):
        return json.dumps([dict(zip(out_header, r, strict=True)) for r in records]).encode()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(out_header)
    writer.writerows(records)
    return buf.getvalue().encode()


def output_findings(outputs: Sequence[tuple[str, bytes]], frame: pd.DataFrame | None,
                    types: Mapping[str, str], policy: SDCPolicy, units: Units = None
                    ) -> list[list[Finding]]:
    """Per output (name, released content): its findings. ``frame`` None: the input
    cannot be re-read (several datasets), so nothing is verifiable."""
    return [r.findings for r in rederive_outputs(outputs, frame, types, policy, units)]


def rederive_outputs(outputs: Sequence[tuple[str, bytes]], frame: pd.DataFrame | None,
                     types: Mapping[str, str], policy: SDCPolicy, units: Units = None
                     ) -> list[Rederived]:
    if len(outputs) > MAX_OUTPUTS:
        return [Rederived([Finding("too_many_outputs",
                                   f"more than {MAX_OUTPUTS} outputs in one run")], [], 0)
                for _ in outputs]
    out = []
    for name, content in outputs:
        if frame is None:
            out.append(Rederived([Finding("unverifiable", "outputs over several datasets "
                                                          "are not re-derived")], [], 0))
            continue
        try:
            header, rows = parse_table(name, content)
        except (ValueError, UnicodeDecodeError):
            out.append(Rederived([Finding("unverifiable", "the output could not be read "
                                                          "back")], [], 0))
            continue
        found, groups, margins, valued = rederive_groups(header, rows, frame, types,
                                                         policy, units)
        keys, valued_columns = layout(header, frame, types)
        out.append(Rederived(found, groups, len(rows) * len(header),
                             None if found else render(name, header, rows, frame, types,
                                                       groups), margins, valued,
                             keys, valued_columns))
    return out
