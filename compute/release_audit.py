"""A statistics job checked against what was already released: differencing and the cap.

:func:`compute_audited` computes a spec like :func:`compute.statistics.compute`, then
compares the population of every cell it would release with the populations released
before to the same requester from the same data (and with those of the job's earlier
analyses): a cell whose population differs from one of them by at least one but fewer
than ``min_count`` records is suppressed (rule ``differencing``), the table is checked
again with it suppressed (secondary suppression closes the margins around it, and
every cell the first computation hid stays hidden: only audited cells are ever shown),
and a test or model over such a population is withheld. An analysis that would take the
permit past its cap on released cells is withheld whole (``release_cap``).

Where the dataset declares identifier fields the unit is the person: a population is
the set of distinct persons behind a cell (each once, however many of its records the
cell holds), so a difference is counted in persons and a total asked before and after
one person's records left the data is caught however many records they were. Where none
is declared every record is its own unit, as before. The same persons over other
records (one more episode of a patient already in the data) are no difference in
persons, so each cell is also compared as its persons' holdings (each person with the
set of its records in the cell: :func:`compute.sdc.audit.holding_sketches`), which
differ by two identities per person whose records differ: a difference in the records
of fewer than ``min_count`` persons suppresses the cell. Record populations released before
identifiers were declared (another identity space: a person set is never subtracted
from a record set) are still compared with the records of a job that counts persons,
failing closed: a difference of fewer than ``min_count`` persons can span up to
``min_count`` times the most records one person holds, so any difference smaller than
that (or too large to decode while the counts are that close) suppresses the cell
(:func:`record_tolerance`).

Record identities hash the permitted fields (an identity space:
:mod:`compute.sdc.identity`); populations released in other spaces are compared in
theirs (``History.others``), those no identity can compare any more by count
(``blind_*``), and cells of the same label released from an edition that overlaps
little with this one by count too (``label_prior``): 1 to k-1 apart suppresses. A
table of values' or a model's cells are also compared with earlier cells of their label
over only the columns they read (``label_sketches``).

Pure: the caller (the provider's agent) supplies the keyed row identities, the earlier
populations and the count released so far, and records what this returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from compute import sdc, statdp, statistics
from compute.errors import InvalidInput
from compute.sdc.audit import (
    U64,
    Sketches,
    holding_limit,
    holding_slots,
    near_duplicates,
    slots_for,
    table_sketches,
)
from compute.sdc.combinations import differenced
from compute.sdc.grid import encode
from compute.sdc.identity import (
    LabelEntry,
    blind_hits,
    label_digest,
    record_identities,
    relabelled,
)
from compute.statspec import (
    ChiSquareTest,
    FrequencyTable,
    LinearModel,
    MagnitudeTable,
    StatisticsSpec,
)


@dataclass(frozen=True, eq=False)
class History:
    """What the provider's audit store holds for this requester and dataset."""

    ids: U64  # keyed identity of each record's unit (its own, or its person's), in order
    prior: Sketches  # populations of that unit released before
    released_before: int  # cell values released so far under the job's permit
    persons: bool = False  # ``ids`` name persons: several records may share one
    # With persons: each record's own identity, and the lineage's record populations.
    records: U64 | None = None
    record_prior: Sketches | None = None
    # With persons: the holdings released before (compute.sdc.audit.holding_sketches),
    # and the digests of person populations released before holdings were kept.
    holdings: Sketches | None = None
    bare: frozenset[str] = frozenset()
    # The same, in each other identity space populations were released in (another
    # permit's fields, or the identities kept before typed ones): the job's records
    # under that space's identities and that space's populations.
    others: tuple[History, ...] = ()
    # Counts of populations whose identities the job cannot compute (their space's
    # columns left the data) or cannot trust (kept before typed identities): a cell
    # whose count is 1 to k-1 from one of them is suppressed (fail closed).
    blind_records: np.ndarray[Any, np.dtype[np.int64]] = field(
        default_factory=lambda: np.zeros(0, dtype=np.int64))
    blind_persons: np.ndarray[Any, np.dtype[np.int64]] = field(
        default_factory=lambda: np.zeros(0, dtype=np.int64))
    # Labels (compute.sdc.identity.label_digest, keyed by ``label_key``) of cells released
    # from editions that overlap little with this one, with their (units, records):
    # compared by count where identities cannot compare them.
    label_key: str | None = None
    label_prior: Mapping[str, list[tuple[int, int]]] = field(default_factory=dict)
    # Per label, the populations of cells of that label released before, identified by
    # only the columns the label reads (a sum's dimensions and value: another identity
    # space per label, the same for every permit and edition), and the fields' types.
    label_sketches: Mapping[str, Sketches] = field(default_factory=dict)
    types: Mapping[str, str] = field(default_factory=dict)


