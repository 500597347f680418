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
    sketch_cells,
    slots_for,
)
from compute.sdc.combinations import differenced
from containers import checks, jobdir, rederive
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
    if audit is not None and (job_dir / jobdir.ROW_IDS).exists() and frame is not None:
        _audit_script(task, job_dir, [name for name, _ in tables], done, policy, audit)
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
                  done: list[rederive.Rederived], policy: SDCPolicy, audit: AuditStore
                  ) -> None:
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
    with audit.session() as store:
        seen = store.populations(requester, keys, slots, unit)
        record_prior = (store.populations(requester, keys, slots, RECORDS)
                        if persons is not None else Sketches.empty(slots))
        seen_h = (store.populations(requester, keys, h_slots, HOLDINGS)
                  if persons is not None else Sketches.empty(h_slots))
        bare = (store.bare_persons(requester, keys, slots) if persons is not None
                else frozenset[str]())
        after_persons = persons is None and store.holds(requester, keys, PERSONS)
        before = count = store.released(task.permit_id, task.job_id)
        mine, mine_h = [], []
        for out in done:
            pops, holdings = Sketches.empty(slots), Sketches.empty(h_slots)
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
                pops, row_of = _populations(out, ids, slots, persons is not None)
                # Held outputs are checked too: the finding tells their reviewer.
                near = differenced(pops, seen, k)
                if persons is not None:
                    # The same persons over other records (compute.release_audit).
                    holdings, _ = _populations(out, persons, h_slots, True, records)
                    near |= differenced(holdings, seen_h, holding_limit(k))
                    near |= bare_hits(pops, np.ones(len(pops), dtype=bool), bare)
                if len(record_prior) and persons is not None:
                    # Record populations released before identifiers were declared:
                    # compared by records, failing closed (compute.release_audit).
                    near |= differenced(_populations(out, records, slots, False)[0],
                                        record_prior, record_tolerance(persons, k))
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
            seen = Sketches.concat([seen, pops], slots)
            seen_h = Sketches.concat([seen_h, holdings], h_slots)
        by_persons = persons is not None
        if task.script_release == ScriptRelease.AUTOMATIC and not any(
                o.findings for o in done):
            store.record(requester, dataset, task.permit_id, task.job_id,
                         Sketches.concat(mine, slots), count - before, unit,
                         Sketches.concat(mine_h, h_slots) if by_persons else None)
        elif done:
            store.hold(requester, dataset, task.permit_id, task.job_id,
                       [(name, pops, out.cells)
                        for name, pops, out in zip(names, mine, done, strict=True)], unit,
                       mine_h if by_persons else None)


def _scopes(out: rederive.Rederived) -> list[np.ndarray]:
    """The records an output's populations are of: those in its rows (its count), then
    for each statistic's column whose values some of them lack, those holding one."""
    inside = np.logical_or.reduce(out.groups)
    scopes = [inside]
    for held in out.valued:
        covered = inside & held
        if not any(np.array_equal(covered, s) for s in scopes):
            scopes.append(covered)
    return scopes


def _populations(out: rederive.Rederived, ids: np.ndarray, slots: int, distinct: bool,
                 records: np.ndarray | None = None) -> tuple[Sketches, np.ndarray]:
    """An output's populations (``distinct``: ``ids`` are persons, each counted once per
    population; with ``records`` too, the persons' holdings), per scope (:func:`_scopes`)
    its rows' then its totals', the empty ones left out; and each one's row (-1: a
    total)."""
    member = np.full(len(ids), -1, dtype=np.int64)
    for r, mask in enumerate(out.groups):
        member[mask] = r
    parts, rows = [], []
    for scope in _scopes(out):
        cells = [(np.where(scope, member, -1), len(out.groups), True)] + [
            (np.where(scope, cell, -1), int(cell.max()) + 1, False) for cell in out.margins]
        for cell, size, is_row in cells:
            sketches = _sketches(cell, ids, size, slots, distinct, records)
            parts.append(sketches)
            rows.append(np.arange(size) if is_row else np.full(size, -1))
    every = Sketches.concat(parts, slots)
    row_of = np.concatenate(rows).astype(np.int64)
    kept = every.n > 0
    return every.take(kept), row_of[kept]


def _sketches(cell: np.ndarray, ids: np.ndarray, size: int, slots: int,
              distinct: bool, records: np.ndarray | None = None) -> Sketches:
    """Sketches of ``size`` populations, record ``i`` in population ``cell[i]`` (-1: none)."""
    inside = cell >= 0
    if records is not None:
        return holding_sketches(cell[inside], ids[inside], records[inside], size, slots)
    return sketch_cells(cell[inside], ids[inside], size, slots, distinct)
