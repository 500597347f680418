"""Re-deriving a script's released tables from the permitted input, and auditing them.

A script's tables are recomputed by the platform (:mod:`containers.rederive`); with the
provider's audit store, the groups of verified tables are also checked against the
populations already released to the requester from the dataset (rule ``differencing``)
and against the permit's cap of released cells, then recorded as released or held for
review. Kept apart from the file-level output checks (:mod:`containers.runjob`): this is
the one step that reads the input again and writes the audit store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from authz.states import (
    OutputDecision,
    ScriptRelease,
)
from authz.wire import RunTask
from compute import statistics
from compute.release_audit import bare_hits, record_tolerance
from compute.sdc import SDCPolicy
from compute.sdc.audit import (
    Sketches,
    holding_limit,
    holding_sketches,
    holding_slots,
    near_duplicates,
    sketch_cells,
    slots_for,
)
from compute.sdc.combinations import differenced
from compute.sdc.identity import LabelEntry, blind_hits, record_identities, relabelled
from containers import audit_ids, checks, jobdir, rederive, script_labels
from containers.audit_store import (
    HOLDINGS,
    PERSONS,
    RECORDS,
    AuditStore,
    audit_keys,
    audit_persons,
    lineage,
)
from containers.runspec import ExecutorError


def script_findings(task: RunTask, job_dir: Path, verdicts: list[checks.Verdict],
                    audit: AuditStore | None = None) -> list[list[rederive.Finding]]:
    """Per output: what re-deriving it from the permitted input found (empty: verified).
    Files the checks withheld (images) are never released anyway: no findings."""
    return [d.findings if d is not None else []
            for d in script_rederived(task, job_dir, verdicts, audit)]


def script_rederived(task: RunTask, job_dir: Path, verdicts: list[checks.Verdict],
                     audit: AuditStore | None = None) -> list[rederive.Rederived | None]:
    """Per output: its re-derivation (None for files the checks withheld).

    With ``audit``, the groups of verified tables are also checked against the
    populations already released to the requester from this dataset (rule
    ``differencing``) and against the permit's cap; when every output verifies and the
    permit releases automatically, they are recorded as released."""
    frame = None
    if len(task.datasets) == 1:
        frame = pd.read_csv(job_dir / "in" / "data.csv", dtype=str, keep_default_na=False)
    types = {f.name: f.type for ds in task.datasets for f in ds.fields}
    policy = statistics.policy_for(task.min_cell_count, task.disclosure)
    tables = [(v.name, v.content) for v in verdicts
              if v.decision == OutputDecision.RELEASED and v.content is not None]
    try:
        units = _units(task, job_dir)
    except ValueError:
        # Prepared without the persons' numbers (an older agent), or numbers that are not
        # the input's: never counted by records, a person decides.
        done = [rederive.Rederived([rederive.Finding(
            "unverifiable", "the job was prepared without its contributors: persons "
                            "cannot be counted")], [], 0) for _ in tables]
    else:
        done = rederive.rederive_outputs(tables, frame, types, policy, units)
    if audit is not None and frame is not None:
        if (job_dir / jobdir.ROW_IDS).exists():
            _audit_script(task, job_dir, [name for name, _ in tables], done, policy,
                          audit, frame)
        else:
            # Prepared without the records' identities (an older agent): never released
            # unaudited, as on the statistics route (R10-6); a person decides.
            for out in done:
                out.findings.append(rederive.Finding(
                    "differencing", "the job was prepared without row identities: its "
                    "populations cannot be compared with earlier releases"))
    found = iter(done)
    return [next(found) if v.decision == OutputDecision.RELEASED
            and v.content is not None else None for v in verdicts]


def _units(task: RunTask, job_dir: Path) -> np.ndarray | None:
    """Each projected record's person where the one dataset declares identifier fields
    (``unitids.npy``, written by :func:`containers.jobdir.prepare`); None: records are
    the contributors. ValueError: declared, but the numbers are missing or do not match."""
    if len(task.datasets) != 1 or not task.datasets[0].identifiers:
        return None
    if not (job_dir / jobdir.UNIT_IDS).exists():
        raise ValueError("no contributors")
    units: np.ndarray = np.load(job_dir / jobdir.UNIT_IDS)
    if len(units) != json.loads((job_dir / "input.json").read_text())["rows"]:
        raise ValueError("contributors do not match the input")
    return units


def _audit_script(task: RunTask, job_dir: Path, names: list[str],
                  done: list[rederive.Rederived], policy: SDCPolicy, audit: AuditStore,
                  frame: pd.DataFrame) -> None:
    """Check the rows of every re-derived table against the populations released (or
    held) before; record them as released when the run is released automatically, else
    as held for review (released only if a person approves: containers.review_audit)."""
    records = np.load(job_dir / jobdir.ROW_IDS)
    k = policy.min_count
    slots, h_slots = slots_for(k), holding_slots(k)
    requester = task.requester_id or f"permit:{task.permit_id}"
    ds = task.datasets[0]
    dataset = lineage(ds)
    keys = audit_keys(ds)
    try:
        persons = audit_persons(task, job_dir, len(records))
    except ExecutorError:
        persons = None  # prepared without them: every output already has a finding
    ids = records if persons is None else persons
    unit = RECORDS if persons is None else PERSONS
    job_ids = audit_ids.load(job_dir, records, persons)
    space = job_ids.space
    with audit.session() as store:
        seen = store.populations(requester, keys, slots, unit, space)
        record_prior = (store.populations(requester, keys, slots, RECORDS, space)
                        if persons is not None else Sketches.empty(slots))
        seen_h = (store.populations(requester, keys, h_slots, HOLDINGS, space)
                  if persons is not None else Sketches.empty(h_slots))
        bare = (store.bare_persons(requester, keys, slots, space) if persons is not None
                else frozenset[str]())
        more = audit_ids.context(store, requester, ds, slots, k, job_ids)
        after_persons = persons is None and store.holds(requester, keys, PERSONS)
        before = count = store.released(task.permit_id, task.job_id)
        mine, mine_h = [], []
        mine_labels: list[list[LabelEntry]] = []
        for out in done:
            pops, holdings = Sketches.empty(slots), Sketches.empty(h_slots)
            out_labels: list[LabelEntry] = []
            if out.groups and after_persons:
                out.findings.append(rederive.Finding(
                    "differencing", "earlier releases from this dataset were counted in "
                    "persons; it no longer declares its identifier fields"))
            if out.groups:
                # The rows, then what adding rows up gives: the union of the rows of the
                # table and of each of its lines, a population the requester holds too
                # (a later total, the statistics route's or a script's, is compared with
                # it: a total less a table's rows is what the table left out). Each once
                # as the records with the keys (the count), and once per statistic's
                # column as those holding a value (what its sums cover).
                pops, row_of, labels = _populations(out, ids, slots, persons is not None,
                                                    frame=frame, key=more["label_key"])
                # Held outputs are checked too: the finding tells their reviewer.
                near = differenced(pops, seen, k)
                if persons is not None:
                    # The same persons over other records (compute.release_audit).
                    holdings = _populations(out, persons, h_slots, True, records)[0]
                    near |= differenced(holdings, seen_h, holding_limit(k))
                    near |= bare_hits(pops, np.ones(len(pops), dtype=bool), bare)
                if len(record_prior) and persons is not None:
                    # Record populations released before identifiers were declared:
                    # compared by records, failing closed (compute.release_audit).
                    near |= differenced(_populations(out, records, slots, False)[0],
                                        record_prior, record_tolerance(persons, k))
                # Other identity spaces, populations no identity compares, labels.
                hits, read = _unmatched(out, pops, labels, records, persons, slots, k,
                                        more, frame)
                near |= hits
                records_n = (pops.n if persons is None
                             else _populations(out, records, slots, False)[0].n)
                out_labels = [(lab, int(pops.n[i]), int(records_n[i]),
                               None if col is None else read[col].to_bytes(i))
                              for i, labs in enumerate(labels) for lab, col in labs]
                for r in np.unique(row_of[near & (row_of >= 0)]):
                    out.findings.append(rederive.Finding(
                        "differencing", "the records of this row differ from a population "
                        f"already released by fewer than {k}", row=int(r) + 1))
                if (near & (row_of < 0)).any():
                    out.findings.append(rederive.Finding(
                        "differencing", "the records of a total of this table's rows "
                        f"differ from a population already released by fewer than {k}"))
            count += out.cells
            if count > policy.max_released_cells:
                out.findings.append(rederive.Finding(
                    "release_cap", f"the permit's cap of {policy.max_released_cells} "
                    "released cells would be exceeded"))
            mine.append(pops)
            mine_h.append(holdings)
            mine_labels.append(out_labels)
            seen = Sketches.concat([seen, pops], slots)
            seen_h = Sketches.concat([seen_h, holdings], h_slots)
        by_persons = persons is not None
        if task.script_release == ScriptRelease.AUTOMATIC and not any(
                o.findings for o in done):
            store.record(requester, dataset, task.permit_id, task.job_id,
                         Sketches.concat(mine, slots), count - before, unit,
                         Sketches.concat(mine_h, h_slots) if by_persons else None, space,
                         [lab for labs in mine_labels for lab in labs])
        elif done:
            store.hold(requester, dataset, task.permit_id, task.job_id,
                       [(name, pops, out.cells)
                        for name, pops, out in zip(names, mine, done, strict=True)], unit,
                       mine_h if by_persons else None, space, mine_labels)
        store.edition(requester, dataset, task.job_id, audit_ids.signatures(job_ids))


def _unmatched(out: rederive.Rederived, pops: Sketches,
               labels: list[list[script_labels.Labelled]], records: np.ndarray,
               persons: np.ndarray | None, slots: int, k: int, more: dict[str, Any],
               frame: pd.DataFrame) -> tuple[np.ndarray, dict[str, Sketches]]:
    """Per population of ``out``: near one of another identity space, 1 to k-1 in count
    from one no identity compares, or from one of the same label released from an
    edition that overlaps little with this one, or near one of the same label over the
    columns it reads (compute.release_audit, the same checks of a statistics job); and
    per statistic column, the populations over the keys and that column (to record)."""
    h_slots = holding_slots(k)
    near = np.zeros(len(pops), dtype=bool)
    every = np.ones(len(pops), dtype=bool)
    for other in more["others"]:
        o_pops = _populations(out, other.ids, slots, other.persons)[0]
        near |= differenced(o_pops, other.prior, k)
        if other.persons:
            o_hold = _populations(out, other.ids, h_slots, True, other.records)[0]
            near |= differenced(o_hold, other.holdings, holding_limit(k))
            near |= bare_hits(o_pops, every, other.bare)
            if len(other.record_prior):
                near |= differenced(_populations(out, other.records, slots, False)[0],
                                    other.record_prior, record_tolerance(other.ids, k))
    records_n = pops.n if persons is None else _populations(out, records, slots, False)[0].n
    near |= blind_hits(pops.n, more["blind_persons" if persons is not None
                                    else "blind_records"], k)
    if persons is not None:
        near |= blind_hits(records_n, more["blind_records"], k)
    at = np.array([i for i, labs in enumerate(labels) for _ in labs], dtype=np.int64)
    flat = [lab for labs in labels for lab in labs]
    if more["label_prior"] and len(at):
        hit = relabelled([lab for lab, _ in flat], pops.n[at], records_n[at],
                         more["label_prior"], k)
        np.logical_or.at(near, at[hit], True)
    # A statistic's populations over the records' keys and its column alone (typed):
    # corrections to columns it does not read leave them the same records.
    read: dict[str, Sketches] = {}
    for column in dict.fromkeys(c for _, c in flat if c is not None):
        fields = [(c, more["types"].get(c, "string")) for c in [*out.keys, column]]
        ids = record_identities(frame, fields, more["label_key"])
        read[column] = _populations(out, ids, slots, False)[0]
    for i, (label, of) in zip(at, flat, strict=True):
        earlier = more["label_sketches"].get(label)
        if of is not None and earlier is not None and near_duplicates(
                read[of].take(np.array([i])), earlier, k)[0]:
            near[i] = True
    return near, read


def _populations(out: rederive.Rederived, ids: np.ndarray, slots: int, distinct: bool,
                 records: np.ndarray | None = None, frame: pd.DataFrame | None = None,
                 key: str | None = None
                 ) -> tuple[Sketches, np.ndarray, list[list[script_labels.Labelled]]]:
    """An output's populations (``distinct``: ``ids`` are persons, each counted once per
    population; with ``records`` too, the persons' holdings), per scope
    (:func:`containers.script_labels.scopes`) its rows' then its totals', the empty ones
    left out; each one's row (-1: a total); with ``frame`` and ``key``, each one's
    labels (:func:`containers.script_labels.labels`)."""
    member = np.full(len(ids), -1, dtype=np.int64)
    for r, mask in enumerate(out.groups):
        member[mask] = r
    parts, rows, labels = [], [], []
    for at, (scope, columns) in enumerate(script_labels.scopes(out)):
        cells = [(np.where(scope, member, -1), len(out.groups), True)] + [
            (np.where(scope, cell, -1), int(cell.max()) + 1, False) for cell in out.margins]
        for cell, size, is_row in cells:
            sketches = _sketches(cell, ids, size, slots, distinct, records)
            parts.append(sketches)
            rows.append(np.arange(size) if is_row else np.full(size, -1))
            if frame is not None and key is not None:
                labels += script_labels.labels(out, frame, key, scope, columns, at == 0,
                                               cell, size)
            else:
                labels += [[] for _ in range(size)]
    every = Sketches.concat(parts, slots)
    row_of = np.concatenate(rows).astype(np.int64)
    kept = every.n > 0
    return every.take(kept), row_of[kept], [lab for lab, k in zip(labels, kept,
                                                                 strict=True) if k]


def _sketches(cell: np.ndarray, ids: np.ndarray, size: int, slots: int,
              distinct: bool, records: np.ndarray | None = None) -> Sketches:
    """Sketches of ``size`` populations, record ``i`` in population ``cell[i]`` (-1: none)."""
    inside = cell >= 0
    if records is not None:
        return holding_sketches(cell[inside], ids[inside], records[inside], size, slots)
    return sketch_cells(cell[inside], ids[inside], size, slots, distinct)