def record_tolerance(persons: U64, k: int) -> int:
    """The record difference below which a population of records may differ from another
    by fewer than ``k`` persons: ``k`` times the most records one person holds."""
    if not len(persons):
        return k
    _, counts = np.unique(persons, return_counts=True)
    return k * int(counts.max())


@dataclass(frozen=True, eq=False)
class Audited:
    document: dict[str, Any]
    released: Sketches  # populations this job releases (to record)
    cells_released: int  # cell values this job releases (to count against the cap)
    # With persons: the holdings of the same cells (to record beside them).
    holdings: Sketches | None = None
    # The released cells' labels with their counts (units, records) and, for a cell of
    # values, its population over the columns it reads, to record.
    labels: tuple[LabelEntry, ...] = ()


def _released_cells(result: dict[str, Any]) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Per cell (full margined order): does any table of the analysis release a value?"""
    tables = result.get("tables") or [result]
    shown = [np.array([c["value"] is not None for c in t["cells"]], dtype=bool)
             for t in tables]
    return np.logical_or.reduce(shown) if shown else np.zeros(0, dtype=bool)


def _count_values(result: dict[str, Any]) -> int:
    if "cells" in result or "tables" in result:
        tables = result.get("tables") or [result]
        return sum(c["value"] is not None for t in tables for c in t["cells"])
    if result.get("coefficients") is not None:
        return len(result["coefficients"]) + 1
    return 1 if result.get("values") is not None else 0


def _population(frame: pd.DataFrame, a: Any, ids: U64, slots: int,
                distinct: bool = False, records: U64 | None = None) -> Sketches:
    """Per released unit of the analysis, the records (``distinct``: persons; with
    ``records`` too: the persons' holdings) behind it."""
    if isinstance(a, FrequencyTable):
        return table_sketches(frame, a.dims, ids, slots, distinct=distinct, records=records)
    if isinstance(a, MagnitudeTable):
        return table_sketches(frame, a.dims, ids, slots, value=a.value, distinct=distinct,
                              records=records)
    if isinstance(a, LinearModel):
        return table_sketches(frame, (), ids, slots, complete=[a.y, *a.x],
                              distinct=distinct, records=records)
    assert isinstance(a, ChiSquareTest)
    # Its grand total: every record used.
    whole = table_sketches(frame, a.dims, ids, slots, distinct=distinct, records=records)
    return whole.take(np.array([len(whole) - 1]))


def _cell_labels(source: pd.DataFrame, a: Any, key: str | None, cells: Any
                 ) -> list[str | None]:
    """The label of each cell in ``cells`` (indices in the margined C order): the value
    of each dimension it fixes and the columns its records must hold."""
    if key is None:
        return [None] * len(cells)
    if isinstance(a, LinearModel):
        return [label_digest(key, (), [a.y, *a.x]) for _ in cells]
    dims = tuple(a.dims)
    present = [*dims, a.value] if isinstance(a, MagnitudeTable) else list(dims)
    if isinstance(a, ChiSquareTest):
        return [label_digest(key, (), present) for _ in cells]
    grid = encode(source, dims, None)
    full = grid.full_shape
    out: list[str | None] = []
    for i in cells:
        at = np.unravel_index(int(i), full) if dims else ()
        fixed = [(d, grid.labels[j][int(at[j])]) for j, d in enumerate(dims)
                 if int(at[j]) < grid.shape[j]]
        out.append(label_digest(key, fixed, present))
    return out


def _read_population(source: pd.DataFrame, a: Any, history: History, slots: int
                     ) -> Sketches | None:
    """A table of values' or a model's cells over records identified by only the columns
    the cell reads (its label's: dimensions and value, or the model's variables), typed:
    a correction to a column it does not read leaves them the same records. None for a
    frequency table or a test: a count over its dimensions alone tells records apart by
    nothing but their number."""
    if history.label_key is None or not isinstance(a, MagnitudeTable | LinearModel):
        return None
    columns = [*a.dims, a.value] if isinstance(a, MagnitudeTable) else [a.y, *a.x]
    fields = [(c, history.types.get(c, "string")) for c in dict.fromkeys(columns)]
    return _population(source, a, record_identities(source, fields, history.label_key),
                       slots)


def _unmatched(source: pd.DataFrame, a: Any, pops: Sketches, shown: Any, k: int,
               history: History) -> tuple[Any, Any, Sketches | None]:
    """Per cell: shown and 1 to k-1 in count from a population no identity compares
    (other spaces' are compared by identity here too), or near a population of its label
    over the columns it reads; each cell's record count; those populations."""
    records_n = pops.n
    if history.persons and history.records is not None:
        records_n = _population(source, a, history.records, pops.slots).n
    hit = np.zeros(len(pops), dtype=bool)
    idx = np.flatnonzero(shown)
    read = _read_population(source, a, history, pops.slots)
    if not len(idx):
        return hit, records_n, read
    for other in history.others:
        o_pops = _population(source, a, other.ids, pops.slots, other.persons)
        o_hold = (_population(source, a, other.ids, holding_slots(k), True, other.records)
                  if other.persons else None)
        hit |= _near(source, a, o_pops, o_hold, shown, other.prior,
                     other.holdings if other.holdings is not None
                     else Sketches.empty(holding_slots(k)), k, other)
    units = history.blind_persons if history.persons else history.blind_records
    hit[idx] |= blind_hits(pops.n[idx], units, k)
    if history.persons:
        hit[idx] |= blind_hits(records_n[idx], history.blind_records, k)
    labels = _cell_labels(source, a, history.label_key, idx)
    if history.label_prior:
        hit[idx] |= relabelled(labels, pops.n[idx], records_n[idx],
                               dict(history.label_prior), k)
    if read is not None and history.label_sketches:
        for i, label in zip(idx, labels, strict=True):
            earlier = history.label_sketches.get(label or "")
            if earlier is not None and near_duplicates(read.take(np.array([i])),
                                                       earlier, k)[0]:
                hit[i] = True
    return hit, records_n, read


def bare_hits(pops: Sketches, shown: Any, bare: frozenset[str]) -> Any:
    """Per cell of ``pops``: shown and over exactly the persons of a person population
    released before holdings were kept (``bare``: their digests)."""
    hit = np.zeros(len(pops), dtype=bool)
    if bare:
        for i in np.flatnonzero(shown & (pops.n > 0)):
            hit[i] = pops.digest(int(i)) in bare
    return hit


def _near(source: pd.DataFrame, a: Any, pops: Sketches, holdings: Sketches | None,
          shown: Any, seen: Sketches, seen_holdings: Sketches, k: int,
          history: History) -> Any:
    """Per cell of ``pops``: shown and near a population released before (with persons:
    or its holdings near holdings released before)."""
    hit = np.zeros(len(pops), dtype=bool)
    if not shown.any():
        return hit
    hit[shown] = differenced(pops.take(shown), seen, k)
    if holdings is not None:
        # The same persons over other records: a difference of none in persons, of
        # two identities per person whose records differ in holdings.
        hit[shown] |= differenced(holdings.take(shown), seen_holdings, holding_limit(k))
    # Exactly the persons of a population kept without its holdings: its records cannot
    # be compared, so fail closed.
    hit |= bare_hits(pops, shown, history.bare)
    if history.persons and history.record_prior is not None and len(history.record_prior):
        assert history.records is not None
        records = _population(source, a, history.records, pops.slots)
        hit[shown] |= differenced(records.take(shown), history.record_prior,
                                  record_tolerance(history.ids, k))
    return hit


def _noised(frame: pd.DataFrame, spec: StatisticsSpec, policy: sdc.SDCPolicy,
            history: History) -> Audited:
    """A differentially private job: its guarantee covers differencing, so there is no
    population check; its cells still count against the permit's cap."""
    document = statdp.compute_dp(frame, spec, policy)
    count = history.released_before
    for i, (a, result) in enumerate(zip(spec.analyses, document["analyses"], strict=True)):
        values = _count_values(result)
        if count + values > policy.max_released_cells:
            fields = {k: v for k, v in a.model_dump(mode="json").items() if k != "kind"}
            document["analyses"][i] = statistics.withheld(a.kind, sdc.Rule.RELEASE_CAP,
                                                          policy, **fields)
            values = 0
        count += values
    return Audited(document, Sketches.empty(slots_for(policy.min_count)),
                   count - history.released_before)


def _recomputed(source: pd.DataFrame, a: Any, policy: sdc.SDCPolicy, hit: Any,
                shown: Any) -> tuple[dict[str, Any], Any]:
    """A table computed again with the audit's hits suppressed, and what it shows.

    Every cell the first computation hid is suppressed too, so the second can only hide
    more: secondary suppression around the hits may choose other complements, and a
    complement of the first computation shown now would leave never compared with what
    was released before. Should the engine still show a cell outside the audited ones,
    the analysis is withheld (fail closed)."""
    result = statistics.analysis(source, a, policy, hit | ~shown)
    again = _released_cells(result)
    if (again & ~(shown & ~hit)).any():
        fields = {k: v for k, v in a.model_dump(mode="json").items() if k != "kind"}
        return (statistics.withheld(a.kind, sdc.Rule.DIFFERENCING, policy, **fields),
                np.zeros(len(shown), dtype=bool))
    return result, again


def compute_audited(frame: pd.DataFrame, spec: StatisticsSpec, policy: sdc.SDCPolicy,
                    history: History) -> Audited:
    if spec.dp is not None:
        return _noised(frame, spec, policy, history)
    k = policy.min_count
    slots = slots_for(k)
    seen = history.prior
    by_holdings = history.persons
    if by_holdings and history.records is None:
        raise InvalidInput("history", "records", "an audit by persons needs each "
                                                 "record's identity")
    h_slots = holding_slots(k)
    seen_h = history.holdings if history.holdings is not None else Sketches.empty(h_slots)
    released_now: list[Sketches] = []
    holdings_now: list[Sketches] = []
    labels: list[LabelEntry] = []
    count = history.released_before
    results = []
    for a in spec.analyses:
        kind = a.kind
        # One recoded frame for the analysis and its populations: same cells, same order.
        source = statistics.tabulated(frame, a, policy)
        result = statistics.analysis(source, a, policy)
        pops = _population(source, a, history.ids, slots, history.persons)
        holdings = (_population(source, a, history.ids, h_slots, True, history.records)
                    if by_holdings else None)
        table = isinstance(a, FrequencyTable | MagnitudeTable)
        shown = _released_cells(result) if table else np.array(
            [_count_values(result) > 0], dtype=bool)
        hit = _near(source, a, pops, holdings, shown, seen, seen_h, k, history)
        # Other identity spaces, populations no identity compares, and labels.
        blind, records_n, read = _unmatched(source, a, pops, shown, k, history)
        hit |= blind
        if hit.any():
            if table:
                result, shown = _recomputed(source, a, policy, hit, shown)
            else:
                result = statistics.analysis(source, a, policy, True)
                shown = np.zeros(1, dtype=bool)
        values = _count_values(result)
        if count + values > policy.max_released_cells:
            fields = {k: v for k, v in a.model_dump(mode="json").items() if k != "kind"}
            result = statistics.withheld(kind, sdc.Rule.RELEASE_CAP, policy, **fields)
            values, shown = 0, np.zeros(len(pops), dtype=bool)
        count += values
        results.append(result)
        mine = shown & (pops.n > 0)
        released_now.append(pops.take(mine))
        at = np.flatnonzero(mine)
        labels += [(lab, int(pops.n[i]), int(records_n[i]),
                    None if read is None else read.to_bytes(int(i)))
                   for lab, i in zip(_cell_labels(source, a, history.label_key, at), at,
                                     strict=True) if lab is not None]
        # Later analyses of the job are compared with this one's populations too.
        seen = Sketches.concat([seen, pops.take(mine)], slots)
        if holdings is not None:
            holdings_now.append(holdings.take(mine))
            seen_h = Sketches.concat([seen_h, holdings.take(mine)], h_slots)
    document = {"version": 1, "engine": statistics.ENGINE, "analyses": results}
    return Audited(document, Sketches.concat(released_now, slots),
                   count - history.released_before,
                   Sketches.concat(holdings_now, h_slots) if by_holdings else None,
                   tuple(labels))
