"""The provider's release audit store: populations already released, in the provider's domain.

One SQLite file per provider domain (every agent serving the provider's data must be
given the same file). It holds the keyed-hash key for row identities (generated on first
use, never sent anywhere), one population sketch per released cell, keyed by requester
and dataset lineage (:func:`lineage`: every version of a dataset under one key), and the
count of cell values each permit has released. A statistics job
holds the store's write lock from reading the earlier populations to recording its own,
so two jobs of one requester never both pass the check against a store that lacks the
other's cells.

Script outputs held for a person's review are recorded as *held* (``held_populations``,
``held_cells``): until their review settles they count as released for every later check
(a cell near a held population is suppressed, held cells count against the cap), so an
approval can never release a population that a run released meanwhile differences. When
the review settles, :meth:`AuditSession.settle` promotes the approved outputs to released
and discards the rest (:mod:`containers.review_audit` asks the controller).

Every population is stored with its unit (``unit``): ``record`` (identities of records,
all that was kept before persons were known) or ``person`` (identities of persons, where
the dataset declares identifier fields: a person's records count once). The two kinds
are different identity spaces and are never subtracted from each other; a lineage's
populations switch from records to persons when identifiers are declared, and the
records a job counts by persons are still compared with the lineage's record
populations, with a tolerance that fails closed (:mod:`compute.release_audit`). Beside
every person population a job also keeps its ``holding`` population (each person with
the set of its records the cell holds: :func:`compute.sdc.audit.holding_sketches`), so
that the same persons over other records (one more episode of a patient already in the
data) are a difference too.

Every population is also stored with its identity ``space`` (the permitted fields its
records' identities hash, :mod:`compute.sdc.identity`; ``legacy``: every column as text,
all a store made earlier holds), so that each is compared in its own space
(:mod:`containers.audit_ids`). Beside them: the fields of each space (``spaces``), the
signature of the edition each job read (``editions``) and the label of each released or
held cell with its counts (``labels``), for the count check between editions whose
identities overlap little.

Why here and not at the controller: a sketch is a function of which records a cell
holds. Kept beside the data, the controller learns neither identities nor overlaps, and
nothing about populations crosses the boundary; the price is that the agents of one
provider share this file (docs/disclosure-control.md, "Differencing audit").
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import string
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from authz.wire import DatasetTask, RunTask
from compute.sdc.audit import KEY_CHARS, U64, Sketches
from compute.sdc.identity import LEGACY, Field, LabelEntry
from containers.runspec import ExecutorError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS populations (
    requester TEXT NOT NULL, dataset TEXT NOT NULL, slots INTEGER NOT NULL,
    digest TEXT NOT NULL, records INTEGER NOT NULL, sketch BLOB NOT NULL,
    job TEXT NOT NULL, PRIMARY KEY (requester, dataset, slots, digest));
CREATE TABLE IF NOT EXISTS released (
    permit TEXT NOT NULL, job TEXT NOT NULL, cells INTEGER NOT NULL,
    PRIMARY KEY (permit, job));
CREATE TABLE IF NOT EXISTS held_populations (
    requester TEXT NOT NULL, dataset TEXT NOT NULL, slots INTEGER NOT NULL,
    digest TEXT NOT NULL, records INTEGER NOT NULL, sketch BLOB NOT NULL,
    job TEXT NOT NULL, output TEXT NOT NULL,
    PRIMARY KEY (job, output, slots, digest));
CREATE TABLE IF NOT EXISTS held_cells (
    permit TEXT NOT NULL, job TEXT NOT NULL, output TEXT NOT NULL, cells INTEGER NOT NULL,
    PRIMARY KEY (job, output));
CREATE TABLE IF NOT EXISTS spaces (space TEXT PRIMARY KEY, fields TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS editions (
    requester TEXT NOT NULL, dataset TEXT NOT NULL, job TEXT NOT NULL, space TEXT NOT NULL,
    unit TEXT NOT NULL, records INTEGER NOT NULL, signature BLOB NOT NULL,
    PRIMARY KEY (job, space, unit));
CREATE TABLE IF NOT EXISTS labels (
    requester TEXT NOT NULL, dataset TEXT NOT NULL, job TEXT NOT NULL, output TEXT NOT NULL,
    label TEXT NOT NULL, units INTEGER NOT NULL, records INTEGER NOT NULL,
    held INTEGER NOT NULL, sketch BLOB, PRIMARY KEY (job, output, label, units, records));
"""
_KEY_ALPHABET = string.ascii_letters + string.digits + "+/"  # 6 bits a character
#: Units of a stored population (see the module's docstring).
RECORDS = "record"
PERSONS = "person"
HOLDINGS = "holding"
_UNITS = (RECORDS, PERSONS, HOLDINGS)
# A job's persons as the audit names them (containers.jobdir writes it; kept here, beside
# the key it is hashed under, so that the job directory's layout module can import it).
PERSON_IDS = "personids.npy"


