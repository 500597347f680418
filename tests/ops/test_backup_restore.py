"""Backup, restore into a fresh database, and the ledger verified against the backup.

On SQLite and PostgreSQL (the real ``pg_dump``/``pg_restore``): the restored database
holds the same log (every entry checked, the tree rebuilt from the entries, the root
matched to a checkpoint signed with the log key that was backed up apart), the controller
goes on appending to it under the same key, and an altered entry is caught.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import make_url, text, update

from ledger.db import make_engine
from ledger.errors import LedgerError
from ledger.store import entries_t
from sandbox import backup, create_app, db
from sandbox.bootstrap import create_first_admin


def controller(database_url: str, key_file: Path) -> Flask:
    return create_app({"TESTING": True, "DATABASE_URL": database_url,
                       "LOG_KEY_FILE": str(key_file), "START_CHECKPOINTER": False})


def activity(app: Flask, n: int) -> None:
    """Ledger entries through the API, then a signed checkpoint over them."""
    admin = create_first_admin(app, f"operator-{uuid.uuid4().hex[:6]}")
    client = app.test_client()
    for i in range(n):
        name = f"Insurer {i} {uuid.uuid4().hex[:6]}"
        r = client.post("/api/v1/parties", json={"name": name, "role": "requester"},
                        headers={"Authorization": f"Bearer {admin.token}"})
        assert r.status_code == 201, r.get_json()
    app.extensions["sandbox"].checkpointer.sign_now()


def fresh_database(database_url: str, tmp_path: Path) -> str:
    if database_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'restored.db'}"
    name = f"r_{uuid.uuid4().hex[:12]}"
    engine = make_engine(database_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:  # empty: no template, no schema
        c.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(database_url).set(database=name).render_as_string(hide_password=False)


@pytest.mark.slow
def test_backup_restores_into_a_fresh_database_with_the_same_verified_ledger(
        database_url: str, tmp_path: Path) -> None:
    key_file = tmp_path / "log.key"
    app = controller(database_url, key_file)
    activity(app, 5)
    vkey = db.services(app).signer.vkey()  # the key file is sealed with the keyring
    db.dispose(app)

    manifest = backup.backup(database_url, tmp_path / "backup")
    assert manifest.ledger_size >= 6 and manifest.checkpoint_note is not None
    # The key is kept apart from the database's backup, and never inside it.
    shutil.copy2(key_file, tmp_path / "key-copy")
    assert b"PRIVATE" not in (tmp_path / "backup" / manifest.file).read_bytes()
    key_file.unlink()  # the old host is gone

    restored = fresh_database(database_url, tmp_path)
    backup.restore(tmp_path / "backup", restored)
    assert backup.verify(restored, manifest, vkey) == manifest.ledger_size

    # The restored controller, under the restored key, extends the same log.
    again = controller(restored, tmp_path / "key-copy")
    activity(again, 2)
    db.dispose(again)
    grown = backup.verify(restored, manifest, vkey)
    assert grown > manifest.ledger_size


@pytest.mark.slow
def test_an_altered_entry_in_the_restored_database_fails_the_check(
        database_url: str, tmp_path: Path) -> None:
    app = controller(database_url, tmp_path / "log.key")
    activity(app, 3)
    vkey = db.services(app).signer.vkey()
    db.dispose(app)
    manifest = backup.backup(database_url, tmp_path / "backup")
    restored = fresh_database(database_url, tmp_path)
    backup.restore(tmp_path / "backup", restored)
    engine = make_engine(restored)
    with engine.begin() as conn:
        data = bytes(conn.execute(entries_t.select().where(entries_t.c.idx == 2)).one().data)
        conn.execute(update(entries_t).where(entries_t.c.idx == 2)
                     .values(data=data.replace(b"Insurer", b"Insurex")))
    engine.dispose()
    with pytest.raises(LedgerError):
        backup.verify(restored, manifest, vkey)


def test_a_damaged_dump_or_a_full_target_is_refused(database_url: str, tmp_path: Path) -> None:
    app = controller(database_url, tmp_path / "log.key")
    activity(app, 1)
    db.dispose(app)
    manifest = backup.backup(database_url, tmp_path / "backup")
    with pytest.raises(backup.BackupError, match=r"has tables|exists"):
        backup.restore(tmp_path / "backup", database_url)  # over live data: never
    dump = tmp_path / "backup" / manifest.file
    dump.write_bytes(dump.read_bytes() + b"\0")
    with pytest.raises(backup.BackupError, match="sha256"):
        backup.restore(tmp_path / "backup", fresh_database(database_url, tmp_path))


