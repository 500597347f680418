"""A job's identities for the differencing audit, in every identity space it needs.

:func:`write` (at :func:`containers.jobdir.prepare`, in the provider's domain) hashes the
job's records under the audit store's key: in the job's own space (its permitted fields,
typed: :func:`compute.sdc.identity.record_identities`) and in every other space the
requester was released populations of this lineage in (another permit's fields; the
identities kept before typed ones, :data:`~compute.sdc.identity.LEGACY`), each with the
records' persons where the dataset declares identifier fields. A space whose columns the
edition no longer has is *unmatched*: its populations are compared by count alone (fail
closed). :func:`load` reads them back for the audit, :func:`context` gathers what the
store holds for each space, and :func:`signatures` says which edition the job read (for
the label check of editions that overlap little: :mod:`compute.sdc.identity`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from authz.wire import DatasetTask, RunTask
from compute.errors import InvalidInput
from compute.release_audit import History
from compute.sdc.audit import U64, Sketches, holding_slots, row_identities
from compute.sdc.identity import (
    LEGACY,
    LOW_OVERLAP,
    Field,
    LabelEntry,
    overlap,
    record_identities,
    signature,
    space_of,
)
from compute.sdc.units import person_identities
from containers import datasets
from containers.audit_store import (
    HOLDINGS,
    PERSON_IDS,
    PERSONS,
    RECORDS,
    AuditSession,
    AuditStore,
    audit_keys,
)
from containers.runspec import ExecutorError

ROW_IDS = "rowids.npy"
MANIFEST = "auditids.json"
I64 = np.ndarray[Any, np.dtype[np.int64]]


def fields_of(ds: DatasetTask) -> tuple[Field, ...]:
    """The job's identity space: its permitted fields with their declared types."""
    return tuple((f.name, f.type) for f in ds.fields)


def requester_of(task: RunTask) -> str:
    return task.requester_id or f"permit:{task.permit_id}"


def write(task: RunTask, ds: DatasetTask, src: Path, job_dir: Path, audit: AuditStore
          ) -> None:
    """Write the job's identities (own space: ``rowids.npy``, ``personids.npy``; others
    numbered) and the manifest naming their spaces."""
    own_fields = fields_of(ds)
    own = space_of(own_fields)
    with audit.session() as store:
        key = store.row_key()
        store.define_space(own, own_fields)
        spaces = store.spaces(requester_of(task), audit_keys(ds))
    frame = datasets.read_source(src, ds.format)
    missing = [c for c in ds.identifiers if c not in frame.columns]
    if missing:
        raise InvalidInput("identifiers", "declared identifier field(s) missing from the "
                                          "file")

    def persons(rows: U64) -> U64 | None:
        if not ds.identifiers:
            return None
        return person_identities(frame[list(ds.identifiers)], key, rows)

    rows = record_identities(frame, own_fields, key)
    np.save(job_dir / ROW_IDS, rows)
    own_persons = persons(rows)
    if own_persons is not None:
        np.save(job_dir / PERSON_IDS, own_persons)
    others: dict[str, int] = {}
    unmatched: list[str] = []
    for space, fields in sorted(spaces.items()):
        if space == own:
            continue
        if space == LEGACY:
            ids = row_identities(frame, key)
        elif fields is None or any(n not in frame.columns for n, _ in fields):
            unmatched.append(space)
            continue
        else:
            ids = record_identities(frame, fields, key)
        at = others[space] = len(others)
        np.save(job_dir / f"rowids-{at}.npy", ids)
        extra = persons(ids)
        if extra is not None:
            np.save(job_dir / f"personids-{at}.npy", extra)
    (job_dir / MANIFEST).write_text(json.dumps(
        {"space": own, "others": others, "unmatched": unmatched}))


@dataclass(frozen=True, eq=False)
class Identities:
    """A job's records (and persons) in its own space and in the others."""

    space: str
    records: U64
    persons: U64 | None
    others: dict[str, tuple[U64, U64 | None]] = field(default_factory=dict)
    unmatched: tuple[str, ...] = ()

    def of(self, space: str) -> tuple[U64, U64 | None] | None:
        if space == self.space:
            return self.records, self.persons
        return self.others.get(space)


def load(job_dir: Path, records: U64, persons: U64 | None) -> Identities:
    """The job's identities (``records``/``persons``: its own, already loaded and
    checked). A job prepared before spaces (no manifest) has legacy identities."""
    path = job_dir / MANIFEST
    if not path.exists():
        return Identities(LEGACY, records, persons)
    manifest = json.loads(path.read_text())
    others: dict[str, tuple[U64, U64 | None]] = {}
    for space, at in manifest["others"].items():
        ids = np.load(job_dir / f"rowids-{at}.npy")
        extra = job_dir / f"personids-{at}.npy"
        if persons is not None and not extra.exists():
            raise ExecutorError("the job was prepared without its persons for the audit")
        who = np.load(extra) if persons is not None else None
        if len(ids) != len(records) or (who is not None and len(who) != len(records)):
            raise ExecutorError("the audit's identities do not match the projected input")
        others[str(space)] = (ids, who)
    return Identities(str(manifest["space"]), records, persons, others,
                      tuple(str(s) for s in manifest["unmatched"]))