def _add_units(db: sqlite3.Connection) -> None:
    """Give a store made before persons were known its ``unit`` column (everything it
    holds was a population of records, and stays readable as one), and a store made
    before typed identities its ``space`` column (everything it holds was hashed from
    every column as text: :data:`~compute.sdc.identity.LEGACY`)."""
    for table in ("populations", "held_populations"):
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if "unit" not in columns:
            db.execute(f"ALTER TABLE {table} ADD COLUMN unit TEXT NOT NULL "
                       f"DEFAULT '{RECORDS}'")
        if "space" not in columns:
            db.execute(f"ALTER TABLE {table} ADD COLUMN space TEXT NOT NULL "
                       f"DEFAULT '{LEGACY}'")


class AuditStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)
            _add_units(db)

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are begun explicitly (BEGIN IMMEDIATE).
        db = sqlite3.connect(self.path, timeout=600, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    @contextmanager
    def session(self) -> Iterator[AuditSession]:
        """The store, write-locked until the block ends (committed unless it raised)."""
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            yield AuditSession(db)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.close()


def lineage(ds: DatasetTask) -> str:
    """The key a dataset's released populations are kept under: its provider and code.

    Every version of a dataset (same code, a new id: next month's edition) shares it, so
    a cell of version 2 that differs from one of version 1 by a new record is caught like
    one of the same version. Row identities are keyed hashes of the records' content, so
    the records both versions hold are the same identities."""
    return f"{ds.provider_id}/{ds.code}"


def audit_keys(ds: DatasetTask) -> tuple[str, str]:
    """The keys to read earlier populations under: the lineage, and the dataset's id,
    under which they were kept before lineages (nothing released then is forgotten)."""
    return lineage(ds), ds.id


def audit_persons(task: RunTask, job_dir: Path, rows: int) -> U64 | None:
    """The audit's persons of a job's records (``personids.npy``, written by
    :func:`containers.jobdir.prepare` under the store's key) where its one dataset
    declares identifier fields; None where none is declared (records are the unit).
    Declared but missing or not the input's: fail closed, never audit by records."""
    if len(task.datasets) != 1 or not task.datasets[0].identifiers:
        return None
    path = job_dir / PERSON_IDS
    if not path.exists():
        raise ExecutorError("the job was prepared without its persons for the audit")
    persons: U64 = np.load(path)
    if len(persons) != rows:
        raise ExecutorError("the audit's persons do not match the projected input")
    return persons


def refuse_records_after_persons(store: AuditSession, requester: str,
                                 keys: tuple[str, ...]) -> None:
    """A job auditing records where persons were audited before (the dataset declared
    identifier fields then, no longer): its records cannot be compared with those person
    populations, so it fails closed rather than pass them unchecked."""
    if store.holds(requester, keys, PERSONS):
        raise ExecutorError("earlier releases from this dataset were counted in persons; "
                            "it no longer declares its identifier fields")


class AuditSession:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def row_key(self) -> str:
        """The provider's key for row identities (96 bits), made on first use."""
        row = self.db.execute("SELECT value FROM meta WHERE name = 'row_key'").fetchone()
        if row is not None:
            return str(row[0])
        key = "".join(secrets.choice(_KEY_ALPHABET) for _ in range(KEY_CHARS))
        self.db.execute("INSERT INTO meta VALUES ('row_key', ?)", (key,))
        return key

    def populations(self, requester: str, datasets: tuple[str, ...], slots: int,
                    unit: str = RECORDS, space: str = LEGACY) -> Sketches:
        """Populations of ``unit`` released, and held for review (they may yet be
        released), under any of the keys ``datasets`` (:func:`audit_keys`), whose
        identities are of ``space``."""
        assert unit in _UNITS
        rows = []
        for dataset in dict.fromkeys(datasets):
            rows += self.db.execute(
                "SELECT records, sketch FROM populations WHERE requester = ? AND "
                "dataset = ? AND slots = ? AND unit = ? AND space = ? UNION ALL SELECT "
                "records, sketch FROM held_populations WHERE requester = ? AND "
                "dataset = ? AND slots = ? AND unit = ? AND space = ?",
                (requester, dataset, slots, unit, space) * 2).fetchall()
        return Sketches.from_rows([(int(n), bytes(b)) for n, b in rows], slots)

    def spaces(self, requester: str, datasets: tuple[str, ...]
               ) -> dict[str, tuple[Field, ...] | None]:
        """The identity spaces of the populations released or held under the keys
        ``datasets``, each with its fields (None: :data:`LEGACY`, or fields unknown)."""
        found: dict[str, tuple[Field, ...] | None] = {}
        for dataset in dict.fromkeys(datasets):
            rows = self.db.execute(
                "SELECT DISTINCT p.space, s.fields FROM (SELECT space FROM populations "
                "WHERE requester = ? AND dataset = ? UNION SELECT space FROM "
                "held_populations WHERE requester = ? AND dataset = ?) AS p LEFT JOIN "
                "spaces AS s ON s.space = p.space", (requester, dataset) * 2).fetchall()
            for space, fields in rows:
                found[str(space)] = (None if fields is None else
                                     tuple((str(n), str(t)) for n, t in json.loads(fields)))
        return found

    def define_space(self, space: str, fields: Sequence[Field]) -> None:
        """Keep which fields (names and declared types, no value) ``space`` hashes."""
        self.db.execute("INSERT OR IGNORE INTO spaces VALUES (?, ?)",
                        (space, json.dumps(sorted([list(f) for f in fields]))))

    def label_history(self, requester: str, datasets: tuple[str, ...]
                      ) -> list[tuple[LabelEntry, str]]:
        """Labels of cells released or held under the keys ``datasets``, each with the
        job that released or holds it."""
        rows: list[tuple[LabelEntry, str]] = []
        for dataset in dict.fromkeys(datasets):
            rows += [((str(a), int(u), int(r), None if b is None else bytes(b)), str(j))
                     for a, u, r, b, j in self.db.execute(
                         "SELECT label, units, records, sketch, job FROM labels WHERE "
                         "requester = ? AND dataset = ?", (requester, dataset)).fetchall()]
        return rows

    def editions(self, jobs: Collection[str]) -> dict[str, list[tuple[str, str, int, U64]]]:
        """Per job, the signatures of the edition it read: (space, unit, records, sample)."""
        out: dict[str, list[tuple[str, str, int, U64]]] = {}
        for job in sorted(set(jobs)):
            for space, unit, n, blob in self.db.execute(
                    "SELECT space, unit, records, signature FROM editions WHERE job = ?",
                    (job,)).fetchall():
                out.setdefault(job, []).append(
                    (str(space), str(unit), int(n),
                     np.frombuffer(bytes(blob), dtype="<u8").astype(np.uint64)))
        return out

    def edition(self, requester: str, dataset: str, job: str,
                signatures: Sequence[tuple[str, str, int, U64]]) -> None:
        """Keep the signatures of the edition ``job`` read (a repeated run replaces them)."""
        self.db.execute("DELETE FROM editions WHERE job = ?", (job,))
        for space, unit, n, sample in signatures:
            self.db.execute("INSERT OR REPLACE INTO editions VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (requester, dataset, job, space, unit, int(n),
                             np.asarray(sample, dtype="<u8").tobytes()))

    def _labels(self, requester: str, dataset: str, job: str, output: str,
                labels: Sequence[LabelEntry], held: bool) -> None:
        for label, units, records, sketch in labels:
            self.db.execute("INSERT OR IGNORE INTO labels VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (requester, dataset, job, output, label, int(units),
                             int(records), int(held), sketch))

    def holds(self, requester: str, datasets: tuple[str, ...], unit: str) -> bool:
        """Does anything of ``unit`` stand released or held under the keys ``datasets``?"""
        assert unit in _UNITS
        return any(self.db.execute(
            "SELECT 1 FROM populations WHERE requester = ? AND dataset = ? AND unit = ? "
            "UNION ALL SELECT 1 FROM held_populations WHERE requester = ? AND dataset = ? "
            "AND unit = ? LIMIT 1", (requester, dataset, unit) * 2).fetchone() is not None
            for dataset in dict.fromkeys(datasets))

    def bare_persons(self, requester: str, datasets: tuple[str, ...], slots: int,
                     space: str = LEGACY) -> frozenset[str]:
        """Digests of person populations released or held under the keys ``datasets``
        by a job that kept no holdings (recorded before holdings were): a cell over
        exactly their persons cannot have its records compared."""
        digests: set[str] = set()
        for dataset in dict.fromkeys(datasets):
            rows = self.db.execute(
                "SELECT digest FROM populations AS p WHERE requester = ? AND dataset = ? "
                "AND slots = ? AND unit = ? AND space = ? AND NOT EXISTS (SELECT 1 FROM "
                "populations WHERE job = p.job AND unit = ? UNION ALL SELECT 1 FROM "
                "held_populations WHERE job = p.job AND unit = ?) UNION ALL SELECT digest "
                "FROM held_populations AS p WHERE requester = ? AND dataset = ? AND "
                "slots = ? AND unit = ? AND space = ? AND NOT EXISTS (SELECT 1 FROM "
                "populations WHERE job = p.job AND unit = ? UNION ALL SELECT 1 FROM "
                "held_populations WHERE job = p.job AND unit = ?)",
                (requester, dataset, slots, PERSONS, space, HOLDINGS, HOLDINGS) * 2)
            digests |= {str(d) for (d,) in rows.fetchall()}
        return frozenset(digests)

    def released(self, permit: str, job: str) -> int:
        """Cell values the permit released or holds for review, not counting ``job`` (a
        job run again after an agent restart is not counted twice)."""
        row = self.db.execute(
            "SELECT (SELECT COALESCE(SUM(cells), 0) FROM released WHERE permit = ? AND "
            "job != ?) + (SELECT COALESCE(SUM(cells), 0) FROM held_cells WHERE permit = ? "
            "AND job != ?)", (permit, job) * 2).fetchone()
        return int(row[0])

    def record(self, requester: str, dataset: str, permit: str, job: str,
               released: Sketches, cells: int, unit: str = RECORDS,
               holdings: Sketches | None = None, space: str = LEGACY,
               labels: Sequence[LabelEntry] = ()) -> None:
        """Add a job's released populations of ``unit`` with identities of ``space`` (an
        identical one is kept once), with persons their ``holdings``, and the labels of
        its released cells (label, units, records)."""
        assert unit in _UNITS
        if holdings is not None:
            self._add(requester, dataset, job, holdings, HOLDINGS, space)
        self._add(requester, dataset, job, released, unit, space)
        self._labels(requester, dataset, job, "", labels, False)
        self.db.execute("INSERT OR REPLACE INTO released VALUES (?, ?, ?)",
                        (permit, job, cells))

    def _add(self, requester: str, dataset: str, job: str, released: Sketches,
             unit: str, space: str) -> None:
        for i in range(len(released)):
            blob = released.to_bytes(i)
            self.db.execute(
                "INSERT OR IGNORE INTO populations (requester, dataset, slots, digest, "
                "records, sketch, job, unit, space) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (requester, dataset, released.slots, hashlib.sha256(blob).hexdigest(),
                 int(released.n[i]), blob, job, unit, space))

    def hold(self, requester: str, dataset: str, permit: str, job: str,
             outputs: list[tuple[str, Sketches, int]], unit: str = RECORDS,
             holdings: list[Sketches] | None = None, space: str = LEGACY,
             labels: Sequence[Sequence[LabelEntry]] | None = None) -> None:
        """Record a job's outputs held for review: per output (name as the controller
        knows it), the populations of its rows (of ``unit``; empty when they could not
        be re-derived) and its cell values; with persons, per output its ``holdings``.
        Replaces what an earlier attempt of the job held (a run repeated after an agent
        restart)."""
        assert unit in _UNITS
        self.db.execute("DELETE FROM held_populations WHERE job = ?", (job,))
        self.db.execute("DELETE FROM held_cells WHERE job = ?", (job,))
        self.db.execute("DELETE FROM labels WHERE job = ? AND held = 1", (job,))
        for at, (name, pops, cells) in enumerate(outputs):
            if labels is not None:
                self._labels(requester, dataset, job, name, labels[at], True)
            kinds = [(pops, unit)]
            if holdings is not None:
                kinds.append((holdings[at], HOLDINGS))
            for sketches, kind in kinds:
                for i in range(len(sketches)):
                    blob = sketches.to_bytes(i)
                    self.db.execute(
                        "INSERT OR IGNORE INTO held_populations (requester, dataset, "
                        "slots, digest, records, sketch, job, output, unit, space) VALUES "
                        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (requester, dataset, sketches.slots,
                         hashlib.sha256(blob).hexdigest(), int(sketches.n[i]), blob, job,
                         name, kind, space))
            self.db.execute("INSERT OR REPLACE INTO held_cells VALUES (?, ?, ?, ?)",
                            (permit, job, name, cells))

    def held_jobs(self) -> list[str]:
        """Jobs with outputs still held for review."""
        rows = self.db.execute("SELECT DISTINCT job FROM held_cells ORDER BY job")
        return [str(j) for (j,) in rows.fetchall()]

    def settle(self, job: str, released: Collection[str]) -> None:
        """The review of ``job`` is over: the outputs named in ``released`` become
        released populations and cells; every other held output of the job is dropped."""
        for name in sorted(set(released)):
            self.db.execute(
                "INSERT OR IGNORE INTO populations (requester, dataset, slots, digest, "
                "records, sketch, job, unit, space) SELECT requester, dataset, slots, "
                "digest, records, sketch, job, unit, space FROM held_populations WHERE "
                "job = ? AND output = ?", (job, name))
            self.db.execute("UPDATE labels SET held = 0 WHERE job = ? AND output = ?",
                            (job, name))
            row = self.db.execute("SELECT permit, cells FROM held_cells WHERE job = ? AND "
                                  "output = ?", (job, name)).fetchone()
            if row is None:
                continue
            before = self.db.execute("SELECT COALESCE(SUM(cells), 0) FROM released WHERE "
                                     "permit = ? AND job = ?", (row[0], job)).fetchone()
            self.db.execute("INSERT OR REPLACE INTO released VALUES (?, ?, ?)",
                            (row[0], job, int(before[0]) + int(row[1])))
        self.db.execute("DELETE FROM held_populations WHERE job = ?", (job,))
        self.db.execute("DELETE FROM held_cells WHERE job = ?", (job,))
        self.db.execute("DELETE FROM labels WHERE job = ? AND held = 1", (job,))
