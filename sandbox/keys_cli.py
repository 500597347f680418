"""``sandbox keys``: the key-encryption keys of what the controller seals at rest.

Rotation adds a key and rewraps every data key under it; the sealed data itself is not
re-encrypted (compute/sealing.py). Old keys stay in the keyring, so every value opens
at every moment of a rotation, and running controllers pick the new key up from the
file on their next write. ``retire`` then drops keys no value uses any more.
"""

from __future__ import annotations

import base64
import os
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy import Engine

    # imported here: CLI start-up time (see sandbox.cli)
    from compute.sealing import Keyring

BATCH = 500


def _app() -> Flask:
    # imported here: CLI start-up time (see sandbox.cli)
    from sandbox import create_app
    from sandbox.settings import SettingsError

    try:
        return create_app({"START_CHECKPOINTER": False})
    except SettingsError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(2)


def _sealed_columns() -> list[tuple[Any, str]]:
    # imported here: CLI start-up time (see sandbox.cli)
    from authz.models import AuthzBase
    from authz.sealed import sealed_columns

    return [(t, c) for t in AuthzBase.metadata.sorted_tables for c in sealed_columns(t)]


def _scan(engine: Engine, table: Any, column: str) -> Any:
    """(primary key values..., raw envelope) of every non-null value, in batches."""
    from sqlalchemy import LargeBinary, select, type_coerce

    pk = list(table.primary_key.columns)
    raw = type_coerce(table.c[column], LargeBinary).label("raw")
    last: tuple[Any, ...] | None = None
    while True:
        q = select(*pk, raw).where(table.c[column].is_not(None)).order_by(*pk).limit(BATCH)
        if last is not None:
            from sqlalchemy import tuple_

            q = q.where(tuple_(*pk) > tuple_(*last))
        with engine.connect() as conn:
            rows = conn.execute(q).all()
        if not rows:
            return
        yield from rows
        last = tuple(rows[-1][:-1])


def usage(engine: Engine) -> dict[str, Counter[str]]:
    """Sealed values per column, by the id of the key wrapping their data key."""
    # imported here: CLI start-up time (see sandbox.cli)
    from compute.sealing import kek_id_of

    out: dict[str, Counter[str]] = {}
    for table, column in _sealed_columns():
        where = f"{table.name}.{column}"
        out[where] = Counter(kek_id_of(bytes(r[-1]), where) for r in _scan(engine, table,
                                                                           column))
    return out


def rewrap_all(engine: Engine, keys: Keyring) -> int:
    """Rewrap every sealed value's data key under the current key; the count rewrapped.

    Each row is updated only if it still holds the envelope read (compare and set): a
    value a controller rewrote meanwhile is already under a key it chose, and is left.
    """
    from sqlalchemy import LargeBinary, and_, type_coerce, update

    # imported here: CLI start-up time (see sandbox.cli)
    from compute.sealing import rewrap

    done = 0
    for table, column in _sealed_columns():
        where = f"{table.name}.{column}"
        pk = list(table.primary_key.columns)
        col = type_coerce(table.c[column], LargeBinary)
        for row in _scan(engine, table, column):
            old = bytes(row[-1])
            new = rewrap(keys, old, where)
            if new is None:
                continue
            cond = and_(*(c == v for c, v in zip(pk, row[:-1], strict=True)), col == old)
            with engine.begin() as conn:
                # Written raw: the envelope is already sealed for this row.
                conn.execute(update(table).where(cond).values(
                    {column: type_coerce(new, LargeBinary)}))
            done += 1
    return done


