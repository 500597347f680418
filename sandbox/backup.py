"""Backup and restore of the controller's database, and the check that a restore holds
the same ledger.

``python -m sandbox.backup backup DEST``   the database into DEST (PostgreSQL: ``pg_dump``
                                            custom format; SQLite: the online backup API,
                                            safe while the controller runs), with
                                            ``manifest.json``: the dump's sha256 and the
                                            latest signed checkpoint at that moment.
``python -m sandbox.backup restore SRC``    into the empty database of
                                            ``SANDBOX_DATABASE_URL`` (refused if it has
                                            tables), after checking the dump's sha256.
``python -m sandbox.backup verify SRC``     the database's ledger against the backup's
                                            checkpoint: every entry checked, the Merkle tree
                                            rebuilt from the entries alone, its root matched
                                            to the latest signed checkpoint, which must
                                            extend the backup's (no rollback, no fork).

The log key is never in a backup: copy it once, apart (docs/operations.md). ``verify``
needs only its public half (``--log-key``, or the key file of the settings).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, inspect, make_url, select
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from ledger.checkpoint import CheckpointSigner, load_vkey, verify_checkpoint
from ledger.merkle import consistency_proof
from ledger.store import checkpoints_t, entries_t
from ledger.verify_cli import check_new_checkpoint, run_audit

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
MANIFEST = "manifest.json"


class BackupError(RuntimeError):
    pass


@dataclass(frozen=True)
class Manifest:
    backend: str
    file: str
    sha256: str
    ledger_size: int
    checkpoint_note: str | None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """A libpq URI without the password (it would show in ``ps``), and the environment
    that carries it."""
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _pg(tool: str) -> str:
    path = PG_BIN / tool
    found = str(path) if path.exists() else shutil.which(tool)
    if found is None:
        raise BackupError(f"{tool} not found (PostgreSQL client tools; set PG_BIN)")
    return found


def _run(cmd: list[str], env: dict[str, str] | None, what: str) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BackupError(f"{what} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")


def latest_checkpoint(database_url: str) -> tuple[int, str | None]:
    """(ledger size covered, note) of the newest signed checkpoint, or (0, None)."""
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            row = conn.execute(select(checkpoints_t.c.size, checkpoints_t.c.note)
                               .order_by(checkpoints_t.c.size.desc()).limit(1)).first()
    finally:
        engine.dispose()
    return (0, None) if row is None else (int(row.size), str(row.note))


def backup(database_url: str, dest: Path) -> Manifest:
    url = make_url(database_url)
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Read before the dump: the dump's snapshot is later, so it holds this checkpoint.
    size, note = latest_checkpoint(database_url)
    if url.get_backend_name() == "sqlite":
        out = dest / "database.sqlite"
        src = sqlite3.connect(f"file:{url.database}?mode=ro", uri=True)
        dst = sqlite3.connect(out)
        try:
            src.backup(dst)  # a consistent copy while writers go on
        finally:
            dst.close()
            src.close()
        backend = "sqlite"
    else:
        out = dest / "database.dump"
        uri, env = _libpq(url)
        _run([_pg("pg_dump"), "--format=custom", "--no-owner", "--no-privileges",
              "--file", str(out), uri], env, "pg_dump")
        backend = "postgresql"
    manifest = Manifest(backend, out.name, _sha256(out), size, note)
    (dest / MANIFEST).write_text(json.dumps(asdict(manifest), indent=1))
    return manifest


def read_manifest(src: Path) -> Manifest:
    data: dict[str, Any] = json.loads((src / MANIFEST).read_text())
    return Manifest(**data)


def restore(src: Path, database_url: str) -> Manifest:
    """Into an empty database (PostgreSQL) or a new file (SQLite); never over data."""
    manifest = read_manifest(src)
    dump = src / manifest.file
    if _sha256(dump) != manifest.sha256:
        raise BackupError(f"{dump}: sha256 differs from the manifest (damaged backup)")
    url = make_url(database_url)
    if (url.get_backend_name() == "sqlite") != (manifest.backend == "sqlite"):
        raise BackupError(f"a {manifest.backend} backup restores into {manifest.backend} only")
    if manifest.backend == "sqlite":
        target = Path(str(url.database))
        if target.exists():
            raise BackupError(f"{target} exists: restore into a new file")
        shutil.copyfile(dump, target)
        return manifest
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            if inspect(conn).get_table_names():
                raise BackupError("the target database has tables: restore into an empty one")
    finally:
        engine.dispose()
    uri, env = _libpq(url)
    _run([_pg("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
          "--single-transaction", "--dbname", uri, str(dump)], env, "pg_restore")
    return manifest


class DatabaseSource:
    """The verifier's view of a log read straight from a database (ledger.source)."""

    def __init__(self, database_url: str) -> None:
        self.engine = create_engine(database_url, poolclass=NullPool)

    def checkpoint(self) -> str:
        with self.engine.connect() as conn:
            note = conn.execute(select(checkpoints_t.c.note)
                                .order_by(checkpoints_t.c.size.desc()).limit(1)).scalar()
        if note is None:
            raise BackupError("the database holds no signed checkpoint")
        return str(note)

    def entries(self, start: int, end: int) -> list[bytes]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(entries_t.c.data)
                                .where(entries_t.c.idx >= start, entries_t.c.idx < end)
                                .order_by(entries_t.c.idx)).scalars()
            return [bytes(r) for r in rows]

    def consistency(self, old: int, new: int) -> list[bytes]:
        # Rebuilt from the entries, never from the stored tree nodes being checked.
        return consistency_proof(old, self.entries(0, new))