def _space_history(store: AuditSession, requester: str, keys: tuple[str, ...],
                   slots: int, k: int, space: str, records: U64, persons: U64 | None
                   ) -> History:
    h_slots = holding_slots(k)
    if persons is None:
        return History(records, store.populations(requester, keys, slots, RECORDS, space),
                       0)
    return History(persons, store.populations(requester, keys, slots, PERSONS, space), 0,
                   persons=True, records=records,
                   record_prior=store.populations(requester, keys, slots, RECORDS, space),
                   holdings=store.populations(requester, keys, h_slots, HOLDINGS, space),
                   bare=store.bare_persons(requester, keys, slots, space))


def context(store: AuditSession, requester: str, ds: DatasetTask, slots: int, k: int,
            ids: Identities) -> dict[str, Any]:
    """What a :class:`~compute.release_audit.History` needs beyond the job's own space:
    ``others``, ``blind_records``, ``blind_persons``, ``label_key``, ``label_prior``."""
    keys = audit_keys(ds)
    others = tuple(_space_history(store, requester, keys, slots, k, space, r, p)
                   for space, (r, p) in sorted(ids.others.items()))
    blind_r: list[I64] = []
    blind_p: list[I64] = []
    # Kept before typed identities: compared by those identities (in ``others``) and,
    # since a change to every row that no cell reads breaks them, by count too. A space
    # first recorded after this job was prepared (another job, meanwhile) has no
    # identities here: by count as well, never compared with nothing.
    late = [s for s in store.spaces(requester, keys)
            if s != ids.space and s not in ids.others and s not in ids.unmatched]
    for space in [*ids.unmatched, *late, *([LEGACY] if LEGACY in ids.others else [])]:
        blind_r.append(store.populations(requester, keys, slots, RECORDS, space).n)
        blind_p.append(store.populations(requester, keys, slots, PERSONS, space).n)
    entries = store.label_history(requester, keys)
    read: dict[str, list[tuple[int, bytes]]] = {}
    for (label, _, records, sketch), _job in entries:
        if sketch is not None:
            read.setdefault(label, []).append((records, sketch))
    return {"others": others,
            "blind_records": np.concatenate([np.zeros(0, np.int64), *blind_r]),
            "blind_persons": np.concatenate([np.zeros(0, np.int64), *blind_p]),
            "label_key": store.row_key(),
            "label_prior": label_prior(store, entries, ids),
            "label_sketches": {label: Sketches.from_rows(rows, slots)
                               for label, rows in read.items()},
            "types": {f.name: f.type for f in ds.fields}}


def label_prior(store: AuditSession, entries: list[tuple[LabelEntry, str]],
                ids: Identities) -> dict[str, list[tuple[int, int]]]:
    """Labels released from editions whose identities overlap the job's by less than
    :data:`~compute.sdc.identity.LOW_OVERLAP` (or cannot be compared with them: fail
    closed), with their (units, records)."""
    editions = store.editions({job for _, job in entries})
    low: dict[str, bool] = {}
    prior: dict[str, list[tuple[int, int]]] = {}
    mine: dict[tuple[str, str], tuple[U64, int] | None] = {}  # the job's, once per unit
    for (label, units, records, _), job in entries:
        if job not in low:
            low[job] = _overlap(editions.get(job, []), ids, mine) < LOW_OVERLAP
        if low[job]:
            prior.setdefault(label, []).append((units, records))
    return prior


def _overlap(prior: list[tuple[str, str, int, U64]], ids: Identities,
             mine: dict[tuple[str, str], tuple[U64, int] | None]) -> float:
    """The least overlap, over the units both editions were signed in, of an earlier
    edition with the job's (0 when none can be compared). ``mine`` keeps the job's own
    signatures between calls: one per unit, however many editions came before."""
    found = []
    for space, unit, n, sample in prior:
        if (space, unit) not in mine:
            mine[space, unit] = _signed(ids, space, unit)
        if (signed := mine[space, unit]) is not None:
            found.append(overlap(signed[0], signed[1], sample, n))
    return min(found) if found else 0.0


def _signed(ids: Identities, space: str, unit: str) -> tuple[U64, int] | None:
    """The job's signature and distinct count of ``unit`` in ``space`` (None: not there)."""
    both = ids.of(space)
    current = None if both is None else both[0] if unit == RECORDS else both[1]
    return None if current is None else (signature(current), len(np.unique(current)))


def signatures(ids: Identities) -> list[tuple[str, str, int, U64]]:
    """The edition the job read, as the store keeps it (:meth:`AuditSession.edition`)."""
    out = [(ids.space, RECORDS, len(np.unique(ids.records)), signature(ids.records))]
    if ids.persons is not None:
        out.append((ids.space, PERSONS, len(np.unique(ids.persons)),
                    signature(ids.persons)))
    return out