def rewrap_log_key(path: Path, keys: Keyring) -> bool:
    """Rewrap the sealed log key file's data key; False if the file is not sealed."""
    # imported here: CLI start-up time (see sandbox.cli)
    from compute.sealing import FILE_HEADER, is_sealed_text_file, rewrap

    if not path.exists():
        return False
    text = path.read_text(encoding="ascii")
    if not is_sealed_text_file(text):
        return False
    blob = base64.b64decode(text[len(FILE_HEADER):].strip())
    new = rewrap(keys, blob, f"log key file {path}")
    if new is not None:
        tmp = path.with_name(f".{path.name}.new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(FILE_HEADER + base64.b64encode(new).decode() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    return True


def _engine(app: Flask) -> Engine:
    # imported here: CLI start-up time (see sandbox.cli)
    from sandbox import db

    return db.services(app).engine


def _keys(app: Flask) -> Keyring:
    keys: Keyring = app.extensions["sandbox_sealing"]
    return keys


@click.group("keys")
def keys() -> None:
    """Key-encryption keys for scripts, logs, outputs and the log key, sealed at rest."""


@keys.command("init")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def init(path: Path) -> None:
    """Create a keyring file (mode 0600) for SANDBOX_SEALING_KEY_FILE."""
    # imported here: CLI start-up time (see sandbox.cli)
    from compute.sealing import create_key_file

    if not create_key_file(path):
        raise click.ClickException(f"{path} exists; refusing to overwrite a keyring")
    click.echo(f"created {path}; keep it apart from the database and its backups")


@keys.command("status")
def status() -> None:
    """The keyring's key ids, the current one, and how many values each key wraps."""
    import json

    # imported here: CLI start-up time (see sandbox.cli)
    from compute.sealing import is_sealed_text_file

    app = _app()
    ring = _keys(app)
    log_key = Path(app.config["LOG_KEY_FILE"])
    click.echo(json.dumps({
        "keyring": ring.source, "key_ids": list(ring.ids), "current": ring.current_id,
        "sealed_values": {k: dict(v) for k, v in usage(_engine(app)).items()},
        "log_key_file": str(log_key),
        "log_key_file_sealed": log_key.exists() and is_sealed_text_file(
            log_key.read_text(encoding="ascii")),
    }, indent=2))


@keys.command("rewrap")
def rewrap_cmd() -> None:
    """Rewrap every data key (and the sealed log key file) under the current key."""
    app = _app()
    n = rewrap_all(_engine(app), _keys(app))
    log_key = rewrap_log_key(Path(app.config["LOG_KEY_FILE"]), _keys(app))
    click.echo(f"rewrapped {n} values{' and the log key file' if log_key else ''} under "
               f"key {_keys(app).current_id}")


@keys.command("rotate")
def rotate() -> None:
    """Add a new key to the keyring file, make it current, and rewrap under it."""
    # imported here: CLI start-up time (see sandbox.cli)
    from compute.sealing import FileKeyring, append_key

    app = _app()
    ring = _keys(app)
    if not isinstance(ring, FileKeyring):
        raise click.ClickException(
            "the keyring is SANDBOX_SEALING_KEY: append a new <id>:<key> entry to it "
            "(`python -c 'from compute.sealing import new_entry; print(new_entry())'`), "
            "restart the controllers, then run `sandbox keys rewrap`")
    kid = append_key(ring.path)
    ring.refresh(force=True)
    n = rewrap_all(_engine(app), ring)
    log_key = rewrap_log_key(Path(app.config["LOG_KEY_FILE"]), ring)
    click.echo(f"new key {kid} is current; rewrapped {n} values"
               f"{' and the log key file' if log_key else ''}. Older keys stay until "
               "`sandbox keys retire`.")


@keys.command("retire")
def retire() -> None:
    """Remove from the keyring file the keys that no sealed value uses any more."""
    # imported here: CLI start-up time (see sandbox.cli)
    from compute.sealing import FileKeyring, kek_id_of, remove_keys

    app = _app()
    ring = _keys(app)
    if not isinstance(ring, FileKeyring):
        raise click.ClickException("the keyring is SANDBOX_SEALING_KEY: remove the entries "
                                   "yourself once `sandbox keys status` shows them unused")
    used: set[str] = set()
    for counts in usage(_engine(app)).values():
        used |= set(counts)
    log_key = Path(app.config["LOG_KEY_FILE"])
    if rewrap_log_key(log_key, ring):  # brings it to the current key first
        # imported here: CLI start-up time (see sandbox.cli)
        from compute.sealing import FILE_HEADER

        text = log_key.read_text(encoding="ascii")
        used.add(kek_id_of(base64.b64decode(text[len(FILE_HEADER):].strip())))
    unused = set(ring.ids) - used - {ring.current_id}
    if not unused:
        click.echo("no key to retire")
        return
    remove_keys(ring.path, unused)
    click.echo(f"retired {', '.join(sorted(unused))}")


@keys.command("seal-log-key")
def seal_log_key() -> None:
    """Seal a log key file that holds its key in the clear, in place."""
    # imported here: CLI start-up time (see sandbox.cli)
    from sandbox.sealing_keys import read_log_key_file, write_sealed_log_key

    app = _app()
    path = Path(app.config["LOG_KEY_FILE"])
    skey, was_sealed = read_log_key_file(path, _keys(app))
    if was_sealed:
        click.echo(f"{path} is already sealed")
        return
    write_sealed_log_key(path, _keys(app), skey, replace=True)
    click.echo(f"sealed {path}; its verifier key is unchanged")