def verify(database_url: str, manifest: Manifest, vkey: str) -> int:
    """The restored ledger's size; raises (ledger errors) when it is not the backup's log
    or has been altered."""
    key = load_vkey(vkey)
    source = DatabaseSource(database_url)
    try:
        if manifest.checkpoint_note is not None:
            verify_checkpoint(manifest.checkpoint_note, key)
        cp, note = check_new_checkpoint(source, key, manifest.checkpoint_note)
        cp, _ = run_audit(source, key, checkpoint_note=note)
    finally:
        source.engine.dispose()
    return cp.size


def _file_vkey(s: Any) -> str:
    """The verifier key of the log key file, which is sealed with the keyring."""
    # Imported here: only `verify` without --log-key needs the controller's keyring.
    from sandbox.sealing_keys import load_keyring, load_signer
    from sandbox.settings import flask_config

    if not s.effective_log_key_file.exists():
        raise BackupError(f"no log key file at {s.effective_log_key_file}: give --log-key")
    keys = load_keyring(flask_config(s), s.instance)
    return load_signer(s.effective_log_key_file, s.log_origin, keys).vkey()


def main(argv: list[str] | None = None) -> int:
    # imported here: the settings only for the commands' defaults
    from sandbox.settings import SettingsError, load_settings

    p = argparse.ArgumentParser(prog="python -m sandbox.backup")
    p.add_argument("command", choices=["backup", "restore", "verify"])
    p.add_argument("path", type=Path, help="the backup's directory")
    p.add_argument("--log-key", help="the log's public key (verify; default: from the "
                                     "signing key of the settings)")
    args = p.parse_args(argv)
    try:
        s = load_settings()
    except SettingsError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    url = s.effective_database_url
    try:
        if args.command == "backup":
            m = backup(url, args.path)
            print(f"backed up {m.backend} database: ledger checkpoint size {m.ledger_size}")
        elif args.command == "restore":
            m = restore(args.path, url)
            print(f"restored {m.backend} backup (ledger checkpoint size {m.ledger_size})")
        else:
            vkey = args.log_key or (
                CheckpointSigner.from_skey(s.log_key.get_secret_value()).vkey() if s.log_key
                else _file_vkey(s))
            size = verify(url, read_manifest(args.path), vkey)
            print(f"ledger verified: {size} entries under a signed checkpoint that extends "
                  f"the backup's")
    except BackupError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
